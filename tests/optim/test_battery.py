"""The generic battery: every case of every registered ClipOptimizer (see ``cases.py``).

Checks, per case: the foreach and per-tensor paths agree; a state_dict round trip (deepcopy
and torch.save) continues bit for bit, adaptive policies included; ``step(closure)``; None
grads skipped and sparse grads rejected; float32/float64/bfloat16; the ``nonfinite`` policy
(the error names the parameter; "skip" leaves everything untouched); ``step_stats``; and
hyperparameter validation. Gradients are heavy-tailed (Student-t, df 1.5) from fixed seeds.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
from typing import Any

import pytest
import torch
from cases import (
    CASES,
    EXPECTED_NAMES,
    INVALID_VALUES,
    WRAPPERS,
    OptimCase,
    battery_cases,
    clone_params,
    flat,
    grad_stream,
    invalid_combinations,
    make_params,
    param_groups,
    set_grads,
    student_t,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tailclip.clip import ThresholdPolicy
from tailclip.optim import OPTIMIZERS, ClipOptimizer

CASE_PARAMS = [pytest.param(c, id=c.id) for c in battery_cases()]
BOUND_PARAMS = [pytest.param(c, id=c.id) for c in battery_cases() if c.global_bound]
FOREACH = [pytest.param(True, id="foreach"), pytest.param(False, id="loop")]
SLOW_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def assert_tree(actual: Any, expected: Any, exact: bool = True, rtol: float = 0.0, atol: float = 0.0,
                path: str = "") -> None:
    """Recursive equality of nested dicts/lists/tensors; bitwise if ``exact``."""
    if isinstance(expected, Tensor):
        assert isinstance(actual, Tensor), path
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        if exact:
            assert torch.equal(actual, expected) or (
                actual.is_floating_point() and torch.equal(actual.isnan(), expected.isnan())
                and torch.equal(actual.nan_to_num(), expected.nan_to_num())
            ), f"{path}: {actual} != {expected}"
        else:
            torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{path}: {m}")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(expected), f"{path}: keys {actual} != {expected}"
        for key in expected:
            assert_tree(actual[key], expected[key], exact, rtol, atol, f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_tree(a, e, exact, rtol, atol, f"{path}[{i}]")
    elif isinstance(expected, ThresholdPolicy):
        assert type(actual) is type(expected), path
        assert_tree(actual.state_dict(), expected.state_dict(), exact, rtol, atol, f"{path}<policy>")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def state_tensors(opt: torch.optim.Optimizer) -> list[Tensor]:
    """Every tensor in the per-parameter state and in the groups' adaptive policies."""
    tensors = [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]
    for group in opt.param_groups:
        if isinstance(group.get("max_norm"), ThresholdPolicy):
            tensors += list(group["max_norm"].state_dict().values())
    return tensors


def run(case: OptimCase, params: list[list[Tensor]], stream: list, foreach: bool = True,
        opt: torch.optim.Optimizer | None = None, **kwargs: Any) -> torch.optim.Optimizer:
    if opt is None:
        opt = case.build(param_groups(case, params), foreach=foreach, **kwargs)
    for grads in stream:
        set_grads(params, grads)
        opt.step()
    return opt


# --------------------------------------------------------------------------------------------- registry


def test_registry_holds_the_expected_optimizers() -> None:
    """Completeness: all seven optimizers of the issue are registered under these names."""
    assert set(OPTIMIZERS) == EXPECTED_NAMES


def test_every_registered_optimizer_has_cases() -> None:
    missing = [n for n in OPTIMIZERS if not CASES.get(n) and n not in WRAPPERS]
    assert not missing, f"registered optimizers without cases in tests/optim/cases.py: {missing}"
    assert set(CASES) <= EXPECTED_NAMES


def test_registered_optimizers_are_clip_optimizers() -> None:
    for name, cls in OPTIMIZERS.items():
        if name not in WRAPPERS:
            assert issubclass(cls, ClipOptimizer), name
            assert {"foreach", "nonfinite"} <= set(inspect.signature(cls).parameters), name


def test_cases_construct_with_their_own_policy_objects() -> None:
    for case in battery_cases():
        a, b = case.fresh_kwargs(), case.fresh_kwargs()
        if isinstance(a.get("max_norm"), ThresholdPolicy):
            assert a["max_norm"] is not b["max_norm"]


