"""The case database of the generic optimizer battery (in the style of torch's ``OptimizerInfo``).

``CASES`` maps each registry name of ``tailclip.optim.OPTIMIZERS`` to the constructor kwargs
of the variants worth testing: each clipping mode, norm/delay variants, the clipped target,
weight decay, and an adaptive threshold policy (AutoClip, ZClip) as ``max_norm``. The
battery in ``test_battery.py`` runs every case of every *registered* optimizer; a registered
optimizer without cases fails ``test_every_registered_optimizer_has_cases``.

``stats_on_raw_grad`` marks the cases whose ``ClipStats.grad_norm`` is, by the contract in
``papers.md``, the norm of the raw gradient ``g_t`` (not ``g_t + wd x_t`` nor a momentum);
``global_bound`` marks the cases whose ``clipped_norm`` is at most a constant ``max_norm``.

The module also holds the small data helpers the batteries share: parameters of mixed shapes
in two groups, and heavy-tailed (Student-t) gradient streams from fixed seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailclip.clip import AutoClip, ThresholdPolicy, ZClip
from tailclip.optim import OPTIMIZERS

EXPECTED_NAMES = frozenset(
    {"clip_sgd", "nsgd", "delta_gclip", "acclip", "clip_adagrad", "clip_adam", "noise_injection"}
)
# Wrappers around another optimizer: covered by their own tests, not the ClipOptimizer battery.
WRAPPERS = frozenset({"noise_injection"})


@dataclass(frozen=True)
class OptimCase:
    """One optimizer variant: ``OPTIMIZERS[name](params, **kwargs)``.

    ``group2`` overrides hyperparameters of the second param group (default: half the lr).
    """

    name: str
    label: str
    kwargs: dict[str, Any]
    stats_on_raw_grad: bool = True
    global_bound: bool = False
    # fused ClipAdam with global clipping leaves the clipped gradient in p.grad (documented).
    writes_grad: bool = False
    group2: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}-{self.label}"

    @property
    def cls(self) -> type:
        return OPTIMIZERS[self.name]

    def fresh_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The kwargs with fresh policy objects (a policy carries state and must not be shared)."""
        return {**copy.deepcopy(self.kwargs), **overrides}

    def group2_overrides(self) -> dict[str, Any]:
        if self.group2 is not None:
            return copy.deepcopy(self.group2)
        overrides: dict[str, Any] = {"lr": self.kwargs["lr"] * 0.5}
        if isinstance(self.kwargs.get("max_norm"), ThresholdPolicy):
            overrides["max_norm"] = copy.deepcopy(self.kwargs["max_norm"])
        return overrides

    def build(self, params: Any, **overrides: Any) -> torch.optim.Optimizer:
        return self.cls(params, **self.fresh_kwargs(**overrides))


def _case(name: str, label: str, writes_grad: bool = False, **kwargs: Any) -> OptimCase:
    wd = kwargs.get("weight_decay", 0.0)
    coupled_wd = name in {"clip_sgd", "nsgd", "clip_adagrad"}
    momentum_target = kwargs.get("clip_target") == "momentum"
    global_bound = (
        name in {"clip_sgd", "clip_adagrad", "clip_adam"}
        and kwargs.get("clip", "global" if name == "clip_sgd" else None) == "global"
        and not isinstance(kwargs.get("max_norm"), ThresholdPolicy)
    )
    return OptimCase(
        name=name,
        label=label,
        kwargs=kwargs,
        stats_on_raw_grad=not (coupled_wd and wd != 0) and not momentum_target,
        global_bound=global_bound,
        writes_grad=writes_grad,
    )


