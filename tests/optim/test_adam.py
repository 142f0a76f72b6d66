"""ClipAdam: bitwise equality with torch.optim.AdamW, float64 reference math for every
clipping mode x norm x delay on heavy-tailed gradients, foreach == loop, the fused path,
the delayed rule, Adam-Norm's group state, validation specific to ClipAdam."""

from __future__ import annotations

import copy
import math
from typing import Any

import optim_fixtures as fixtures
import pytest
import torch
from cases import OptimCase, case
from optim_fixtures import flat, param_groups

from tailclip.clip import AutoClip, ZClip
from tailclip.optim import OPTIMIZERS, ClipAdam
from tailclip.optim.adam import GROUP_EXP_AVG_SQ, GROUP_STEP

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("clip_adam", label, **kwargs)


BATTERY_CASES = [
    _case("adamw", lr=1e-2),
    _case("global", lr=1e-2, clip="global", max_norm=1.0),
    _case("coord", lr=1e-2, clip="coord", max_norm=0.5),
    _case("norm-layer", lr=1e-2, norm=True, clip="layer", max_norm=0.5),
    _case("delay-global", lr=1e-2, delay=True, v0=1e-2, clip="global", max_norm=1.0),
    _case("norm-delay", lr=1e-2, norm=True, delay=True, v0=0.1, clip="global", max_norm=1.0),
    _case("weight-decay", lr=1e-2, betas=(0.8, 0.99), clip="global", weight_decay=0.1),
    _case("autoclip", lr=1e-2, clip="global", max_norm=AutoClip(percentile=50.0)),
    _case("zclip-norm", lr=1e-2, norm=True, clip="global", max_norm=ZClip(warmup=3)),
    _case("fused-global", lr=1e-2, clip="global", max_norm=1.0, weight_decay=0.01, fused=True,
          writes_grad=True),
    _case("fused-layer", lr=1e-2, clip="layer", max_norm=0.5, fused=True),
    _case("amsgrad-maximize", lr=1e-2, clip="global", max_norm=1.0, amsgrad=True, maximize=True,
          weight_decay=0.01),
    _case("fused-amsgrad", lr=1e-2, clip="coord", max_norm=0.5, amsgrad=True, fused=True),
]
INVALID_COMBINATIONS = [
    ({"delay": True, "v0": 0.0}, "v0"),
    ({"clip": None, "max_norm": AutoClip()}, "max_norm"),
    ({"fused": True, "norm": True}, "fused"),
    ({"fused": True, "delay": True, "v0": 0.1}, "fused"),
    ({"amsgrad": True, "norm": True}, "amsgrad"),
    ({"capturable": True, "delay": True, "v0": 0.1}, "capturable"),
    ({"eps": 0.0}, "eps"),
]
VECTORIZED_CASES = [
    {"lr": 0.05, "clip": None},
    {"lr": 0.05, "clip": "global", "max_norm": 0.5, "weight_decay": 0.01},
    {"lr": 0.05, "clip": "global", "max_norm": 0.5, "norm": True},
    {"lr": 0.05, "clip": "coord", "max_norm": 0.5, "norm": True, "delay": True, "v0": 9.0},
    {"lr": 0.05, "clip": None, "delay": True, "v0": 1.0},
]

SHAPES = [[(4, 3), (5,)], [(2, 2, 2)]]  # two param groups
STEPS = 36
BETAS = (0.9, 0.99)
# Thresholds at which clipping bites on some group-steps of the Student-t stream, not all.
TAUS = {None: 1.0, "global": 12.0, "layer": 4.0, "coord": 6.0}
CLIPS = [None, "global", "layer", "coord"]


def initial_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.initial_params(SHAPES, dtype)


def student_t_noise(dtype: torch.dtype, seed: int = 3) -> list[list[list[torch.Tensor]]]:
    return fixtures.numpy_student_t(SHAPES, STEPS, dtype, seed)


def make_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.make_params(SHAPES, dtype)


