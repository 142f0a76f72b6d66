"""R independent runs of a ``tailclip.optim`` rule in one tensor, through the rule's functional core.

The synthetic suite needs thousands of independent runs of one optimizer (a high-probability
statement is a statement about quantiles over runs). Each run ``r`` holds its iterate
``x[r]`` and optimizer state; one step applies the rule to every run with *its own* norms,
clipping factors and adaptive step sizes. The rule is not written again here, nor adapted: each
rule module registers a :class:`~tailclip.optim.VectorizedRule` (its per-run state initialiser
and its functional core on the per-tensor path, ``foreach=False``: no host synchronisation, no
data-dependent branching), and this module only maps that core over the leading run dimension
with ``torch.func.vmap``. Because the cores update their arguments in place and several in-place
ops have no batching rule (vmap would then loop over the runs one by one), the core is
wrapped in ``torch.func.functionalize`` first: it runs on out-of-place copies and writes the
results back, in the same arithmetic, so run ``r`` equals a single run of the optimizer class
fed the same gradients.

Per-run state (momentum, moments, accumulators) lives in tensors with a leading dimension
``R``, initialised by the rule as its class initialises its state. Step counters that drive
bias corrections are equal for all runs and are kept once, unbatched, on the CPU as in
``torch.optim``.

Vectorized forms are found by the name of the optimizer in
:data:`tailclip.optim.VECTORIZED_RULES`; :func:`make_vectorized_optimizer` builds one from the
resolved hyperparameters of a config's ``optimizer`` section. Hyperparameters are validated by
constructing the optimizer class on a dummy parameter (one source of truth for the allowed
values). ``foreach``, ``fused`` and ``nonfinite`` select kernels or host-side checks of the
classes and do not change the rule: they are accepted and ignored (a diverged run is a result
here, seen as a non-finite metric).
Adaptive threshold policies (AutoClip, ZClip) keep one history for all parameters and are
rejected: with R runs they would need R histories.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functionalize, vmap

from tailclip.clip import ClipStats, ThresholdPolicy
from tailclip.optim import OPTIMIZERS, VECTORIZED_RULES, VectorizedRule

__all__ = ["VECTORIZED_OPTIMIZERS", "VectorizedOptimizer", "make_vectorized_optimizer"]

# The registry of vectorized forms, by optimizer name (filled by the rule modules).
VECTORIZED_OPTIMIZERS: Mapping[str, VectorizedRule] = VECTORIZED_RULES

# Constructor arguments that choose kernels or host-side checks, not the update rule.
_IGNORED = frozenset({"foreach", "fused", "nonfinite"})


def _fields(stats: ClipStats) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return stats.grad_norm, stats.clipped_norm, stats.clip_factor, stats.clipped


class VectorizedOptimizer:
    """``R`` runs of the optimizer ``name`` over iterates ``x`` of shape ``(R, *shape)``.

    The per-run state comes from the rule's ``init_state`` and the per-run update from its
    ``core`` (:class:`~tailclip.optim.VectorizedRule`); this class holds them and maps the core
    over the runs.
    """

    def __init__(self, name: str, x: Tensor, hyperparameters: Mapping[str, Any]) -> None:
        if x.dim() < 2:
            raise ValueError(
                f"Invalid x: shape {tuple(x.shape)}; allowed: (R, *shape) with a leading run dimension"
            )
        self.name = name
        self.rule = VECTORIZED_RULES[name]
        self.threshold_key = self.rule.threshold_key
        self.hyperparameters = _validated(name, hyperparameters)
        self.runs = x.shape[0]
        self.state, self.shared = self.rule.init_state(x, self.hyperparameters)

    @property
    def lr(self) -> float:
        """The configured base step size."""
        return float(self.hyperparameters["lr"])

    @property
    def clip_mode(self) -> str | None:
        """The clipping mode of the rule (``"global"`` for delta-GClip's norm, ``None`` if none)."""
        if self.threshold_key is None:
            return None
        return self.hyperparameters.get("clip", self.rule.clip_mode)

    @property
    def threshold(self) -> float | None:
        """The configured clipping threshold (``max_norm``, or ``gamma`` of delta-GClip)."""
        return None if self.threshold_key is None else float(self.hyperparameters[self.threshold_key])

    def step(
        self, x: Tensor, g: Tensor, lr: float | None = None, threshold: float | None = None
    ) -> ClipStats:
        """Update every run of ``x`` in place with its gradient ``g[r]``; per-run statistics ``(R,)``.

        ``lr`` and ``threshold`` override the configured step size and clipping threshold for
        this step (schedules); ``threshold`` is an error for a rule without one.
        """
        if x.shape != g.shape or x.shape[0] != self.runs:
            raise ValueError(f"Invalid g: shape {tuple(g.shape)}; allowed: the shape of x, {tuple(x.shape)}")
        if threshold is not None and self.threshold_key is None:
            raise ValueError(
                f"Invalid threshold: {threshold}; allowed: None ({self.name} has no clipping threshold)"
            )
        if threshold is not None and not threshold > 0:
            raise ValueError(f"Invalid threshold: {threshold}; allowed: threshold > 0")
        lr = self.lr if lr is None else lr
        threshold = self.threshold if threshold is None else threshold
        run_core = self.rule.core(self.hyperparameters, self.shared, lr, threshold)
        core = vmap(functionalize(lambda *args: _fields(run_core(*args))))
        return ClipStats(*core(x, g, *self.state.values()))

    def state_dict(self) -> dict[str, Tensor]:
        """Per-run and shared state, cloned."""
        return {
            **{k: v.clone() for k, v in self.state.items()},
            **{k: v.clone() for k, v in self.shared.items()},
        }

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (same keys, same shapes)."""
        for store in (self.state, self.shared):
            for key, value in store.items():
                if key not in state or state[key].shape != value.shape:
                    raise ValueError(
                        f"Invalid state: {key!r} missing or of another shape; allowed: a state_dict of "
                        f"{self.name} over {self.runs} runs"
                    )
                value.copy_(state[key])


def _validated(name: str, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters checked by the optimizer class itself, its defaults filled; lists become tuples."""
    hp = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items() if k != "name"}
    policy = hp.get("max_norm")
    if isinstance(policy, (ThresholdPolicy, dict)):
        raise ValueError(
            "Invalid max_norm: an adaptive threshold policy; allowed: a number > 0 "
            "(vectorized runs keep no per-run policy history)"
        )
    cls = OPTIMIZERS[name]
    cls([torch.zeros(1, requires_grad=True)], **hp)
    for key, parameter in inspect.signature(cls.__init__).parameters.items():
        if (
            key not in hp
            and key not in ("self", "params")
            and parameter.default is not inspect.Parameter.empty
        ):
            hp[key] = parameter.default
    return {k: v for k, v in hp.items() if k not in _IGNORED}


def make_vectorized_optimizer(
    name: str, x: Tensor, hyperparameters: Mapping[str, Any]
) -> VectorizedOptimizer:
    """The vectorized form of optimizer ``name`` over iterates ``x`` (R, *shape) with ``hyperparameters``."""
    if name not in VECTORIZED_RULES:
        raise ValueError(
            f"Invalid optimizer: {name!r} has no vectorized form; allowed: {', '.join(VECTORIZED_RULES)}"
        )
    return VectorizedOptimizer(name, x, hyperparameters)
