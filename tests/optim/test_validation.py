"""Hyperparameter validation of every registered optimizer (issue 11, optimizers).

Every param group is validated with the constructor's messages, at construction and in
``add_param_group``; infinite values are rejected; ``eps = 0`` is rejected where an all-zero
gradient would divide 0 by 0; complex parameters are rejected when a group is added; and a
property test: random hyperparameters either raise ``ValueError`` or step to finite
parameters on finite gradients.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from cases import CASES, WRAPPERS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailclip.optim import OPTIMIZERS, ClipAdaGrad, ClipAdam, NoiseInjection

NAMES = [name for name in OPTIMIZERS if name not in WRAPPERS and CASES[name]]

# (hyperparameter, invalid value): each rule taking the hyperparameter must refuse it per group
GROUP_INVALID = [
    ("lr", -1.0), ("lr", math.nan), ("lr", math.inf), ("momentum", 1.5), ("delta", 5.0),
    ("betas", (2.0, 2.0)), ("weight_decay", math.inf), ("weight_decay", -1.0), ("eps", math.inf),
    ("gamma", math.nan), ("alpha", 3.0), ("max_norm", -1.0), ("dampening", 2.0),
    ("lr_decay", -0.5), ("b0", math.inf), ("v0", math.nan),
]


def _group_cases() -> list[Any]:
    out = []
    for name in NAMES:
        accepted = inspect.signature(OPTIMIZERS[name]).parameters
        for key, value in GROUP_INVALID:
            if key in accepted:
                out.append(pytest.param(name, key, value, id=f"{name}-{key}={value}"))
    return out


def _base_kwargs(name: str) -> dict[str, Any]:
    return {"lr": CASES[name][0].kwargs["lr"]}


def _named(key: str) -> str:
    return {"betas": "beta", "lr": "learning rate"}.get(key, key)


@pytest.mark.parametrize(("name", "key", "value"), _group_cases())
def test_every_group_is_validated_at_construction(name: str, key: str, value: Any) -> None:
    groups = [{"params": [torch.zeros(2, requires_grad=True)]},
              {"params": [torch.zeros(3, requires_grad=True)], key: value}]
    if key == "max_norm":
        groups[1]["clip"] = "global"
    with pytest.raises(ValueError, match=_named(key)) as info:
        OPTIMIZERS[name](groups, **_base_kwargs(name))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "key", "value"), _group_cases())
def test_every_group_is_validated_in_add_param_group(name: str, key: str, value: Any) -> None:
    opt = OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], **_base_kwargs(name))
    group = {"params": [torch.zeros(3, requires_grad=True)], key: value}
    if key == "max_norm":
        group["clip"] = "global"
    with pytest.raises(ValueError, match=_named(key)):
        opt.add_param_group(group)
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", ["lr", "weight_decay"])
def test_infinite_values_are_rejected(name: str, key: str) -> None:
    with pytest.raises(ValueError, match=f"{_named(key)}.*inf"):
        OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], **{**_base_kwargs(name), key: math.inf})


def test_noise_injection_rejects_an_infinite_eta() -> None:
    base = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Invalid eta: inf"):
        NoiseInjection(base, eta=math.inf)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(ClipAdam, {"eps": 0.0}), (ClipAdam, {"eps": 0.0, "norm": True}), (ClipAdaGrad, {"b0": 0.0, "eps": 0.0}),
     (ClipAdaGrad, {"initial_accumulator_value": 0.0, "eps": 0.0, "norm": True})],
    ids=["adam", "adam-norm", "adagrad", "adagrad-norm"],
)
def test_zero_eps_with_a_zero_accumulator_is_rejected(cls: type, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Invalid eps: 0") as info:
        cls([torch.zeros(2, requires_grad=True)], lr=0.1, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(ClipAdam, {"eps": 0.0, "v0": 0.1}), (ClipAdam, {"eps": 0.0, "v0": 0.1, "norm": True, "delay": True}),
     (ClipAdaGrad, {"b0": 0.5, "eps": 0.0}), (ClipAdaGrad, {"b0": 0.5, "eps": 0.0, "norm": True})],
    ids=["adam", "adam-norm-delay", "adagrad", "adagrad-norm"],
)
def test_zero_eps_with_a_positive_accumulator_steps_exactly_on_a_zero_gradient(
    cls: type, kwargs: dict[str, Any]
) -> None:
    p = torch.ones(3, requires_grad=True)
    opt = cls([p], lr=0.1, **kwargs)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_are_rejected_when_added(name: str) -> None:
    complex_param = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid params: .*complex64.*allowed: real") as info:
        OPTIMIZERS[name]([complex_param], **_base_kwargs(name))
    assert "\n" not in str(info.value)
    opt = OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], **_base_kwargs(name))
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [complex_param]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", NAMES)
def test_maximize_ascends_along_the_gradient(name: str) -> None:
    """``maximize=True`` on ``g`` is the step of ``maximize=False`` on ``-g``, bit for bit."""
    runs = []
    for maximize, sign in ((True, 1.0), (False, -1.0)):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(4, 3, generator=gen, dtype=torch.float64).requires_grad_(),
                  torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()]
        opt = CASES[name][0].build(params, maximize=maximize)
        for t in range(3):
            gen = torch.Generator().manual_seed(10 + t)
            for p in params:
                p.grad = sign * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
        runs.append([p.detach() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


# ------------------------------------------------------------------------- property test

_SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, 1e-12, 2.0])
_FLOAT = st.one_of(st.floats(-10.0, 10.0), _SPECIAL)
_CHOICES = {
    "clip": st.sampled_from([None, "global", "layer", "coord", "bogus"]),
    "clip_target": st.sampled_from(["gradient", "momentum", "bogus"]),
    "betas": st.tuples(_FLOAT, _FLOAT),
}
_SKIPPED = {"params", "self", "foreach", "fused", "capturable", "nonfinite"}


def _value(name: str, default: Any) -> st.SearchStrategy:
    if name in _CHOICES:
        return _CHOICES[name]
    if isinstance(default, bool):
        return st.one_of(st.booleans(), st.just(1))
    if name == "initial_accumulator_value":
        return st.one_of(st.none(), _FLOAT)
    return _FLOAT


def _hyperparameters(name: str) -> st.SearchStrategy:
    """The defaults (``lr``: a valid one) with up to three fields replaced by random values."""
    signature = inspect.signature(OPTIMIZERS[name])
    defaults = {"lr": CASES[name][0].kwargs["lr"]}
    values = {}
    for key, parameter in signature.parameters.items():
        if key in _SKIPPED or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        default = parameter.default if parameter.default is not inspect.Parameter.empty else 0.1
        defaults.setdefault(key, default)
        values[key] = _value(key, default)
    keys = st.lists(st.sampled_from(sorted(values)), max_size=3, unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: values[k] for k in ks})).map(
        lambda changed: {**defaults, **changed}
    )


@pytest.mark.parametrize("name", NAMES)
def test_random_hyperparameters_raise_value_error_or_step_to_finite_parameters(name: str) -> None:
    outcomes = {"refused": 0, "stepped": 0}

    @settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(hp=_hyperparameters(name), seed=st.integers(0, 2**16))
    def check(hp: dict[str, Any], seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        params = [torch.randn(4, 3, generator=gen, dtype=torch.float64).requires_grad_(),
                  torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()]
        try:
            opt = OPTIMIZERS[name](params, **hp)
        except ValueError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
            return
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
        assert all(bool(torch.isfinite(p).all()) for p in params), hp
        outcomes["stepped"] += 1

    check()
    assert outcomes["refused"] > 0 and outcomes["stepped"] > 0, outcomes