# --------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_foreach_matches_loop(case: OptimCase, dtype: torch.dtype) -> None:
    """20 steps, two groups with different hyperparameters, some grads None on some steps."""
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    p_fe, p_lp = make_params(0, dtype), make_params(0, dtype)
    opt_fe = case.build(param_groups(case, p_fe), foreach=True)
    opt_lp = case.build(param_groups(case, p_lp), foreach=False)
    for t, grads in enumerate(grad_stream(20, seed=1)):
        set_grads(p_fe, grads)
        set_grads(p_lp, grads)
        opt_fe.step()
        opt_lp.step()
        assert_tree(flat(p_lp), flat(p_fe), exact=False, **tol, path=f"step {t} params")
        for field in ("grad_norm", "clipped_norm", "clip_factor"):
            assert_tree(getattr(opt_lp.step_stats, field), getattr(opt_fe.step_stats, field),
                        exact=False, **tol, path=f"step {t} {field}")
        assert bool(opt_lp.step_stats.clipped) == bool(opt_fe.step_stats.clipped)
    sd_fe, sd_lp = opt_fe.state_dict(), opt_lp.state_dict()
    for group in sd_fe["param_groups"] + sd_lp["param_groups"]:
        group.pop("foreach")
    assert_tree(sd_lp, sd_fe, exact=False, **tol, path="state_dict")


# --------------------------------------------------------------------------------------------- state


