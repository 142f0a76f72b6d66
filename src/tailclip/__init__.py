"""tailclip: training under heavy-tailed gradient noise.

Diagnostics (``tailclip.noise``), clipped optimizers (``tailclip.optim``, ``tailclip.clip``)
and an experiment engine (``tailclip.engine``). Importing this package loads only torch.
"""

__version__ = "0.1.0"
