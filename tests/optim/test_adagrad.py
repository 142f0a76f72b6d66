"""ClipAdaGrad: bitwise equality with torch.optim.Adagrad, float64 reference math for every
clipping mode x norm x delay on heavy-tailed gradients, the delayed rule, validation."""

from __future__ import annotations

import math
from typing import Any

import optim_fixtures as fixtures
import pytest
import torch
from cases import OptimCase, case
from optim_fixtures import flat_lists, param_groups, set_grads

from tailclip.clip import AutoClip, ZClip
from tailclip.optim import OPTIMIZERS, ClipAdaGrad

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("clip_adagrad", label, coupled_decay=True, **kwargs)


BATTERY_CASES = [
    _case("adagrad", lr=0.1),
    _case("global", lr=0.1, clip="global", max_norm=1.0),
    _case("coord", lr=0.1, clip="coord", max_norm=0.5),
    _case("norm-layer", lr=0.1, norm=True, clip="layer", max_norm=0.5),
    _case("delay-global", lr=0.1, delay=True, b0=1.0, clip="global", max_norm=1.0),
    _case("norm-delay-coord", lr=0.1, norm=True, delay=True, b0=0.5, clip="coord", max_norm=0.5),
    _case("weight-decay", lr=0.1, clip="global", max_norm=1.0, weight_decay=0.01),
    _case("autoclip", lr=0.1, clip="global", max_norm=AutoClip(percentile=50.0)),
    _case("zclip-norm", lr=0.1, norm=True, clip="global", max_norm=ZClip(warmup=3)),
    _case("lr-decay-maximize", lr=0.1, clip="global", max_norm=1.0, lr_decay=0.1, maximize=True,
          initial_accumulator_value=0.1),
    _case("fused-layer", lr=0.1, clip="layer", max_norm=0.5, weight_decay=0.01, fused=True),
]
INVALID_COMBINATIONS = [
    ({"delay": True, "b0": 0.0}, "b0"),
    ({"fused": True, "norm": True}, "fused"),
    ({"b0": 0.5, "initial_accumulator_value": 0.1}, "initial_accumulator_value"),
    ({"eps": 0.0}, "eps"),
    ({"clip": "coord", "max_norm": ZClip()}, "max_norm"),
]
VECTORIZED_CASES = [
    {"lr": 0.5, "clip": None, "norm": True, "b0": 3.0},
    {"lr": 0.5, "clip": "global", "max_norm": 0.5, "norm": True, "delay": True, "b0": 3.0},
    {"lr": 0.5, "clip": "layer", "max_norm": 0.5, "weight_decay": 0.05},
    {"lr": 0.5, "clip": "coord", "max_norm": 0.5, "delay": True, "b0": 1.0},
]

SHAPES = [[(4, 3), (5,)], [(2, 2, 2)]]  # two param groups
STEPS = 32
TAUS = {None: 1.0, "global": 12.0, "layer": 8.0, "coord": 6.0}


def initial_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.initial_params(SHAPES, dtype)


def student_t_noise(dtype: torch.dtype, seed: int = 1) -> list[list[list[torch.Tensor]]]:
    return fixtures.torch_student_t(SHAPES, STEPS, dtype, seed)


def make_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.make_params(SHAPES, dtype)


# ---------------------------------------------------------------- torch.optim.Adagrad parity


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b0", [0.0, 0.7])
@pytest.mark.parametrize(
    "group_options",
    [
        [{}, {"lr": 0.03}],
        [{"weight_decay": 0.05}, {"lr": 0.03, "weight_decay": 0.2}],
    ],
    ids=["no_wd", "wd"],
)
def test_bitwise_equal_to_torch_adagrad(foreach, dtype, b0, group_options):
    noise = student_t_noise(dtype)
    ours_params, torch_params = make_params(dtype), make_params(dtype)
    ours = ClipAdaGrad(param_groups(ours_params, group_options), lr=0.1, b0=b0, eps=1e-10, foreach=foreach)
    reference = torch.optim.Adagrad(
        param_groups(torch_params, group_options), lr=0.1, initial_accumulator_value=b0**2,
        eps=1e-10, foreach=foreach,
    )
    for t in range(STEPS):
        set_grads(ours_params, noise[t])
        set_grads(torch_params, noise[t])
        ours.step()
        reference.step()
        for p, q in zip(sum(ours_params, []), sum(torch_params, []), strict=True):
            assert torch.equal(p, q), f"step {t}"
    for p, q in zip(sum(ours_params, []), sum(torch_params, []), strict=True):
        assert torch.equal(ours.state[p]["sum"], reference.state[q]["sum"])
        assert ours.state[p]["step"].dtype == torch.float32
        assert torch.equal(ours.state[p]["step"], reference.state[q]["step"])
    # The parameters moved: the equality above is not between two untouched copies.
    assert not torch.equal(ours_params[0][0], initial_params(dtype)[0][0])


# ---------------------------------------------------------------- float64 reference math


