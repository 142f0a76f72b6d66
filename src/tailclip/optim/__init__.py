"""Clipped optimizers for heavy-tailed gradient noise, drop-in for ``torch.optim``.

Every rule is defined in ``../shared/papers.md``; each lives in one module with a functional
core, a thin class and one :func:`register_optimizer` call (its vectorized form included).
Every public module of this package is imported here, so a new rule module registers itself
without being listed anywhere; ``OPTIMIZERS`` maps the registry name to the class.
"""

import importlib
import pkgutil

from tailclip.optim._base import ClipOptimizer
from tailclip.optim._registry import OPTIMIZERS, VECTORIZED_RULES, VectorizedRule, register_optimizer

# The order users see the optimizers in (CLI listing, "allowed: ..." messages): these modules
# first, then any other public module by name. A new rule needs no entry here.
_LISTING_ORDER = ("sgd", "adagrad", "adam", "nsgd", "delta_gclip", "acclip")
_modules = sorted(
    (m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")),
    key=lambda name: (_LISTING_ORDER.index(name) if name in _LISTING_ORDER else len(_LISTING_ORDER), name),
)
for _module in _modules:
    importlib.import_module(f"{__name__}.{_module}")

from tailclip.optim.acclip import ACClip  # noqa: E402
from tailclip.optim.adagrad import ClipAdaGrad  # noqa: E402
from tailclip.optim.adam import ClipAdam  # noqa: E402
from tailclip.optim.delta_gclip import DeltaGClip  # noqa: E402
from tailclip.optim.noise_injection import NoiseInjection  # noqa: E402
from tailclip.optim.nsgd import NSGD  # noqa: E402
from tailclip.optim.sgd import ClipSGD  # noqa: E402

# A wrapper of any torch optimizer, not a ClipOptimizer rule (no vectorized form); registered
# here, which keeps noise_injection.py free of the registry.
register_optimizer("noise_injection", NoiseInjection)

__all__ = [
    "NSGD",
    "OPTIMIZERS",
    "VECTORIZED_RULES",
    "ACClip",
    "ClipAdaGrad",
    "ClipAdam",
    "ClipOptimizer",
    "ClipSGD",
    "DeltaGClip",
    "NoiseInjection",
    "VectorizedRule",
    "register_optimizer",
]