def set_grads(params: list[list[torch.Tensor]], noise_t: list[list[torch.Tensor]]) -> None:
    """g = x + xi (gradient of ||x||^2 / 2 plus heavy-tailed noise), written INTO ``p.grad``.

    Overwriting the same grad tensor in place makes any optimizer that keeps a reference to
    ``p.grad`` instead of a copy (a defect of the reference code's delayed Adam) see the wrong
    gradient, so the reference comparisons below would catch it.
    """
    for group, group_noise in zip(params, noise_t, strict=True):
        for p, xi in zip(group, group_noise, strict=True):
            g = p.detach() + xi
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)


# ---------------------------------------------------------------- torch.optim.AdamW parity


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "group_options",
    [
        [{"weight_decay": 0.05}, {"lr": 3e-3, "weight_decay": 0.2}],
        [{"weight_decay": 0.1, "betas": (0.8, 0.95)}, {"lr": 2e-2, "weight_decay": 0.0, "eps": 1e-6}],
    ],
    ids=["lr-wd", "betas-eps"],
)
def test_bitwise_equal_to_torch_adamw(foreach, dtype, group_options):
    noise = student_t_noise(dtype)
    ours_params, torch_params = make_params(dtype), make_params(dtype)
    ours = ClipAdam(param_groups(ours_params, group_options), lr=1e-2, betas=BETAS, foreach=foreach)
    reference = torch.optim.AdamW(
        param_groups(torch_params, group_options), lr=1e-2, betas=BETAS, foreach=foreach
    )
    for t in range(STEPS):
        set_grads(ours_params, noise[t])
        set_grads(torch_params, noise[t])
        ours.step()
        reference.step()
        for p, q in zip(flat(ours_params), flat(torch_params), strict=True):
            assert torch.equal(p, q), f"step {t}"
    for p, q in zip(sum(ours_params, []), sum(torch_params, []), strict=True):
        assert set(ours.state[p]) == set(reference.state[q]) == {"step", "exp_avg", "exp_avg_sq"}
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours.state[p][key], reference.state[q][key]), key
        step = ours.state[p]["step"]
        assert step.dtype == torch.float32 and step.device.type == "cpu" and step.dim() == 0
        assert torch.equal(step, reference.state[q]["step"])
    # The parameters moved: the equality above is not between two untouched copies.
    assert not torch.equal(ours_params[0][0], initial_params(dtype)[0][0])


def test_registered_under_clip_adam():
    assert OPTIMIZERS["clip_adam"] is ClipAdam


# ---------------------------------------------------------------- float64 reference math


def reference_clip_adam(
    group_options: list[dict], clip, tau: float, norm: bool, delay: bool, v0: float, eps: float
) -> tuple[list, list, list, list]:
    """Plain-loop float64 ClipAdam on g = x + xi, written from the contract in papers.md.

    Returns final x, m, v (per coordinate, or with ``norm`` one model-wide float) and, per
    step and group, the group's norms (||g_t||, ||u_t||). Global clipping divides by the norm
    over both groups, and Adam-Norm's v takes the squared norm of both groups' u_t.
    """
    b1, b2 = BETAS
    x = [[p.flatten().tolist() for p in group] for group in initial_params(torch.float64)]
    noise = [[[n.flatten().tolist() for n in group] for group in step]
             for step in student_t_noise(torch.float64)]
    m = [[[0.0] * len(p) for p in group] for group in x]
    v = v0 if norm else [[[v0] * len(p) for p in group] for group in x]
    norms = []
    for t in range(1, STEPS + 1):
        step_norms = []
        gs = [
            [[xj + nj for xj, nj in zip(p, n, strict=True)]
             for p, n in zip(group, noise[t - 1][gi], strict=True)]
            for gi, group in enumerate(x)
        ]
        model_norm = math.sqrt(sum(c * c for g in gs for gk in g for c in gk))
        us = []
        for g in gs:
            grad_norm = math.sqrt(sum(c * c for gk in g for c in gk))
            if clip == "global":
                factor = min(1.0, tau / model_norm) if model_norm > 0 else 1.0
                u = [[c * factor for c in gk] for gk in g]
            elif clip == "layer":
                u = []
                for gk in g:
                    layer_norm = math.sqrt(sum(c * c for c in gk))
                    factor = min(1.0, tau / layer_norm) if layer_norm > 0 else 1.0
                    u.append([c * factor for c in gk])
            elif clip == "coord":
                u = [[max(-tau, min(tau, c)) for c in gk] for gk in g]
            else:
                u = g
            us.append(u)
            step_norms.append((grad_norm, math.sqrt(sum(c * c for uk in u for c in uk))))
        if norm:
            v_prev = v
            v = b2 * v_prev + (1 - b2) * sum(c * c for u in us for uk in u for c in uk)
        for gi, (group, u) in enumerate(zip(x, us, strict=True)):
            lr, wd = group_options[gi]["lr"], group_options[gi]["weight_decay"]
            for k, (pk, uk) in enumerate(zip(group, u, strict=True)):
                for j in range(len(pk)):
                    m[gi][k][j] = b1 * m[gi][k][j] + (1 - b1) * uk[j]
                    if norm:
                        v_old, v_new = v_prev, v
                    else:
                        v_old = v[gi][k][j]
                        v_new = v[gi][k][j] = b2 * v_old + (1 - b2) * uk[j] * uk[j]
                    pk[j] *= 1 - lr * wd
                    if delay:
                        pk[j] -= lr * m[gi][k][j] / (math.sqrt(v_old) + eps)
                    else:
                        m_hat = m[gi][k][j] / (1 - b1**t)
                        v_hat = v_new / (1 - b2**t)
                        pk[j] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        norms.append(step_norms)
    return x, m, v, norms


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
@pytest.mark.parametrize(("delay", "v0"), [(False, 0.0), (False, 0.3), (True, 0.3)],
                         ids=["adam", "adam-v0", "delayed"])