def _reload_deepcopy(state: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(state)


def _reload_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("reload", [_reload_deepcopy, _reload_torch_save], ids=["deepcopy", "torch_save"])
@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_state_dict_round_trip(case: OptimCase, foreach: bool, reload: Any, dtype: torch.dtype) -> None:
    """Save after N steps, load into a fresh optimizer, continue M steps: bitwise the same run.

    In bfloat16 too: ``Optimizer.load_state_dict`` casts floating state to the parameter's
    dtype (except "step"), which must not change state kept in float32 on purpose.
    """
    stream = grad_stream(10, seed=2)
    params = make_params(3, dtype, scale=0.1)
    opt = run(case, params, stream[:6], foreach)
    saved = reload(opt.state_dict())
    resumed_params = clone_params(params)
    resumed = case.build(param_groups(case, resumed_params), foreach=foreach)
    resumed.load_state_dict(saved)
    assert_tree(resumed.state_dict(), opt.state_dict(), path="loaded state_dict")
    run(case, params, stream[6:], opt=opt)
    run(case, resumed_params, stream[6:], opt=resumed)
    assert_tree(flat(resumed_params), flat(params), path="params")
    assert_tree(resumed.state_dict(), opt.state_dict(), path="state_dict")
    for group, reference in zip(resumed.param_groups, opt.param_groups):
        if isinstance(reference.get("max_norm"), ThresholdPolicy):
            assert isinstance(group["max_norm"], ThresholdPolicy)
            assert_tree(group["max_norm"].state_dict(), reference["max_norm"].state_dict(), path="policy")


# --------------------------------------------------------------------------------------------- step API


def _quadratic_loss(params: list[list[Tensor]], seed: int) -> Tensor:
    """sum_k (w_k . p_k^2 / 2 + c_k . p_k) with heavy-tailed c_k: gradient w_k p_k + c_k."""
    loss = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(p for group in params for p in group):
        w = student_t(p.shape, seed + i, df=3.0).abs().to(p.dtype)
        c = student_t(p.shape, seed + 50 + i, df=1.5).to(p.dtype)
        loss = loss + (w * p * p / 2 + c * p).sum().double()
    return loss


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_step_with_closure_returns_loss_and_updates(case: OptimCase) -> None:
    params, reference = make_params(4), make_params(4)
    opt = case.build(param_groups(case, params))
    ref_opt = case.build(param_groups(case, reference))
    for t in range(3):
        losses: list[Tensor] = []

        def closure(seed: int = 10 * t, losses: list[Tensor] = losses) -> Tensor:
            opt.zero_grad()
            loss = _quadratic_loss(params, seed=seed)
            loss.backward()
            losses.append(loss)
            return loss

        before = [p.clone() for p in flat(params)]
        returned = opt.step(closure)
        assert len(losses) == 1 and returned is losses[0]
        assert any(not torch.equal(b, p) for b, p in zip(before, flat(params)))
        ref_opt.zero_grad()
        ref_loss = _quadratic_loss(reference, seed=10 * t)
        ref_loss.backward()
        assert ref_opt.step() is None
        assert torch.equal(returned, ref_loss)
        assert_tree(flat(params), flat(reference), path=f"step {t}")


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_none_grads_are_skipped(case: OptimCase, foreach: bool) -> None:
    params = make_params(5)
    opt = case.build(param_groups(case, params), foreach=foreach)
    idle = params[1][0]
    idle_before = idle.detach().clone()
    idle_state = copy.deepcopy(dict(opt.state.get(idle, {})))
    for grads in grad_stream(4, seed=6):
        grads[1][0] = None
        set_grads(params, grads)
        opt.step()
    assert torch.equal(idle.detach(), idle_before)
    # Group-level state (one scalar per group) is kept on the group's first parameter.
    per_param_state = {k: v for k, v in opt.state.get(idle, {}).items() if k not in case.cls.GROUP_STATE_KEYS}
    idle_state = {k: v for k, v in idle_state.items() if k not in case.cls.GROUP_STATE_KEYS}
    assert_tree(per_param_state, idle_state, path="state of the None-grad parameter")
    if not idle_state:
        assert not per_param_state
    # A step where no parameter has a gradient changes nothing and still returns the loss.
    snapshot = (copy.deepcopy(opt.state_dict()), [p.clone() for p in flat(params)])
    opt.zero_grad()
    assert opt.step(lambda: torch.tensor(2.5)).item() == 2.5
    assert_tree(opt.state_dict(), snapshot[0])
    assert_tree(flat(params), snapshot[1])


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_step_leaves_grads_untouched(case: OptimCase, foreach: bool) -> None:
    """As torch.optim: clipping acts on the update, ``p.grad`` keeps the raw gradient."""
    params = make_params(19)
    opt = case.build(param_groups(case, params), foreach=foreach)
    for t, grads in enumerate(grad_stream(3, seed=20)):
        set_grads(params, grads)
        leaves = [p for group in params for p in group]
        before = [None if p.grad is None else p.grad.clone() for p in leaves]
        assert sum(g is not None for g in before) >= 4
        opt.step()
        for k, (p, g) in enumerate(zip(leaves, before)):
            assert (p.grad is None) == (g is None)
            if case.writes_grad and g is not None:
                # The fused kernel writes g / grad_scale back: the group's clipped gradient.
                group = next(i for i, grp in enumerate(opt.param_groups)
                             if any(q is p for q in grp["params"]))
                factor = opt.group_stats[group].clip_factor
                torch.testing.assert_close(p.grad, g * factor.to(g.dtype), rtol=1e-6, atol=0)
            else:
                assert g is None or torch.equal(p.grad, g), f"step {t}: the step changed the gradient {k}"


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_sparse_grad_raises(case: OptimCase, foreach: bool) -> None:
    params = make_params(7)
    opt = case.build(param_groups(case, params), foreach=foreach)
    set_grads(params, grad_stream(1, seed=8, none_pattern=False)[0])
    params[1][0].grad = params[1][0].grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# --------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_dtypes(case: OptimCase, foreach: bool, dtype: torch.dtype) -> None:
    params = make_params(9, dtype, scale=0.1)
    opt = run(case, params, grad_stream(6, seed=10), foreach)
    for p in flat(params):
        assert p.dtype == dtype and bool(torch.isfinite(p).all())
    for group in params:
        for p in group:
            for key, value in opt.state[p].items():
                if isinstance(value, Tensor):
                    assert bool(torch.isfinite(value).all()), key
                    if p.dim() > 0 and value.shape == p.shape:
                        assert value.dtype == dtype, f"state {key!r} is {value.dtype} for a {dtype} parameter"


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_bfloat16_close_to_float32(case: OptimCase, foreach: bool) -> None:
    """Same start and grads (bfloat16-representable): the bfloat16 run tracks the float32 run.

    Parameters start small (scale 0.02) so that each step is large against bfloat16's
    resolution. Allowed deviation: 2% of the distance the float32 run travelled plus one
    bfloat16 ulp (2^-8 relative) of the parameters per sqrt(step) for the roundings of x.
    """
    steps = 6
    p16 = make_params(11, torch.bfloat16, scale=0.02)
    p32 = clone_params(p16, torch.float32)
    start = torch.cat([p.reshape(-1) for p in flat(p32)]).clone()
    stream = [[[None if g is None else g.to(torch.bfloat16).double() for g in group] for group in grads]
              for grads in grad_stream(steps, seed=12)]
    run(case, p16, stream, foreach)
    run(case, p32, stream, foreach)
    x16 = torch.cat([p.reshape(-1).float() for p in flat(p16)])
    x32 = torch.cat([p.reshape(-1) for p in flat(p32)])
    travelled = float(torch.linalg.vector_norm(x32 - start))
    deviation = float(torch.linalg.vector_norm(x16 - x32))
    rounding = math.sqrt(steps) * 2.0**-8 * float(torch.linalg.vector_norm(x32))
    assert rounding < 0.25 * travelled, "the float32 run barely moved: the comparison would be vacuous"
    assert deviation <= 0.02 * travelled + rounding, (
        f"bfloat16 deviates by {deviation:.3g}, travelled {travelled:.3g}"
    )


# --------------------------------------------------------------------------------------------- nonfinite


def _poison(params: list[list[Tensor]], group: int, index: int, value: float) -> None:
    grad = params[group][index].grad
    grad.view(-1)[grad.numel() // 2] = value


@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_nonfinite_raises_naming_the_parameter(case: OptimCase, named: bool) -> None:
    params = make_params(13)
    groups = param_groups(case, params)
    if named:
        for gi, group in enumerate(groups):
            group["params"] = [(f"block{gi}.tensor{k}", p) for k, p in enumerate(group["params"])]
    opt = case.build(groups)
    stream = grad_stream(3, seed=14, none_pattern=False)
    run(case, params, stream[:2], opt=opt)
    snapshot = (copy.deepcopy(opt.state_dict()), [p.clone() for p in flat(params)])
    set_grads(params, stream[2])
    _poison(params, 1, 1, math.inf)
    expected = "block1.tensor1" if named else "index 1"
    with pytest.raises(FloatingPointError, match=f"param group 1.*{expected}"):
        opt.step()
    assert_tree(opt.state_dict(), snapshot[0], path="state after a raised step")
    assert_tree(flat(params), snapshot[1], path="params after a raised step")


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_nonfinite_skip_leaves_everything_untouched(case: OptimCase, foreach: bool) -> None:
    """Skipped steps change nothing; the run equals one without the bad steps, bit for bit."""
    clean = grad_stream(6, seed=15)
    params, reference = make_params(16), make_params(16)
    opt = case.build(param_groups(case, params), foreach=foreach, nonfinite="skip")
    run(case, reference, clean, foreach, nonfinite="skip")
    run(case, params, clean[:3], opt=opt)
    for group, index, value in [(0, 0, math.inf), (1, 0, math.nan), (1, 1, -math.inf)]:
        snapshot = (copy.deepcopy(opt.state_dict()), [p.clone() for p in flat(params)])
        set_grads(params, clean[3])
        _poison(params, group, index, value)
        opt.step()
        assert_tree(opt.state_dict(), snapshot[0], path=f"state after skipping {value}")
        assert_tree(flat(params), snapshot[1], path=f"params after skipping {value}")
    assert opt.skipped_steps == 3
    run(case, params, clean[3:], opt=opt)
    assert opt.skipped_steps == 3
    assert_tree(flat(params), flat(reference), path="params")


_injection = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]),
              st.sampled_from([math.inf, -math.inf, math.nan])),
)


