"""ClipSGD: bitwise torch.optim.SGD without clipping, float64 reference loops for every clipping mode
and target on Student-t (1.5 dof) gradients, foreach == loop, adaptive policies, argument checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from cases import OptimCase, case
from torch import nn

from tailclip.clip import AutoClip, ZClip
from tailclip.optim import ClipSGD

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("clip_sgd", label, coupled_decay=True, default_clip="global", **kwargs)


BATTERY_CASES = [
    _case("global", lr=0.1, clip="global", max_norm=1.0),
    _case("layer-momentum", lr=0.1, momentum=0.9, clip="layer", max_norm=0.5),
    _case("coord-momentum", lr=0.1, momentum=0.9, clip="coord", max_norm=0.3),
    _case("noclip-momentum", lr=0.1, momentum=0.9, clip=None),
    _case("momentum-target", lr=0.1, momentum=0.9, clip="global", clip_target="momentum"),
    _case("weight-decay", lr=0.1, momentum=0.5, clip="global", max_norm=2.0, weight_decay=0.01),
    _case("autoclip", lr=0.1, clip="global", max_norm=AutoClip(percentile=50.0)),
    _case("zclip", lr=0.1, momentum=0.9, clip="global", max_norm=ZClip(warmup=3)),
    _case("nesterov-maximize", lr=0.1, momentum=0.9, nesterov=True, clip="layer", max_norm=0.5,
          weight_decay=0.01, maximize=True),
    _case("dampening-momentum-target", lr=0.1, momentum=0.9, dampening=0.3, clip="global",
          clip_target="momentum"),
    _case("fused-global", lr=0.1, momentum=0.9, dampening=0.2, clip="global", max_norm=1.0, fused=True),
]
INVALID_COMBINATIONS = [
    ({"nesterov": True}, "nesterov"),
    ({"momentum": 0.9, "dampening": 0.5, "nesterov": True}, "nesterov"),
    ({"fused": True, "clip_target": "momentum"}, "fused"),
    ({"clip": "layer", "max_norm": AutoClip()}, "max_norm"),
]
VECTORIZED_CASES = [
    {"lr": 0.1, "momentum": 0.0, "clip": None},
    {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 0.5},
    {"lr": 0.1, "momentum": 0.9, "clip": "coord", "max_norm": 0.3, "weight_decay": 0.1},
    {"lr": 0.1, "momentum": 0.5, "clip": "global", "max_norm": 0.5, "clip_target": "momentum"},
]

SHAPES = [[(3, 2), (4,)], [(2, 2), (1,)]]  # two param groups
LRS = [0.1, 0.05]


def _params(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[list[nn.Parameter]]:
    rng = np.random.default_rng(seed)
    return [[nn.Parameter(torch.tensor(rng.normal(size=s), dtype=dtype)) for s in group] for group in SHAPES]


def _stream(steps: int, seed: int = 1, scale: float = 1.0) -> list[list[list[np.ndarray]]]:
    """Heavy-tailed gradients: Student-t with 1.5 degrees of freedom (infinite variance)."""
    rng = np.random.default_rng(seed)
    return [[[scale * rng.standard_t(1.5, size=s) for s in group] for group in SHAPES] for _ in range(steps)]


def _set_grads(params: list[list[nn.Parameter]], grads: list[list[np.ndarray]]) -> None:
    for group, group_grads in zip(params, grads, strict=True):
        for p, g in zip(group, group_grads, strict=True):
            p.grad = torch.tensor(g, dtype=p.dtype)


def _groups(params: list[list[nn.Parameter]], **group2: object) -> list[dict]:
    return [{"params": params[0]}, {"params": params[1], "lr": LRS[1], **group2}]


# ---------------------------------------------------------------------------------------------
# Without clipping: exactly torch.optim.SGD


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_no_clip_is_bitwise_torch_sgd(foreach: bool, weight_decay: float, momentum: float, dtype) -> None:
    ours_params, torch_params = _params(dtype), _params(dtype)
    ours = ClipSGD(_groups(ours_params, weight_decay=0.0), lr=LRS[0], momentum=momentum, clip=None,
                   weight_decay=weight_decay, foreach=foreach)
    ref = torch.optim.SGD(_groups(torch_params, weight_decay=0.0), lr=LRS[0], momentum=momentum,
                          weight_decay=weight_decay, foreach=foreach)
    for grads in _stream(35):
        _set_grads(ours_params, grads)
        _set_grads(torch_params, grads)
        ours.step()
        ref.step()
    for group_a, group_b in zip(ours_params, torch_params, strict=True):
        for a, b in zip(group_a, group_b, strict=True):
            assert torch.equal(a, b)
            if momentum:
                assert torch.equal(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])
            else:
                assert "momentum_buffer" not in ours.state[a]
    assert not torch.equal(ours_params[0][0], _params(dtype)[0][0])


# ---------------------------------------------------------------------------------------------
# Float64 reference math, plain loops


def _group_mode(clip: str | None) -> str | None:
    """The references clip each group by its own norm: ``clip="group"`` (one group with
    ``"global"`` is the same; several groups under ``"global"``: ``test_model_wide.py``)."""
    return "group" if clip == "global" else clip


def _clip_ref(tensors: list[list[float]], mode: str, tau: float) -> tuple[list[list[float]], float, float]:
    """clip(g; mode, tau) of one group; returns the clipped tensors, the pre- and post-clip norms."""
    before = math.sqrt(sum(x * x for t in tensors for x in t))
    if mode == "global":
        factor = min(1.0, tau / before) if before > 0 else 1.0
        out = [[x * factor for x in t] for t in tensors]
    elif mode == "layer":
        out = []
        for t in tensors:
            own = math.sqrt(sum(x * x for x in t))
            factor = min(1.0, tau / own) if own > 0 else 1.0
            out.append([x * factor for x in t])
    else:
        out = [[max(-tau, min(tau, x)) for x in t] for t in tensors]
    after = math.sqrt(sum(x * x for t in out for x in t))
    return out, before, after


def _reference_run(params0, stream, *, momentum, clip, max_norm, target, weight_decay, policies=None):
    """ClipSGD by hand (papers.md): gradient target u = clip(g + wd x), m = beta m + u (m_1 = u_1),
    x -= lr m; momentum target m = beta m + (g + wd x), x -= lr clip(m). ``policies`` (one per
    group) are fed the pre-clip norm of the clipped quantity and give tau."""
    xs = [[[float(v) for v in p.detach().flatten()] for p in group] for group in params0]
    bufs: list[list[list[float] | None]] = [[None] * len(group) for group in xs]
    clipped_steps = unclipped_steps = 0
    stats = []
    for grads in stream:
        step_stats = []
        for gi, (group, group_grads) in enumerate(zip(xs, grads, strict=True)):
            lr = LRS[gi]
            d = [[float(g) + weight_decay * x for g, x in zip(gr.flatten(), p, strict=True)]
                 for gr, p in zip(group_grads, group, strict=True)]

            def clip_(tensors, gi=gi):
                tau = max_norm
                if policies is not None:
                    norm = math.sqrt(sum(v * v for t in tensors for v in t))
                    tau = float(policies[gi].threshold(torch.tensor(norm, dtype=torch.float64)))
                return _clip_ref(tensors, clip, tau)

            if target == "gradient":
                u, before, after = clip_(d)
            else:
                u = d
            if momentum:
                for k, t in enumerate(u):
                    b = bufs[gi][k]
                    if b is None:
                        bufs[gi][k] = list(t)
                    else:
                        bufs[gi][k] = [momentum * bv + v for bv, v in zip(b, t, strict=True)]
                u = [list(b) for b in bufs[gi]]
            if target == "momentum":
                u, before, after = clip_(u)
            if after < before * (1 - 1e-12):
                clipped_steps += 1
            else:
                unclipped_steps += 1
            step_stats.append((before, after))
            for p, t in zip(group, u, strict=True):
                for j in range(len(p)):
                    p[j] -= lr * t[j]
        stats.append(step_stats)
    return xs, bufs, stats, clipped_steps, unclipped_steps


def _run(opt: ClipSGD, params, stream) -> list[list[tuple[float, float]]]:
    stats = []
    for grads in stream:
        _set_grads(params, grads)
        opt.step()
        stats.append([(s.grad_norm.item(), s.clipped_norm.item()) for s in opt.group_stats])
    return stats


MAX_NORMS = {"global": 4.0, "layer": 3.0, "coord": 2.0}  # both regimes occur on this stream


def _max_norm(clip: str, target: str, momentum: float) -> float:
    """The heavy-ball sum of Student-t steps is ~2.5x longer: scale the threshold with it."""
    return MAX_NORMS[clip] * (2.5 if target == "momentum" and momentum else 1.0)


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("target", ["gradient", "momentum"])
@pytest.mark.parametrize("clip", ["global", "layer", "coord"])
def test_matches_float64_reference(
    clip: str, target: str, momentum: float, weight_decay: float, foreach: bool
) -> None:
    params = _params()
    stream = _stream(25, seed=3)
    max_norm = _max_norm(clip, target, momentum)
    opt = ClipSGD(_groups(params), lr=LRS[0], momentum=momentum, clip=_group_mode(clip), max_norm=max_norm,
                  clip_target=target, weight_decay=weight_decay, foreach=foreach)
    expected, bufs, ref_stats, clipped, unclipped = _reference_run(
        _params(), stream, momentum=momentum, clip=clip, max_norm=max_norm, target=target,
        weight_decay=weight_decay,
    )
    stats = _run(opt, params, stream)
    assert clipped > 0 and unclipped > 0  # both regimes are exercised
    for group, ref_group, ref_bufs in zip(params, expected, bufs, strict=True):
        for p, ref, buf in zip(group, ref_group, ref_bufs, strict=True):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(ref, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-12)
            if momentum:
                torch.testing.assert_close(opt.state[p]["momentum_buffer"].flatten(),
                                           torch.tensor(buf, dtype=torch.float64), rtol=1e-7, atol=1e-12)
    for got, ref in zip(stats, ref_stats, strict=True):  # ClipStats: norms of the clipped quantity
        for (g_before, g_after), (r_before, r_after) in zip(got, ref, strict=True):
            assert g_before == pytest.approx(r_before, rel=1e-7)
            assert g_after == pytest.approx(r_after, rel=1e-7)


# ---------------------------------------------------------------------------------------------
# foreach == loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("target", ["gradient", "momentum"])
@pytest.mark.parametrize("clip", ["global", "layer", "coord", None])
def test_foreach_equals_loop(clip, target, momentum, weight_decay, dtype) -> None:
    """Bitwise in float32/float64. In bfloat16 with momentum torch itself differs between its paths
    (``_foreach_mul_`` rounds the scalar beta to bfloat16, ``mul_`` does not; torch.optim.SGD's two
    paths differ the same way, and ClipSGD matches each of them bitwise): close there."""
    results = []
    for foreach in (True, False):
        params = _params(dtype, seed=4)
        opt = ClipSGD(_groups(params), lr=LRS[0], momentum=momentum, clip=clip,
                      max_norm=MAX_NORMS.get(clip, 1.0), clip_target=target, weight_decay=weight_decay,
                      foreach=foreach)
        _run(opt, params, _stream(12, seed=5))
        results.append((params, opt))
    (pa, oa), (pb, ob) = results
    exact = dtype != torch.bfloat16 or momentum == 0
    for group_a, group_b in zip(pa, pb, strict=True):
        for a, b in zip(group_a, group_b, strict=True):
            assert a.dtype == dtype
            if exact:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
            if momentum and exact:
                assert torch.equal(oa.state[a]["momentum_buffer"], ob.state[b]["momentum_buffer"])


# ---------------------------------------------------------------------------------------------
# Adaptive thresholds


@pytest.mark.parametrize("target", ["gradient", "momentum"])
@pytest.mark.parametrize(
    "make_policy",
    [lambda: AutoClip(percentile=50.0), lambda: ZClip(alpha=0.9, z_thresh=1.0, warmup=4)],
    ids=["autoclip", "zclip"],
)
def test_threshold_policy_as_max_norm(make_policy, target: str) -> None:
    """The policy is fed the pre-clip norm of the quantity clipped (g_t, or m_t), once per group
    and step; the result matches the reference run with twin policies."""
    params = _params()
    stream = _stream(30, seed=6)
    opt = ClipSGD([{"params": params[0], "max_norm": make_policy()},
                   {"params": params[1], "lr": LRS[1], "max_norm": make_policy()}],
                  lr=LRS[0], momentum=0.9, clip="group", max_norm=make_policy(), clip_target=target)
    expected, _, _, clipped, _ = _reference_run(
        _params(), stream, momentum=0.9, clip="global", max_norm=None, target=target, weight_decay=0.0,
        policies=[make_policy(), make_policy()],
    )
    _run(opt, params, stream)
    assert clipped > 0
    for group, ref_group in zip(params, expected, strict=True):
        for p, ref in zip(group, ref_group, strict=True):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(ref, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-12)
    assert all(group["max_norm"].count.item() == len(stream) for group in opt.param_groups)


@pytest.mark.parametrize("shared", ["default", "same-object"])
def test_one_policy_for_several_groups_is_copied_per_group(shared: str) -> None:
    """Under clip="group" a policy given once (as the default, or the same object to both groups)
    must not mix the groups' norms into one history: each group gets its own copy, as with twin
    policies. (Under clip="global" one policy sees the model-wide norm: test_model_wide.py.)"""
    params = _params()
    stream = _stream(30, seed=6)
    policy = AutoClip(percentile=50.0)
    if shared == "default":
        groups = [{"params": params[0]}, {"params": params[1], "lr": LRS[1]}]
    else:
        groups = [{"params": params[0], "max_norm": policy},
                  {"params": params[1], "lr": LRS[1], "max_norm": policy}]
    opt = ClipSGD(groups, lr=LRS[0], momentum=0.9, clip="group", max_norm=policy)
    policies = [group["max_norm"] for group in opt.param_groups]
    assert policies[0] is policy and policies[1] is not policy
    expected, _, _, clipped, _ = _reference_run(
        _params(), stream, momentum=0.9, clip="global", max_norm=None, target="gradient", weight_decay=0.0,
        policies=[AutoClip(percentile=50.0), AutoClip(percentile=50.0)],
    )
    _run(opt, params, stream)
    assert clipped > 0
    for group, ref_group in zip(params, expected, strict=True):
        for p, ref in zip(group, ref_group, strict=True):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(ref, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-12)
    assert [int(p.count) for p in policies] == [len(stream), len(stream)]


@pytest.mark.parametrize("clip", ["layer", "coord", None])
def test_policy_needs_global_clipping(clip) -> None:
    with pytest.raises(ValueError, match="max_norm"):
        ClipSGD(_params()[0], lr=0.1, clip=clip, max_norm=AutoClip())


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"lr": -0.1}, "learning rate"),
        ({"lr": "fast"}, "learning rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"clip": "local"}, "clip"),
        ({"max_norm": 0.0}, "max_norm"),
        ({"max_norm": -1.0}, "max_norm"),
        ({"max_norm": "auto"}, "max_norm"),
        ({"clip_target": "update"}, "clip_target"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs: dict, arg: str) -> None:
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=arg) as info:
        ClipSGD(_params()[0], **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("clip", ["global", "layer", "coord"])
def test_a_group_max_norm_edited_to_nonpositive_raises(clip) -> None:
    params = _params()[0]
    opt = ClipSGD(params, lr=0.1, momentum=0.9, clip=clip, max_norm=1.0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()  # the momentum buffers exist: the blocked path from here on
    opt.param_groups[0]["max_norm"] = -1.0
    with pytest.raises(ValueError, match="Invalid max_norm: -1.0; allowed: max_norm > 0"):
        opt.step()
