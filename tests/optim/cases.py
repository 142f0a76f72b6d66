"""The case database of the generic optimizer battery (in the style of torch's ``OptimizerInfo``).

The cases are declared by each rule's own test file, ``tests/optim/test_<module>.py`` for the
rule registered from ``tailclip/optim/<module>.py`` (or by the rule's module itself, when that
module lives in the tests, as the toy rule of ``_toy_rule.py``), and found here from the
registry: nothing lists the rules. A rule's test file declares

* ``BATTERY_CASES``: :class:`OptimCase` objects (made with :func:`case`), the variants worth
  testing: each clipping mode, norm/delay variants, the clipped target, weight decay, and an
  adaptive threshold policy (AutoClip, ZClip) as ``max_norm``;
* ``INVALID_COMBINATIONS`` (optional, read by :func:`invalid_combinations`):
  ``(kwargs, argument named)`` pairs that are invalid although each value is in range;
* ``VECTORIZED_CASES`` (rules with a vectorized form): hyperparameters for
  ``tests/problems/test_vectorized.py``.

``CASES`` maps each registry name of ``tailclip.optim.OPTIMIZERS`` to its battery cases. The
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
import importlib
import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from optim_fixtures import flat  # noqa: F401  (re-exported for the battery)
from torch import Tensor

from tailclip.clip import ThresholdPolicy
from tailclip.optim import OPTIMIZERS, VECTORIZED_RULES

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


def case(
    name: str,
    label: str,
    *,
    coupled_decay: bool = False,
    default_clip: str | None = None,
    writes_grad: bool = False,
    **kwargs: Any,
) -> OptimCase:
    """An :class:`OptimCase` of rule ``name``, its flags derived from what the rule declares.

    ``coupled_decay``: the rule adds ``wd x`` to the gradient before taking its norm (then the
    stats are not on the raw gradient); ``default_clip``: the rule's default ``clip`` mode, for
    rules that clip by ``max_norm`` (the cases with global clipping by a constant are bounded).
    """
    wd = kwargs.get("weight_decay", 0.0)
    momentum_target = kwargs.get("clip_target") == "momentum"
    global_bound = (
        "max_norm" in inspect.signature(OPTIMIZERS[name]).parameters
        and kwargs.get("clip", default_clip) == "global"
        and not isinstance(kwargs.get("max_norm"), ThresholdPolicy)
    )
    return OptimCase(
        name=name,
        label=label,
        kwargs=kwargs,
        stats_on_raw_grad=not (coupled_decay and wd != 0) and not momentum_target,
        global_bound=global_bound,
        writes_grad=writes_grad,
    )


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
def battery_cases() -> list[OptimCase]:
    """Every case of every registered ClipOptimizer (wrappers excluded)."""
    return [c for name in OPTIMIZERS if name not in WRAPPERS for c in CASES.get(name, [])]


def vectorized_cases() -> list[tuple[str, dict[str, Any]]]:
    """``(name, hyperparameters)`` of every rule with a vectorized form (its ``VECTORIZED_CASES``)."""
    return [
        (name, dict(hp))
        for name in VECTORIZED_RULES
        for hp in getattr(rule_tests(name), "VECTORIZED_CASES", [])
    ]


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


# ---------------------------------------------------------------------------------------------
# Discovery: each registered rule's cases, from its test file. Last in this module: the test
# files import the helpers above.


def rule_tests(name: str) -> ModuleType:
    """The module declaring the cases of rule ``name``: the rule's module if it declares
    ``BATTERY_CASES`` itself, else ``test_<module>`` next to this file."""
    module = sys.modules[OPTIMIZERS[name].__module__]
    if hasattr(module, "BATTERY_CASES"):
        return module
    return importlib.import_module("test_" + module.__name__.rsplit(".", 1)[-1])


class _Discovered(Mapping[str, list[OptimCase]]):
    """``name -> battery cases``, read from the rules' test files on first use: those files
    import this module, so reading them while it is being imported would be circular."""

    def __init__(self) -> None:
        self._cases: dict[str, list[OptimCase]] | None = None

    def _read(self) -> dict[str, list[OptimCase]]:
        if self._cases is None:
            self._cases = {
                name: [] if name in WRAPPERS else list(rule_tests(name).BATTERY_CASES) for name in OPTIMIZERS
            }
        return self._cases

    def __getitem__(self, name: str) -> list[OptimCase]:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


CASES: Mapping[str, list[OptimCase]] = _Discovered()


def invalid_combinations() -> list[tuple[str, dict[str, Any], str]]:
    """``(name, kwargs, argument named)``: combinations invalid although each value is in range."""
    return [
        (name, kwargs, arg)
        for name in OPTIMIZERS
        if name not in WRAPPERS
        for kwargs, arg in getattr(rule_tests(name), "INVALID_COMBINATIONS", [])
    ]