def reference_adagrad(
    lr: float, group_wd: list[float], clip, tau: float, norm: bool, delay: bool, b0: float, eps: float
) -> tuple[list[list[list[float]]], list]:
    """Plain-loop float64 ClipAdaGrad on g = x + xi; returns final x and accumulators b^2.

    Model-wide: global clipping by the norm over both groups, and with ``norm`` one scalar b^2
    fed with the norm of both groups' clipped gradients."""
    x = flat_lists(initial_params(torch.float64))
    noise = [flat_lists(step) for step in student_t_noise(torch.float64)]
    if norm:
        acc = b0 * b0
    else:
        acc = [[[b0 * b0] * len(p) for p in group] for group in x]
    for t in range(STEPS):
        gs = [
            [[xj + nj + group_wd[gi] * xj for xj, nj in zip(p, n, strict=True)]
             for p, n in zip(group, noise[t][gi], strict=True)]
            for gi, group in enumerate(x)
        ]
        total = math.sqrt(sum(v * v for g in gs for gk in g for v in gk))
        us = []
        for g in gs:
            if clip == "global":
                factor = min(1.0, tau / total) if total > 0 else 1.0
                u = [[v * factor for v in gk] for gk in g]
            elif clip == "layer":
                u = []
                for gk in g:
                    layer_norm = math.sqrt(sum(v * v for v in gk))
                    factor = min(1.0, tau / layer_norm) if layer_norm > 0 else 1.0
                    u.append([v * factor for v in gk])
            elif clip == "coord":
                u = [[max(-tau, min(tau, v)) for v in gk] for gk in g]
            else:
                u = g
            us.append(u)
        if norm:
            b_prev = math.sqrt(acc)
            acc += sum(v * v for u in us for uk in u for v in uk)
            b = b_prev if delay else math.sqrt(acc)
        for gi, (group, u) in enumerate(zip(x, us, strict=True)):
            if norm:
                for pk, uk in zip(group, u, strict=True):
                    for j in range(len(pk)):
                        pk[j] -= lr * uk[j] / (b + eps)
            else:
                for k, (pk, uk) in enumerate(zip(group, u, strict=True)):
                    for j in range(len(pk)):
                        b_prev = math.sqrt(acc[gi][k][j])
                        acc[gi][k][j] += uk[j] * uk[j]
                        b = b_prev if delay else math.sqrt(acc[gi][k][j])
                        pk[j] -= lr * uk[j] / (b + eps)
    return x, acc


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("delay", [False, True])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("clip", [None, "global", "layer", "coord"])
def test_matches_float64_reference(clip, norm, delay, foreach):
    lr, eps, group_wd = 0.1, 1e-3, [0.0, 0.05]
    b0 = 0.5 if delay else 0.0
    tau = TAUS[clip]
    noise = student_t_noise(torch.float64)
    params = make_params(torch.float64)
    opt = ClipAdaGrad(
        param_groups(params, [{"weight_decay": wd} for wd in group_wd]),
        lr=lr, norm=norm, delay=delay, clip=clip, max_norm=tau, b0=b0, eps=eps, foreach=foreach,
    )
    clipped_steps = 0
    for t in range(STEPS):
        set_grads(params, noise[t])
        opt.step()
        clipped_steps += sum(int(stats.clipped) for stats in opt.group_stats)
    x_ref, acc_ref = reference_adagrad(lr, group_wd, clip, tau, norm, delay, b0, eps)
    for group, group_ref in zip(params, x_ref, strict=True):
        for p, p_ref in zip(group, group_ref, strict=True):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(p_ref, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-12)
    if norm:
        acc = opt.state[params[0][0]]["norm_sq_sum"]
        torch.testing.assert_close(acc, torch.tensor(acc_ref, dtype=torch.float64), rtol=1e-7, atol=0)
        assert "norm_sq_sum" not in opt.state[params[1][0]]
    else:
        for gi, group in enumerate(params):
            for p, acc_p in zip(group, acc_ref[gi], strict=True):
                expected = torch.tensor(acc_p, dtype=torch.float64)
                torch.testing.assert_close(opt.state[p]["sum"].flatten(), expected, rtol=1e-7, atol=0)
    # The thresholds make clipping bite on some group-steps but not on all.
    if clip is None:
        assert clipped_steps == 0
    else:
        assert 0 < clipped_steps < len(SHAPES) * STEPS


