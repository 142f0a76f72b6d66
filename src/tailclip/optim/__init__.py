"""Clipped optimizers for heavy-tailed gradient noise, drop-in for ``torch.optim``.

Every rule is defined in ``../shared/papers.md``; each lives in one module with a functional
core and a thin class. ``OPTIMIZERS`` maps the registry name to the class.
"""

from tailclip.optim._base import ClipOptimizer
from tailclip.optim.sgd import ClipSGD

OPTIMIZERS: dict[str, type] = {
    "clip_sgd": ClipSGD,
}

__all__ = ["OPTIMIZERS", "ClipOptimizer", "ClipSGD"]
