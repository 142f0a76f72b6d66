"""Clipped optimizers for heavy-tailed gradient noise, drop-in for ``torch.optim``.

Every rule is defined in ``../shared/papers.md``; each lives in one module with a functional
core and a thin class. ``OPTIMIZERS`` maps the registry name to the class.
"""

from tailclip.optim._base import ClipOptimizer
from tailclip.optim.acclip import ACClip
from tailclip.optim.adagrad import ClipAdaGrad
from tailclip.optim.adam import ClipAdam
from tailclip.optim.delta_gclip import DeltaGClip
from tailclip.optim.noise_injection import NoiseInjection
from tailclip.optim.nsgd import NSGD
from tailclip.optim.sgd import ClipSGD

OPTIMIZERS: dict[str, type] = {
    "clip_sgd": ClipSGD,
    "clip_adagrad": ClipAdaGrad,
    "clip_adam": ClipAdam,
    "nsgd": NSGD,
    "delta_gclip": DeltaGClip,
    "acclip": ACClip,
    "noise_injection": NoiseInjection,
}

__all__ = [
    "NSGD",
    "OPTIMIZERS",
    "ACClip",
    "ClipAdaGrad",
    "ClipAdam",
    "ClipOptimizer",
    "ClipSGD",
    "DeltaGClip",
    "NoiseInjection",
]
