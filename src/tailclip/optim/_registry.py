"""The optimizer registry: each rule module registers its class, and its vectorized form.

A rule module ends with one call::

    register_optimizer("clip_sgd", ClipSGD, VectorizedRule(_init_runs, _run_core, threshold_key="max_norm"))

:data:`OPTIMIZERS` (name -> class) is what the engine and the tests read;
:data:`VECTORIZED_RULES` (name -> :class:`VectorizedRule`) is what
:mod:`tailclip.problems.vectorized` maps over R runs with ``torch.func.vmap``.
``tailclip/optim/__init__.py`` imports every public module of the package, so adding an
optimizer is adding its module plus its test file; nothing lists the rules by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tailclip.clip import ClipStats

__all__ = ["OPTIMIZERS", "VECTORIZED_RULES", "RunCore", "VectorizedRule", "register_optimizer"]

RunCore = Callable[..., ClipStats]
"""The update of one run: ``core(x, g, *state.values()) -> ClipStats``, in place on its arguments."""


@dataclass(frozen=True)
class VectorizedRule:
    """What the vectorized runner needs of a rule: its per-run state and its per-run update.

    ``init_state(x, hyperparameters)`` returns ``(state, shared)`` for iterates ``x`` of shape
    ``(R, *shape)``: ``state`` holds tensors with the leading run dimension (passed to the core
    in its order), ``shared`` tensors equal for all runs (step counters behind bias
    corrections), both initialised as the class initialises its state.
    ``core(hyperparameters, shared, lr, threshold)`` returns the :data:`RunCore` of one run: the
    rule's functional core on its per-tensor path (``foreach=False``), which the runner wraps
    in ``torch.func.functionalize`` and ``vmap``. ``threshold_key`` names the hyperparameter
    that is the clipping threshold (``None``: the rule has none); ``clip_mode`` is the clipping
    mode of a rule that clips but has no ``clip`` hyperparameter (delta-GClip: ``"global"``).
    """

    init_state: Callable[[Tensor, Mapping[str, Any]], tuple[dict[str, Tensor], dict[str, Tensor]]]
    core: Callable[[Mapping[str, Any], Mapping[str, Tensor], float, float | None], RunCore]
    threshold_key: str | None = None
    clip_mode: str | None = None


OPTIMIZERS: dict[str, type] = {}
VECTORIZED_RULES: dict[str, VectorizedRule] = {}


def register_optimizer(name: str, cls: type, vectorized: VectorizedRule | None = None) -> type:
    """Register ``cls`` as ``name`` (and its vectorized form, if it has one); returns ``cls``."""
    if name in OPTIMIZERS:
        raise ValueError(f"Invalid name: {name!r} is already registered; allowed: a new name")
    OPTIMIZERS[name] = cls
    if vectorized is not None:
        VECTORIZED_RULES[name] = vectorized
    return cls