CASES: dict[str, list[OptimCase]] = {
    "clip_sgd": [
        _case("clip_sgd", "global", lr=0.1, clip="global", max_norm=1.0),
        _case("clip_sgd", "layer-momentum", lr=0.1, momentum=0.9, clip="layer", max_norm=0.5),
        _case("clip_sgd", "coord-momentum", lr=0.1, momentum=0.9, clip="coord", max_norm=0.3),
        _case("clip_sgd", "noclip-momentum", lr=0.1, momentum=0.9, clip=None),
        _case("clip_sgd", "momentum-target", lr=0.1, momentum=0.9, clip="global", clip_target="momentum"),
        _case("clip_sgd", "weight-decay", lr=0.1, momentum=0.5, clip="global", max_norm=2.0,
              weight_decay=0.01),
        _case("clip_sgd", "autoclip", lr=0.1, clip="global", max_norm=AutoClip(percentile=50.0)),
        _case("clip_sgd", "zclip", lr=0.1, momentum=0.9, clip="global", max_norm=ZClip(warmup=3)),
    ],
    "nsgd": [
        _case("nsgd", "default", lr=0.1),
        _case("nsgd", "no-momentum", lr=0.1, momentum=0.0),
        _case("nsgd", "eps", lr=0.05, momentum=0.5, eps=1e-3),
        _case("nsgd", "weight-decay", lr=0.1, momentum=0.9, weight_decay=0.01),
    ],
    "delta_gclip": [
        _case("delta_gclip", "default", lr=1.0, gamma=0.5, delta=1e-3),
        _case("delta_gclip", "gclip-delta0", lr=1.0, gamma=0.5, delta=0.0),
        _case("delta_gclip", "large-delta", lr=0.5, gamma=0.1, delta=0.5),
        _case("delta_gclip", "weight-decay", lr=1.0, gamma=0.5, delta=1e-3, weight_decay=0.01),
    ],
    "acclip": [
        _case("acclip", "paper", lr=1e-2),
        _case("acclip", "alpha2", lr=1e-2, alpha=2.0),
        _case("acclip", "betas-no-wd", lr=1e-2, betas=(0.8, 0.95), weight_decay=0.0),
        _case("acclip", "weight-decay", lr=1e-2, eps=1e-3, weight_decay=0.1),
    ],
    "clip_adagrad": [
        _case("clip_adagrad", "adagrad", lr=0.1),
        _case("clip_adagrad", "global", lr=0.1, clip="global", max_norm=1.0),
        _case("clip_adagrad", "coord", lr=0.1, clip="coord", max_norm=0.5),
        _case("clip_adagrad", "norm-layer", lr=0.1, norm=True, clip="layer", max_norm=0.5),
        _case("clip_adagrad", "delay-global", lr=0.1, delay=True, b0=1.0, clip="global", max_norm=1.0),
        _case("clip_adagrad", "norm-delay-coord", lr=0.1, norm=True, delay=True, b0=0.5, clip="coord",
              max_norm=0.5),
        _case("clip_adagrad", "weight-decay", lr=0.1, clip="global", max_norm=1.0, weight_decay=0.01),
        _case("clip_adagrad", "autoclip", lr=0.1, clip="global", max_norm=AutoClip(percentile=50.0)),
        _case("clip_adagrad", "zclip-norm", lr=0.1, norm=True, clip="global", max_norm=ZClip(warmup=3)),
    ],
    "clip_adam": [
        _case("clip_adam", "adamw", lr=1e-2),
        _case("clip_adam", "global", lr=1e-2, clip="global", max_norm=1.0),
        _case("clip_adam", "coord", lr=1e-2, clip="coord", max_norm=0.5),
        _case("clip_adam", "norm-layer", lr=1e-2, norm=True, clip="layer", max_norm=0.5),
        _case("clip_adam", "delay-global", lr=1e-2, delay=True, v0=1e-2, clip="global", max_norm=1.0),
        _case("clip_adam", "norm-delay", lr=1e-2, norm=True, delay=True, v0=0.1, clip="global", max_norm=1.0),
        _case("clip_adam", "weight-decay", lr=1e-2, betas=(0.8, 0.99), clip="global", weight_decay=0.1),
        _case("clip_adam", "autoclip", lr=1e-2, clip="global", max_norm=AutoClip(percentile=50.0)),
        _case("clip_adam", "zclip-norm", lr=1e-2, norm=True, clip="global", max_norm=ZClip(warmup=3)),
        _case("clip_adam", "fused-global", lr=1e-2, clip="global", max_norm=1.0, weight_decay=0.01,
              fused=True, writes_grad=True),
        _case("clip_adam", "fused-layer", lr=1e-2, clip="layer", max_norm=0.5, fused=True),
    ],
    "noise_injection": [],
}