@pytest.mark.parametrize("norm", [False, True], ids=["coordinate", "norm"])
@pytest.mark.parametrize("clip", CLIPS, ids=str)
def test_matches_float64_reference(clip, norm, delay, v0, foreach):
    eps = 1e-8
    tau = TAUS[clip]
    group_options = [{"lr": 0.05, "weight_decay": 0.1}, {"lr": 0.02, "weight_decay": 0.0}]
    noise = student_t_noise(torch.float64)
    params = make_params(torch.float64)
    opt = ClipAdam(
        param_groups(params, group_options), betas=BETAS, eps=eps, norm=norm, delay=delay,
        clip=clip, max_norm=tau, v0=v0, foreach=foreach,
    )
    x_ref, m_ref, v_ref, norms_ref = reference_clip_adam(group_options, clip, tau, norm, delay, v0, eps)
    clipped_steps = 0
    for t in range(STEPS):
        set_grads(params, noise[t])
        opt.step()
        for stats, (grad_norm, update_norm) in zip(opt.group_stats, norms_ref[t], strict=True):
            assert stats.grad_norm.item() == pytest.approx(grad_norm, rel=1e-12)
            assert stats.clipped_norm.item() == pytest.approx(update_norm, rel=1e-12)
            if clip == "global":
                assert stats.clipped_norm.item() <= tau * (1 + 1e-6)
            clipped_steps += int(stats.clipped)
    for gi, group in enumerate(params):
        for k, p in enumerate(group):
            expected = torch.tensor(x_ref[gi][k], dtype=torch.float64)
            torch.testing.assert_close(p.detach().flatten(), expected, rtol=1e-7, atol=1e-12)
            expected_m = torch.tensor(m_ref[gi][k], dtype=torch.float64)
            torch.testing.assert_close(opt.state[p]["exp_avg"].flatten(), expected_m, rtol=1e-7, atol=1e-12)
            if not norm:
                expected_v = torch.tensor(v_ref[gi][k], dtype=torch.float64)
                actual_v = opt.state[p]["exp_avg_sq"].flatten()
                torch.testing.assert_close(actual_v, expected_v, rtol=1e-7, atol=0)
    if norm:
        model_v = opt.state[params[0][0]][GROUP_EXP_AVG_SQ]
        assert model_v.dim() == 0 and model_v.dtype == torch.float64
        assert model_v.item() == pytest.approx(v_ref, rel=1e-7)
        assert GROUP_EXP_AVG_SQ not in opt.state[params[1][0]]
    # The thresholds make clipping bite on some group-steps but not on all.
    if clip is None:
        assert clipped_steps == 0
    else:
        assert 0 < clipped_steps < len(SHAPES) * STEPS