@pytest.mark.parametrize("case", CASE_PARAMS)
@SLOW_SETTINGS
@given(injections=st.lists(_injection, min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_nonfinite_skip_property(case: OptimCase, injections: list, seed: int) -> None:
    """Any sequence of steps with inf/NaN injected under "skip": params and state stay finite
    and equal the run over the clean steps alone."""
    stream = grad_stream(len(injections), seed=seed, none_pattern=False)
    params, reference = make_params(seed), make_params(seed)
    opt = case.build(param_groups(case, params), nonfinite="skip")
    ref_opt = case.build(param_groups(case, reference), nonfinite="skip")
    for grads, injection in zip(stream, injections):
        set_grads(params, grads)
        if injection is None:
            set_grads(reference, grads)
            ref_opt.step()
        else:
            (group, index), value = injection
            _poison(params, group, index, value)
        opt.step()
    assert opt.skipped_steps == sum(i is not None for i in injections)
    for tensor in flat(params) + state_tensors(opt):
        if tensor.is_floating_point():
            assert not bool(tensor.isnan().any())
    assert all(bool(torch.isfinite(p).all()) for p in flat(params))
    assert_tree(flat(params), flat(reference), path="params")


# --------------------------------------------------------------------------------------------- stats


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_step_stats(case: OptimCase, foreach: bool) -> None:
    """grad_norm is the pre-clip norm of the raw gradients; clip_factor in (0, 1]; clipped iff < 1."""
    params = make_params(17)
    opt = case.build(param_groups(case, params), foreach=foreach)
    for t, grads in enumerate(grad_stream(8, seed=18)):
        set_grads(params, grads)
        expected = [
            math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in group if p.grad is not None))
            for group in params
        ]
        opt.step()
        assert len(opt.group_stats) == 2
        for stats, norm in zip(opt.group_stats + [opt.step_stats], expected + [math.hypot(*expected)]):
            if case.stats_on_raw_grad:
                assert float(stats.grad_norm) == pytest.approx(norm, rel=1e-5), f"step {t}"
            factor = float(stats.clip_factor)
            assert 0.0 < factor <= 1.0, f"step {t}: clip_factor {factor}"
            assert bool(stats.clipped) == (factor < 1.0)
            assert factor == pytest.approx(float(stats.clipped_norm) / float(stats.grad_norm), rel=1e-5)