# Out-of-range values per hyperparameter: a ValueError naming the argument must follow.
# The key is the argument; the pattern the message must contain is the argument's name,
# except for betas, whose messages name "beta" (as torch.optim's do).
INVALID_VALUES: dict[str, list[Any]] = {
    "lr": [-1e-3],
    "momentum": [-0.1, 1.0],
    "weight_decay": [-1e-2],
    "eps": [-1e-8],
    "max_norm": [0.0, -1.0],
    "clip": ["bogus"],
    "clip_target": ["bogus"],
    "betas": [(1.0, 0.9), (0.9, -0.1)],
    "gamma": [-0.1],
    "delta": [-0.1],
    "alpha": [-1.0],
    "b0": [-1.0],
    "v0": [-1.0],
    "nonfinite": ["bogus"],
}
# Combinations that are invalid although each value is in range: (name, kwargs, argument named).
INVALID_COMBINATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("clip_sgd", {"clip": "layer", "max_norm": AutoClip()}, "max_norm"),
    ("clip_adagrad", {"delay": True, "b0": 0.0}, "b0"),
    ("clip_adagrad", {"clip": "coord", "max_norm": ZClip()}, "max_norm"),
    ("clip_adam", {"delay": True, "v0": 0.0}, "v0"),
    ("clip_adam", {"clip": None, "max_norm": AutoClip()}, "max_norm"),
    ("clip_adam", {"fused": True, "norm": True}, "fused"),
    ("clip_adam", {"fused": True, "delay": True, "v0": 0.1}, "fused"),
]


def battery_cases() -> list[OptimCase]:
    """Every case of every registered ClipOptimizer (wrappers excluded)."""
    return [c for name in OPTIMIZERS if name not in WRAPPERS for c in CASES.get(name, [])]


# ---------------------------------------------------------------------------------------------
# Data: parameters in two groups and heavy-tailed gradient streams.

# Group 0 holds a matrix, a vector and a 0-dim tensor; group 1 a 3-d tensor and a vector.
GROUP_SHAPES: tuple[tuple[tuple[int, ...], ...], ...] = (((4, 3), (4,), ()), ((2, 3, 2), (5,)))


def student_t(shape: Sequence[int], seed: int, df: float = 1.5, scale: float = 1.0) -> Tensor:
    """Student-t samples (infinite variance for ``df <= 2``) as a float64 tensor, fixed seed."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.asarray(scale * rng.standard_t(df, size=tuple(shape)), dtype=np.float64))


def make_params(seed: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> list[list[Tensor]]:
    """Leaf tensors of ``GROUP_SHAPES``, Gaussian with standard deviation ``scale``."""
    gen = torch.Generator().manual_seed(seed)
    return [
        [(scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype).requires_grad_()
         for shape in group]
        for group in GROUP_SHAPES
    ]


def clone_params(groups: list[list[Tensor]], dtype: torch.dtype | None = None) -> list[list[Tensor]]:
    return [[p.detach().clone().to(dtype or p.dtype).requires_grad_() for p in group] for group in groups]


def grad_stream(
    steps: int, seed: int, df: float = 1.5, scale: float = 1.0, none_pattern: bool = True
) -> list[list[list[Tensor | None]]]:
    """``steps`` gradient sets (float64) shaped like ``GROUP_SHAPES``.

    With ``none_pattern`` the 0-dim parameter has no gradient on every third step and the
    group-0 vector none on the first two steps (its state starts late).
    """
    stream = []
    for t in range(steps):
        grads: list[list[Tensor | None]] = []
        for gi, group in enumerate(GROUP_SHAPES):
            grads.append(
                [student_t(shape, seed=seed * 100_003 + t * 101 + gi * 11 + k, df=df, scale=scale)
                 for k, shape in enumerate(group)]
            )
        if none_pattern:
            if t % 3 == 2:
                grads[0][2] = None
            if t < 2:
                grads[0][1] = None
        stream.append(grads)
    return stream


def set_grads(params: list[list[Tensor]], grads: list[list[Tensor | None]]) -> None:
    for group_p, group_g in zip(params, grads):
        for p, g in zip(group_p, group_g):
            p.grad = None if g is None else g.to(p.dtype).clone()


def param_groups(case: OptimCase, params: list[list[Tensor]]) -> list[dict[str, Any]]:
    return [{"params": params[0]}, {"params": params[1], **case.group2_overrides()}]


def flat(params: list[list[Tensor]]) -> list[Tensor]:
    return [p.detach() for group in params for p in group]