# ---------------------------------------------------------------- foreach == loop


def run(dtype: torch.dtype, steps: int = STEPS, **kwargs) -> tuple[list[list[torch.Tensor]], ClipAdam]:
    noise = student_t_noise(dtype)
    params = make_params(dtype)
    group_options = [{"weight_decay": 0.1}, {"lr": 0.02}]
    opt = ClipAdam(param_groups(params, group_options), lr=0.05, betas=BETAS, **kwargs)
    for t in range(steps):
        set_grads(params, noise[t])
        opt.step()
    return params, opt


@pytest.mark.parametrize("delay", [False, True], ids=["adam", "delayed"])
@pytest.mark.parametrize("norm", [False, True], ids=["coordinate", "norm"])
@pytest.mark.parametrize("clip", CLIPS, ids=str)
def test_foreach_matches_loop(clip, norm, delay):
    kwargs = dict(norm=norm, delay=delay, clip=clip, max_norm=TAUS[clip], v0=0.3 if delay else 0.0)
    fe_params, fe = run(torch.float32, foreach=True, **kwargs)
    lp_params, lp = run(torch.float32, foreach=False, **kwargs)
    for p, q in zip(flat(fe_params), flat(lp_params), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(sum(fe_params, []), sum(lp_params, []), strict=True):
        assert fe.state[p].keys() == lp.state[q].keys()
        for key in fe.state[p]:
            torch.testing.assert_close(fe.state[p][key], lp.state[q][key], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("clip", CLIPS + ["autoclip"], ids=str)
def test_fused_matches_foreach(clip, dtype):
    def kwargs():
        if clip == "autoclip":
            return dict(clip="global", max_norm=AutoClip(percentile=50.0))
        return dict(clip=clip, max_norm=TAUS[clip])

    fused_params, fused = run(dtype, fused=True, **kwargs())
    fe_params, fe = run(dtype, foreach=True, **kwargs())
    # The fused global clip factor passes through a float32 grad_scale (relative error ~6e-8;
    # AutoClip clips at most steps of the model-wide norm, and its errors add up to ~1e-6).
    close = dtype == torch.float32 or clip == "autoclip"
    tol = dict(rtol=1e-6, atol=1e-7) if close else dict(rtol=1e-7, atol=1e-8)
    for p, q in zip(flat(fused_params), flat(fe_params), strict=True):
        torch.testing.assert_close(p, q, **tol)
    for p, q in zip(sum(fused_params, []), sum(fe_params, []), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fused.state[p][key], fe.state[q][key], **tol)
        step = fused.state[p]["step"]
        assert step.dtype == torch.float32 and step.device == p.device and step.item() == STEPS
    for a, b in zip(fused.group_stats, fe.group_stats, strict=True):
        torch.testing.assert_close(a.grad_norm, b.grad_norm, rtol=1e-6, atol=0)
        torch.testing.assert_close(a.clipped_norm, b.clipped_norm, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_global_clip_equals_clip_grad_norm_then_fused_adamw(dtype):
    """``grad_scale = max(1, ||g|| / tau)`` folds ``clip_grad_norm_`` into the fused kernel.

    Afterwards ``.grad`` holds the clipped gradient in both (the kernel writes it back).
    """
    tau = TAUS["global"]
    noise = student_t_noise(dtype)
    ours_params, torch_params = make_params(dtype), make_params(dtype)
    group_options = [{"weight_decay": 0.05}, {"lr": 3e-3, "weight_decay": 0.2}]
    ours = ClipAdam(param_groups(ours_params, group_options), lr=1e-2, betas=BETAS, clip="global",
                    max_norm=tau, fused=True)
    # One clip_grad_norm_ over every parameter: ClipAdam's global norm is model-wide.
    reference = torch.optim.AdamW(param_groups(torch_params, group_options), lr=1e-2, betas=BETAS, fused=True)
    clipped = 0
    for t in range(STEPS):
        set_grads(ours_params, noise[t])
        set_grads(torch_params, noise[t])
        ours.step()
        clipped += int(torch.nn.utils.clip_grad_norm_(sum(torch_params, []), tau) > tau)
        reference.step()
    assert 0 < clipped < STEPS
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-7, atol=1e-10)
    for p, q in zip(sum(ours_params, []), sum(torch_params, []), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), **tol)
        torch.testing.assert_close(p.grad, q.grad, **tol)


def test_fused_bfloat16_tracks_float32():
    """bfloat16 fused run from a bfloat16-representable start and stream: close to float32."""
    p16 = [[p.to(torch.bfloat16).requires_grad_() for p in group] for group in initial_params(torch.float32)]
    p32 = [[p.detach().float().requires_grad_() for p in group] for group in p16]
    start = torch.cat([p.detach().flatten() for p in flat(p32)])
    noise = [[[n.to(torch.bfloat16) for n in group] for group in step]
             for step in student_t_noise(torch.float32)]
    kwargs = dict(lr=0.05, betas=BETAS, clip="global", max_norm=TAUS["global"], weight_decay=0.1, fused=True)
    opt16 = ClipAdam(param_groups(p16, [{}, {}]), **kwargs)
    opt32 = ClipAdam(param_groups(p32, [{}, {}]), **kwargs)
    for t in range(STEPS):
        for params, opt in ((p16, opt16), (p32, opt32)):
            for group, group_noise in zip(params, noise[t], strict=True):
                for p, xi in zip(group, group_noise, strict=True):
                    p.grad = (p.detach().float().to(torch.bfloat16) + xi).to(p.dtype)
            opt.step()
    x16 = torch.cat([p.detach().float().flatten() for p in flat(p16)])
    x32 = torch.cat([p.detach().flatten() for p in flat(p32)])
    travelled = torch.linalg.vector_norm(x32 - start)
    assert travelled > 0.5
    assert torch.linalg.vector_norm(x16 - x32) <= 0.05 * travelled
    for p in sum(p16, []):
        assert p.dtype == torch.bfloat16 and opt16.state[p]["exp_avg_sq"].dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs", [dict(norm=True), dict(delay=True, v0=0.1)], ids=["norm", "delay"])
def test_fused_rejects_norm_and_delay(kwargs):
    with pytest.raises(ValueError, match="fused"):
        ClipAdam([torch.zeros(2, requires_grad=True)], fused=True, **kwargs)


# ---------------------------------------------------------------- the delayed rule, no grad references


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
@pytest.mark.parametrize("norm", [False, True], ids=["coordinate", "norm"])
def test_delayed_step_uses_previous_second_moment(norm, foreach):
    """v0 = 1, b1 = 0.5, b2 = 0.75, lr = 1, eps = 0, g_1 = 2, g_2 = -4 (one coordinate).

    m_1 = 1, x_1 = x_0 - 1 / sqrt(1); v_1 = 0.75 + 0.25 * 4 = 1.75;
    m_2 = 0.5 - 2 = -1.5, x_2 = x_1 + 1.5 / sqrt(1.75). No bias correction.
    """
    x = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    opt = ClipAdam([x], lr=1.0, betas=(0.5, 0.75), eps=0.0, norm=norm, delay=True, v0=1.0, foreach=foreach)
    x.grad = torch.tensor([2.0], dtype=torch.float64)
    opt.step()
    assert x.item() == pytest.approx(2.0, rel=1e-15)
    x.grad.copy_(torch.tensor([-4.0], dtype=torch.float64))
    opt.step()
    assert x.item() == pytest.approx(2.0 + 1.5 / math.sqrt(1.75), rel=1e-14)


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("delay", [False, True], ids=["adam", "delayed"])
def test_state_holds_copies_not_grad_references(delay, fused):
    if fused and delay:
        return
    params = make_params(torch.float32)
    opt = ClipAdam(
        param_groups(params, [{}, {}]), delay=delay, v0=0.3, clip="layer", max_norm=4.0, fused=fused
    )
    set_grads(params, student_t_noise(torch.float32)[0])
    opt.step()
    for p in sum(params, []):
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor) and value.numel():
                assert value.untyped_storage().data_ptr() != p.grad.untyped_storage().data_ptr(), key