@pytest.mark.parametrize("case", BOUND_PARAMS)
@SLOW_SETTINGS
@given(seed=st.integers(0, 2**16), log_scale=st.floats(-3.0, 3.0), max_norm=st.floats(1e-2, 1e2))
def test_global_clipping_bounds_the_clipped_norm(case: OptimCase, seed: int, log_scale: float,
                                                 max_norm: float) -> None:
    params = make_params(seed)
    groups = param_groups(case, params)
    groups[1].pop("max_norm", None)
    opt = case.build(groups, max_norm=max_norm)
    for grads in grad_stream(4, seed=seed, scale=10.0**log_scale):
        set_grads(params, grads)
        opt.step()
        for stats in opt.group_stats:
            assert float(stats.clipped_norm) <= max_norm * (1 + 1e-6)


# --------------------------------------------------------------------------------------------- validation


def _value_id(value: Any) -> str:
    """A stable test id: no object addresses (xdist workers must collect the same ids)."""
    return type(value).__name__ if isinstance(value, ThresholdPolicy) else repr(value)


def _invalid_params() -> list[Any]:
    cases = []
    for name, cls in OPTIMIZERS.items():
        if name in WRAPPERS or not CASES.get(name):
            continue
        signature = inspect.signature(cls).parameters
        for arg, values in INVALID_VALUES.items():
            if arg in signature:
                cases += [pytest.param(name, {arg: v}, arg, id=f"{name}-{arg}={_value_id(v)}")
                          for v in values]
        for n, kwargs, arg in invalid_combinations():
            if n == name:
                label = "-".join(f"{k}={_value_id(v)}" for k, v in kwargs.items())
                cases.append(pytest.param(n, kwargs, arg, id=f"{n}-{label}"))
    return cases


@pytest.mark.parametrize(("name", "kwargs", "arg"), _invalid_params())
def test_invalid_hyperparameter_raises_naming_it(name: str, kwargs: dict[str, Any], arg: str) -> None:
    base = {"lr": CASES[name][0].kwargs["lr"]}
    if "max_norm" in kwargs and "clip" not in kwargs:
        base["clip"] = "global"
    with pytest.raises(ValueError) as info:
        OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], **{**base, **kwargs})
    message = str(info.value)
    assert ("beta" if arg == "betas" else arg) in message, message
    assert "\n" not in message


@pytest.mark.parametrize("case", [pytest.param(cases[0], id=name) for name, cases in CASES.items() if cases])
def test_add_param_group_validates_the_new_group(case: OptimCase) -> None:
    """Every rule checks a group added later as its constructor does, and does not add it."""
    params = make_params(0)
    opt = case.build(params[0])
    with pytest.raises(ValueError, match="learning rate") as info:
        opt.add_param_group({"params": params[1], "lr": -1.0})
    assert "\n" not in str(info.value)
    assert len(opt.param_groups) == 1