# ---------------------------------------------------------------- the delayed rule


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("norm", [False, True])
def test_delayed_steps_along_current_gradient_with_previous_accumulator(norm, foreach):
    """b0 = 1, g_1 = 3, g_2 = -5, lr = 1, eps = 0.

    Delayed (tailclip):  x_1 = x_0 - 3 / 1,          x_2 = x_1 + 5 / sqrt(1 + 9).
    Stepping along the previous gradient (the reference-code bug) would give x_1 = x_0 and
    x_2 = x_1 - 3 / sqrt(10); the non-delayed rule x_1 = x_0 - 3 / sqrt(10).
    """
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = ClipAdaGrad([x], lr=1.0, norm=norm, delay=True, b0=1.0, eps=0.0, foreach=foreach)
    x.grad = torch.tensor([3.0], dtype=torch.float64)
    opt.step()
    assert x.item() == pytest.approx(2.0 - 3.0, rel=1e-15)
    x.grad = torch.tensor([-5.0], dtype=torch.float64)
    opt.step()
    expected = 2.0 - 3.0 + 5.0 / math.sqrt(10.0)
    buggy = 2.0 - 3.0 / math.sqrt(10.0)
    not_delayed = 2.0 - 3.0 / math.sqrt(10.0) + 5.0 / math.sqrt(35.0)
    assert x.item() == pytest.approx(expected, rel=1e-14)
    assert abs(expected - buggy) > 0.4 and abs(expected - not_delayed) > 0.4
    state = opt.state[x]["norm_sq_sum" if norm else "sum"]
    assert state.flatten().tolist() == pytest.approx([35.0], rel=1e-15)


def test_delayed_first_step_does_not_depend_on_gradient_size():
    """Delayed: the step size lr / (b_0 + eps) is fixed before the sample is seen."""
    for g in (1e-3, 1.0, 1e3):
        x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = ClipAdaGrad([x], lr=0.5, delay=True, b0=2.0, eps=0.0)
        x.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert x.item() == pytest.approx(-0.5 * g / 2.0, rel=1e-15)


# ---------------------------------------------------------------- AdaGrad-Norm state


def test_norm_state_lives_once_in_first_param_of_group():
    """With clip="group" each group keeps its own scalar, in its first parameter's state (the
    model-wide scalar of clip="global": test_model_wide.py)."""
    params = make_params(torch.float32)
    opt = ClipAdaGrad(param_groups(params, [{}, {}]), lr=0.1, norm=True, b0=0.5, clip="group", max_norm=2.0)
    params[0][0].grad = None  # the group's first parameter has no gradient this step
    params[0][1].grad = torch.full((5,), 3.0)
    params[1][0].grad = torch.ones(2, 2, 2)
    opt.step()
    first, second = params[0]
    assert set(opt.state[first]) == {"norm_sq_sum"}
    assert set(opt.state[second]) == {"step"}
    # group 0: u = g * 2 / ||g|| with ||g|| = 3 sqrt(5): b^2 = 0.25 + 4
    assert opt.state[first]["norm_sq_sum"].item() == pytest.approx(4.25, rel=1e-6)
    # group 1: ||g|| = sqrt(8) > 2, so clipped to norm 2 as well
    assert opt.state[params[1][0]]["norm_sq_sum"].item() == pytest.approx(4.25, rel=1e-6)
    saved = opt.state_dict()["state"]
    assert sum("norm_sq_sum" in s for s in saved.values()) == 2


def test_threshold_policy_as_max_norm():
    """An AutoClip policy (100th percentile = the largest norm so far) never clips the first step."""
    x = torch.zeros(3, requires_grad=True)
    opt = ClipAdaGrad([x], lr=1.0, norm=True, clip="global", max_norm=AutoClip(percentile=100.0))
    x.grad = torch.tensor([3.0, 0.0, 4.0])
    opt.step()
    assert not bool(opt.step_stats.clipped)
    torch.testing.assert_close(x.detach(), torch.tensor([-0.6, 0.0, -0.8]))


# ---------------------------------------------------------------- foreach == loop


@pytest.mark.parametrize("delay", [False, True])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("clip", [None, "global", "layer", "coord"])
def test_foreach_matches_loop(clip, norm, delay):
    noise = student_t_noise(torch.float32)
    runs = []
    for foreach in (True, False):
        params = make_params(torch.float32)
        opt = ClipAdaGrad(
            param_groups(params, [{}, {"weight_decay": 0.1}]), lr=0.05, norm=norm, delay=delay,
            clip=clip, max_norm=TAUS[clip], b0=0.5, foreach=foreach,
        )
        norms = []
        for t in range(STEPS):
            set_grads(params, noise[t])
            opt.step()
            norms.append(torch.stack([opt.step_stats.grad_norm, opt.step_stats.clipped_norm]))
        runs.append((sum(params, []), torch.stack(norms)))
    (params_a, norms_a), (params_b, norms_b) = runs
    for p, q in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norms_a, norms_b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -0.1}, "learning rate"),
        ({"norm": "yes"}, "norm"),
        ({"delay": 1}, "delay"),
        ({"clip": "norm"}, "clip"),
        ({"clip": "global", "max_norm": 0.0}, "max_norm"),
        ({"clip": "layer", "max_norm": AutoClip()}, "max_norm"),
        ({"b0": -1.0}, "b0"),
        ({"delay": True, "b0": 0.0}, "b0"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        ClipAdaGrad([torch.zeros(2, requires_grad=True)], **{"lr": 0.1, **kwargs})


def test_registered():
    assert OPTIMIZERS["clip_adagrad"] is ClipAdaGrad