# ---------------------------------------------------------------- Adam-Norm's group state


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
def test_norm_state_lives_in_first_parameter_of_each_group(foreach):
    """With clip="group" each group keeps its own v (the model-wide v: test_model_wide.py)."""
    params = make_params(torch.float32)
    opt = ClipAdam(
        param_groups(params, [{}, {"lr": 0.02}]), betas=BETAS, norm=True, clip="group", max_norm=6.0,
        foreach=foreach,
    )
    noise = student_t_noise(torch.float32)
    for t in range(3):
        set_grads(params, noise[t])
        opt.step()
    for group in params:
        first = opt.state[group[0]]
        assert first[GROUP_EXP_AVG_SQ].dim() == 0 and first[GROUP_EXP_AVG_SQ].dtype == torch.float32
        assert first[GROUP_STEP].item() == 3 and first[GROUP_STEP].device.type == "cpu"
        for p in group:
            assert "exp_avg_sq" not in opt.state[p]
            assert GROUP_EXP_AVG_SQ not in opt.state[p] or p is group[0]
    # The first parameter of group 0 gets no gradient: the group's v still takes ||u_t||^2.
    first = params[0][0]
    v_before = opt.state[first][GROUP_EXP_AVG_SQ].clone()
    first_before = first.detach().clone()
    set_grads(params, noise[3])
    first.grad = None
    opt.step()
    rest = torch.cat([p.grad.flatten() for p in params[0][1:]])
    u_norm = min(torch.linalg.vector_norm(rest).item(), 6.0)
    expected_v = BETAS[1] * v_before.item() + (1 - BETAS[1]) * u_norm**2
    assert opt.state[first][GROUP_EXP_AVG_SQ].item() == pytest.approx(expected_v, rel=1e-6)
    assert opt.state[first][GROUP_STEP].item() == 4
    assert torch.equal(first.detach(), first_before)


