"""R independent runs of a ``tailclip.optim`` rule in one tensor, through the rule's functional core.

The synthetic suite needs thousands of independent runs of one optimizer (a high-probability
statement is a statement about quantiles over runs). Each run ``r`` holds its iterate
``x[r]`` and optimizer state; one step applies the rule to every run with *its own* norms,
clipping factors and adaptive step sizes. The rule is not written again here: every adapter
calls the optimizer module's functional core (``clip_sgd``, ``clip_adam``, ``clip_adagrad``,
``nsgd``, ``delta_gclip``, ``acclip``) on its per-tensor path (``foreach=False``: no host
synchronisation, no data-dependent branching), mapped over the leading run dimension with
``torch.func.vmap``. Because the cores update their arguments in place and several in-place
ops have no batching rule (vmap would then loop over the runs one by one), the core is
wrapped in ``torch.func.functionalize`` first: it runs on out-of-place copies and writes the
results back, in the same arithmetic, so run ``r`` equals a single run of the optimizer class
fed the same gradients.

Per-run state (momentum, moments, accumulators) lives in tensors with a leading dimension
``R``, initialised as the classes initialise theirs (a zero momentum buffer gives the same
numbers as ClipSGD's ``m_1 = u_1``). Step counters that drive bias corrections are equal for
all runs and are kept once, unbatched, on the CPU as in ``torch.optim``.

Adapters are registered by the name of the optimizer in :data:`tailclip.optim.OPTIMIZERS`;
:func:`make_vectorized_optimizer` builds one from the resolved hyperparameters of a config's
``optimizer`` section. Hyperparameters are validated by constructing the optimizer class on a
dummy parameter (one source of truth for the allowed values). ``foreach``, ``fused`` and
``nonfinite`` select kernels or host-side checks of the classes and do not change the rule: they
are accepted and ignored (a diverged run is a result here, seen as a non-finite metric).
Adaptive threshold policies (AutoClip, ZClip) keep one history for all parameters and are
rejected: with R runs they would need R histories.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functionalize, vmap

from tailclip.clip import ClipStats, ThresholdPolicy
from tailclip.optim import OPTIMIZERS
from tailclip.optim.acclip import acclip
from tailclip.optim.adagrad import clip_adagrad
from tailclip.optim.adam import _scalar_dtype, clip_adam
from tailclip.optim.delta_gclip import delta_gclip
from tailclip.optim.nsgd import nsgd
from tailclip.optim.sgd import clip_sgd

__all__ = [
    "VECTORIZED_OPTIMIZERS",
    "VectorizedACClip",
    "VectorizedClipAdaGrad",
    "VectorizedClipAdam",
    "VectorizedClipSGD",
    "VectorizedDeltaGClip",
    "VectorizedNSGD",
    "VectorizedOptimizer",
    "make_vectorized_optimizer",
]

# Constructor arguments that choose kernels or host-side checks, not the update rule.
_IGNORED = frozenset({"foreach", "fused", "nonfinite"})

CoreFn = Callable[..., tuple[Tensor, ...]]


def _fields(stats: ClipStats) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return stats.grad_norm, stats.clipped_norm, stats.clip_factor, stats.clipped


class VectorizedOptimizer(ABC):
    """``R`` runs of one optimizer over iterates ``x`` of shape ``(R, *shape)``.

    Subclasses name the optimizer (``name``), the hyperparameter that is the clipping threshold
    (``threshold_key``, ``None`` if the rule has none), create the per-run state in
    :meth:`_init_state` and give the per-run update in :meth:`_core`.
    """

    name: ClassVar[str]
    threshold_key: ClassVar[str | None] = None

    def __init__(self, x: Tensor, hyperparameters: Mapping[str, Any]) -> None:
        if x.dim() < 2:
            raise ValueError(
                f"Invalid x: shape {tuple(x.shape)}; allowed: (R, *shape) with a leading run dimension"
            )
        self.hyperparameters = _validated(self.name, hyperparameters)
        self.runs = x.shape[0]
        self.state: dict[str, Tensor] = {}
        self.shared: dict[str, Tensor] = {}
        self._init_state(x)

    @property
    def lr(self) -> float:
        """The configured base step size."""
        return float(self.hyperparameters["lr"])

    @property
    def clip_mode(self) -> str | None:
        """The clipping mode of the rule (``"global"`` for delta-GClip's norm, ``None`` if none)."""
        if self.threshold_key is None:
            return None
        return self.hyperparameters["clip"]

    @property
    def threshold(self) -> float | None:
        """The configured clipping threshold (``max_norm``, or ``gamma`` of delta-GClip)."""
        return None if self.threshold_key is None else float(self.hyperparameters[self.threshold_key])

    @abstractmethod
    def _init_state(self, x: Tensor) -> None:
        """Fill :attr:`state` (per run, leading dimension R) and :attr:`shared` (one for all runs)."""

    @abstractmethod
    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        """The update of one run: ``core(x, g, *state.values()) -> ClipStats fields``."""

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
        lr = self.lr if lr is None else lr
        threshold = self.threshold if threshold is None else threshold
        core = vmap(functionalize(self._core(lr, threshold)))
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
                        f"{type(self).__name__} over {self.runs} runs"
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


class VectorizedClipSGD(VectorizedOptimizer):
    """:func:`tailclip.optim.sgd.clip_sgd` per run; state: the momentum buffer (if ``momentum > 0``)."""

    name = "clip_sgd"
    threshold_key = "max_norm"

    def _init_state(self, x: Tensor) -> None:
        if self.hyperparameters["momentum"] != 0:
            self.state["momentum_buffer"] = torch.zeros_like(x)

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters

        def core(x: Tensor, g: Tensor, *buffers: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                clip_sgd(
                    [x],
                    [g],
                    [buffers[0] if buffers else None],
                    lr=lr,
                    momentum=hp["momentum"],
                    clip=hp["clip"],
                    max_norm=threshold,
                    clip_target=hp["clip_target"],
                    weight_decay=hp["weight_decay"],
                    foreach=False,
                )
            )

        return core


class VectorizedClipAdam(VectorizedOptimizer):
    """:func:`tailclip.optim.adam.clip_adam` per run (Adam, Adam-Norm, clipped, delayed).

    State per run: ``exp_avg`` (``m``) and ``exp_avg_sq`` (``v``, per coordinate) or, with
    ``norm=True``, ``group_exp_avg_sq`` (one scalar per run, float64 for float64 iterates,
    else float32, as ClipAdam); shared: the step counters behind the bias corrections.
    """

    name = "clip_adam"
    threshold_key = "max_norm"

    def _init_state(self, x: Tensor) -> None:
        hp = self.hyperparameters
        v0 = hp["v0"]
        self.state["exp_avg"] = torch.zeros_like(x)
        if hp["norm"]:
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            self.state["group_exp_avg_sq"] = torch.full((self.runs,), v0, dtype=dtype, device=x.device)
            self.shared["group_step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        else:
            self.state["exp_avg_sq"] = torch.full_like(x, v0)
        self.shared["step"] = torch.tensor(0.0, dtype=_scalar_dtype())

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters
        beta1, beta2 = hp["betas"]
        norm = hp["norm"]
        step, group_step = self.shared["step"], self.shared.get("group_step")

        def core(x: Tensor, g: Tensor, exp_avg: Tensor, second: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                clip_adam(
                    [x],
                    [g],
                    [exp_avg],
                    [] if norm else [second],
                    [step],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=hp["eps"],
                    weight_decay=hp["weight_decay"],
                    clip=hp["clip"],
                    max_norm=threshold,
                    norm=norm,
                    delay=hp["delay"],
                    foreach=False,
                    group_exp_avg_sq=second if norm else None,
                    group_step=group_step,
                )
            )

        return core


class VectorizedClipAdaGrad(VectorizedOptimizer):
    """:func:`tailclip.optim.adagrad.clip_adagrad` per run (AdaGrad, AdaGrad-Norm, clipped, delayed).

    State per run: the accumulator ``b^2`` (per coordinate, or one scalar per run with
    ``norm=True``: float64 for float64 iterates, else float32, as ClipAdaGrad), starting at
    ``b0^2``; shared: the step counter.
    """

    name = "clip_adagrad"
    threshold_key = "max_norm"

    def _init_state(self, x: Tensor) -> None:
        hp = self.hyperparameters
        b0_sq = hp["b0"] ** 2
        if hp["norm"]:
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            self.state["norm_sq_sum"] = torch.full((self.runs,), b0_sq, dtype=dtype, device=x.device)
        else:
            self.state["sum"] = torch.full_like(x, b0_sq)
        self.shared["step"] = torch.tensor(0.0, dtype=torch.float32)

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters
        step = self.shared["step"]

        def core(x: Tensor, g: Tensor, accumulator: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                clip_adagrad(
                    [x],
                    [g],
                    [accumulator],
                    [step],
                    lr=lr,
                    norm=hp["norm"],
                    delay=hp["delay"],
                    clip=hp["clip"],
                    max_norm=threshold,
                    eps=hp["eps"],
                    weight_decay=hp["weight_decay"],
                    foreach=False,
                )
            )

        return core


class VectorizedNSGD(VectorizedOptimizer):
    """:func:`tailclip.optim.nsgd.nsgd` per run; state: the momentum buffer (``m_0 = 0``)."""

    name = "nsgd"

    def _init_state(self, x: Tensor) -> None:
        self.state["momentum_buffer"] = torch.zeros_like(x)

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters

        def core(x: Tensor, g: Tensor, buffer: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                nsgd(
                    [x],
                    [g],
                    [buffer],
                    lr=lr,
                    momentum=hp["momentum"],
                    eps=hp["eps"],
                    weight_decay=hp["weight_decay"],
                    foreach=False,
                )
            )

        return core


class VectorizedDeltaGClip(VectorizedOptimizer):
    """:func:`tailclip.optim.delta_gclip.delta_gclip` per run; no state; the threshold is ``gamma``."""

    name = "delta_gclip"
    threshold_key = "gamma"

    def _init_state(self, x: Tensor) -> None:
        return None

    @property
    def clip_mode(self) -> str | None:
        return "global"

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters

        def core(x: Tensor, g: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                delta_gclip(
                    [x],
                    [g],
                    lr=lr,
                    gamma=threshold,
                    delta=hp["delta"],
                    weight_decay=hp["weight_decay"],
                    foreach=False,
                )
            )

        return core


class VectorizedACClip(VectorizedOptimizer):
    """:func:`tailclip.optim.acclip.acclip` per run; state: ``exp_avg`` and ``tau_alpha`` (zeros)."""

    name = "acclip"

    def _init_state(self, x: Tensor) -> None:
        self.state["exp_avg"] = torch.zeros_like(x)
        self.state["tau_alpha"] = torch.zeros_like(x)

    def _core(self, lr: float, threshold: float | None) -> CoreFn:
        hp = self.hyperparameters
        beta1, beta2 = hp["betas"]

        def core(x: Tensor, g: Tensor, exp_avg: Tensor, tau_alpha: Tensor) -> tuple[Tensor, ...]:
            return _fields(
                acclip(
                    [x],
                    [g],
                    [exp_avg],
                    [tau_alpha],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=hp["eps"],
                    alpha=hp["alpha"],
                    weight_decay=hp["weight_decay"],
                    foreach=False,
                )
            )

        return core


VECTORIZED_OPTIMIZERS: dict[str, type[VectorizedOptimizer]] = {
    cls.name: cls
    for cls in (
        VectorizedClipSGD,
        VectorizedClipAdam,
        VectorizedClipAdaGrad,
        VectorizedNSGD,
        VectorizedDeltaGClip,
        VectorizedACClip,
    )
}


def make_vectorized_optimizer(
    name: str, x: Tensor, hyperparameters: Mapping[str, Any]
) -> VectorizedOptimizer:
    """The vectorized form of optimizer ``name`` over iterates ``x`` (R, *shape) with ``hyperparameters``."""
    if name not in VECTORIZED_OPTIMIZERS:
        raise ValueError(
            f"Invalid optimizer: {name!r} has no vectorized form; allowed: {', '.join(VECTORIZED_OPTIMIZERS)}"
        )
    return VECTORIZED_OPTIMIZERS[name](x, hyperparameters)