def test_norm_state_keeps_float32_through_state_dict_in_bfloat16_group():
    """torch.optim casts floating state to the parameter's dtype on load; the scalar v must not."""
    params = [[p.to(torch.bfloat16).requires_grad_() for p in group]
              for group in initial_params(torch.float32)]
    kwargs = dict(norm=True, delay=True, v0=0.3, clip="coord", max_norm=2.0)
    opt = ClipAdam(param_groups(params, [{}, {}]), **kwargs)  # one model-wide v, in group 0
    noise = student_t_noise(torch.float32)
    for t in range(4):
        set_grads(params, [[n.to(torch.bfloat16) for n in group] for group in noise[t]])
        opt.step()
    resumed = ClipAdam(param_groups(params, [{}, {}]), **kwargs)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for group in params[:1]:
        saved, loaded = opt.state[group[0]], resumed.state[group[0]]
        assert loaded[GROUP_EXP_AVG_SQ].dtype == torch.float32
        assert torch.equal(loaded[GROUP_EXP_AVG_SQ], saved[GROUP_EXP_AVG_SQ])
        assert loaded[GROUP_EXP_AVG_SQ] is not saved[GROUP_EXP_AVG_SQ]
        assert loaded[GROUP_STEP].device.type == "cpu" and torch.equal(loaded[GROUP_STEP], saved[GROUP_STEP])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("v0", [0.0, -1.0])
def test_delay_needs_positive_v0(v0):
    with pytest.raises(ValueError, match="v0"):
        ClipAdam([torch.zeros(2, requires_grad=True)], delay=True, v0=v0)


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (1.0, 0.99)}, "beta"),
        ({"betas": (0.9, -0.1)}, "beta"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"delay": True}, "v0"),
        ({"norm": True, "fused": True}, "fused"),
    ],
    ids=str,
)
def test_invalid_hyperparameters_raise_in_constructor_and_param_group(override, name):
    """One-line ValueError naming the argument, also when a param group overrides a default."""
    with pytest.raises(ValueError, match=name) as info:
        ClipAdam([torch.zeros(2, requires_grad=True)], **override)
    assert "\n" not in str(info.value)
    groups = [
        {"params": [torch.zeros(2, requires_grad=True)]},
        {"params": [torch.zeros(3, requires_grad=True)], **override},
    ]
    with pytest.raises(ValueError, match=name):
        ClipAdam(groups)
