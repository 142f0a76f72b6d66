"""DeltaGClip against plain-loop float64 math (Tucat et al., TMLR 2025), GClip and torch SGD."""

from __future__ import annotations

import math
from typing import Any

import optim_fixtures as fixtures
import pytest
import torch
from cases import OptimCase, case

from tailclip.optim import OPTIMIZERS, DeltaGClip

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("delta_gclip", label, **kwargs)


BATTERY_CASES = [
    _case("default", lr=1.0, gamma=0.5, delta=1e-3),
    _case("gclip-delta0", lr=1.0, gamma=0.5, delta=0.0),
    _case("large-delta", lr=0.5, gamma=0.1, delta=0.5),
    _case("weight-decay", lr=1.0, gamma=0.5, delta=1e-3, weight_decay=0.01),
]
VECTORIZED_CASES = [
    {"lr": 0.1, "gamma": 0.5, "delta": 1e-3},
    {"lr": 0.1, "gamma": 0.5, "delta": 0.2, "weight_decay": 0.1},
]

SEED = 20250
STEPS = 40
SHAPES = [[(3, 4), (5,)], [(2, 2, 2), (6,)]]  # two param groups
CURVATURE = 0.5  # g = CURVATURE * x + xi, xi ~ Student-t(1.5 dof): infinite variance


def student_t_noise(shapes, steps, seed=SEED, scale=1.0):
    return fixtures.student_t_lists(shapes, steps, seed, scale)


def initial_values(shapes, seed=SEED + 1):
    return fixtures.normal_lists(shapes, seed)


make_params = fixtures.params_from_lists


def set_grads(groups, noise_t):
    fixtures.set_grads(groups, noise_t, CURVATURE)


def reference_delta_gclip(values, noise, hypers):
    """Plain-loop float64 delta-GClip; returns per-step x, and per group its gradient norm and
    the factor h / lr, which every group takes from the model-wide G."""
    x = [[list(t) for t in group] for group in values]
    history = []
    for noise_t in noise:
        step = []
        gs = [
            [[CURVATURE * xj + nj for xj, nj in zip(xt, nt, strict=True)]
             for xt, nt in zip(x[gi], noise_t[gi], strict=True)]
            for gi in range(len(hypers))
        ]
        big_g = math.sqrt(sum(v * v for g in gs for t in g for v in t))
        for gi, hp in enumerate(hypers):
            g = gs[gi]
            factor = 0.0 if big_g == 0 else min(1.0, max(hp["delta"], hp["gamma"] / big_g))
            h = hp["lr"] * factor
            for ti in range(len(x[gi])):
                for j in range(len(x[gi][ti])):
                    x[gi][ti][j] -= h * (g[ti][j] + hp["weight_decay"] * x[gi][ti][j])
            step.append((math.sqrt(sum(v * v for t in g for v in t)), factor))
        history.append(([[list(t) for t in group] for group in x], step))
    return history


HYPERS = [
    dict(lr=0.1, gamma=1.0, delta=0.05, weight_decay=0.01),
    dict(lr=0.05, gamma=10.0, delta=1e-3, weight_decay=0.0),
]


def assert_close_flat(tensor, values, rtol=1e-7):
    torch.testing.assert_close(
        tensor.detach().reshape(-1), torch.tensor(values, dtype=torch.float64), rtol=rtol, atol=1e-12
    )


@pytest.mark.parametrize("foreach", [True, False])
def test_matches_plain_loop_reference_over_heavy_tailed_steps(foreach):
    noise = student_t_noise(SHAPES, STEPS)
    values = initial_values(SHAPES)
    groups = make_params(values, SHAPES)
    opt = DeltaGClip([dict(params=ps, **hp) for ps, hp in zip(groups, HYPERS, strict=True)], lr=1.0,
                     foreach=foreach)
    reference = reference_delta_gclip(values, noise, HYPERS)
    regimes = set()
    for noise_t, (x_ref, step_ref) in zip(noise, reference, strict=True):
        set_grads(groups, noise_t)
        opt.step()
        for params, xs, stats, (big_g, factor), hp in zip(
            groups, x_ref, opt.group_stats, step_ref, HYPERS, strict=True
        ):
            for p, xv in zip(params, xs, strict=True):
                assert_close_flat(p, xv)
            torch.testing.assert_close(stats.grad_norm.item(), big_g, rtol=1e-7, atol=0)
            torch.testing.assert_close(stats.clipped_norm.item(), factor * big_g, rtol=1e-7, atol=0)
            regimes.add("sgd" if factor == 1 else "floor" if factor == hp["delta"] else "clip")
    # Heavy tails must have exercised all three branches of min(1, max(delta, gamma / G)).
    assert regimes == {"sgd", "clip", "floor"}


def test_delta_zero_is_gclip_on_the_step_size():
    lr, gamma = 0.1, 0.05
    noise = student_t_noise(SHAPES, STEPS, seed=7)
    values = initial_values(SHAPES, seed=8)
    groups = make_params(values, SHAPES)
    opt = DeltaGClip([p for ps in groups for p in ps], lr=lr, gamma=gamma, delta=0.0)
    # GClip, x <- x - lr min(gamma / ||g||, 1) g over the single group, written out by hand.
    x = [v for group in values for v in group]
    smallest_factor = 1.0
    for noise_t in noise:
        set_grads(groups, noise_t)
        opt.step()
        xi = [v for group in noise_t for v in group]
        g = [[CURVATURE * a + b for a, b in zip(xt, nt, strict=True)] for xt, nt in zip(x, xi, strict=True)]
        norm = math.sqrt(sum(v * v for t in g for v in t))
        factor = min(gamma / norm, 1.0)
        smallest_factor = min(smallest_factor, factor)
        x = [[a - lr * factor * b for a, b in zip(xt, gt, strict=True)] for xt, gt in zip(x, g, strict=True)]
        for p, xv in zip([p for ps in groups for p in ps], x, strict=True):
            assert_close_flat(p, xv)
    assert smallest_factor < 1e-3  # below the default floor: delta = 0 really removed it


@pytest.mark.parametrize("foreach", [True, False])
def test_huge_gamma_is_torch_sgd(foreach):
    noise = student_t_noise(SHAPES, STEPS, seed=11, scale=100.0)
    values = initial_values(SHAPES, seed=12)
    ours, theirs = make_params(values, SHAPES), make_params(values, SHAPES)
    hypers = [dict(lr=0.01, weight_decay=0.1), dict(lr=0.003, weight_decay=0.0)]
    opt = DeltaGClip([dict(params=ps, **hp) for ps, hp in zip(ours, hypers, strict=True)], lr=1.0,
                     gamma=1e30, delta=1e-3, foreach=foreach)
    sgd = torch.optim.SGD([dict(params=ps, **hp) for ps, hp in zip(theirs, hypers, strict=True)], lr=1.0)
    for noise_t in noise:
        set_grads(ours, noise_t)
        set_grads(theirs, noise_t)
        opt.step()
        sgd.step()
        for a, b in zip([p for ps in ours for p in ps], [p for ps in theirs for p in ps], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(bool(s.clip_factor == 1) for s in opt.group_stats)


@pytest.mark.parametrize("foreach", [True, False])
def test_zero_gradient_leaves_params_unchanged_even_with_weight_decay(foreach):
    """G = 0 over the model: no step, weight decay included; a zero group in a model with a
    non-zero G steps by its weight decay (G is model-wide)."""
    still = torch.nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    other = torch.nn.Parameter(torch.ones(5))
    opt = DeltaGClip([dict(params=[still]), dict(params=[other])], lr=0.1, gamma=1.0, delta=0.5,
                     weight_decay=0.3, foreach=foreach)
    before = still.detach().clone()
    for _ in range(3):
        still.grad = torch.zeros_like(still)
        other.grad = torch.zeros_like(other)
        opt.step()
    assert torch.equal(still, before) and torch.equal(other, torch.ones(5))
    zero_stats = opt.step_stats
    assert zero_stats.grad_norm.item() == 0.0 and zero_stats.clipped_norm.item() == 0.0
    assert zero_stats.clip_factor.item() == 1.0 and not bool(zero_stats.clipped)
    other.grad = torch.full_like(other, 2.0)
    opt.step()
    assert not torch.equal(still, before)  # G > 0: the zero group decays
    assert opt.group_stats[0].grad_norm.item() == 0.0


@pytest.mark.parametrize("gamma", [1e-6, 0.5, 1e3])
def test_step_length_is_at_least_lr_delta_grad_norm(gamma):
    lr, delta = 0.1, 0.01
    noise = student_t_noise([[(7,), (3, 3)]], 30, seed=21, scale=10.0)
    (params,) = make_params(initial_values([[(7,), (3, 3)]], seed=22), [[(7,), (3, 3)]])
    opt = DeltaGClip(params, lr=lr, gamma=gamma, delta=delta)
    floor_steps = 0
    for noise_t in noise:
        set_grads([params], noise_t)
        big_g = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
        before = [p.detach().clone() for p in params]
        opt.step()
        moved = [p.detach() - b for p, b in zip(params, before, strict=True)]
        length = math.sqrt(sum(float((d**2).sum()) for d in moved))
        assert length >= lr * delta * big_g * (1 - 1e-9)
        assert length == pytest.approx(lr * min(1.0, max(delta, gamma / big_g)) * big_g, rel=1e-9)
        floor_steps += math.isclose(length, lr * delta * big_g, rel_tol=1e-9)
    if gamma == 1e-6:
        assert floor_steps == 30  # gamma / G far below delta: the floor is the step
    if gamma == 1e3:
        assert floor_steps == 0


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_foreach_and_loop_give_the_same_numbers(weight_decay):
    noise = student_t_noise(SHAPES, 30, seed=31)
    values = initial_values(SHAPES, seed=32)
    runs = []
    for foreach in (True, False):
        groups = make_params(values, SHAPES, dtype=torch.float32)
        opt = DeltaGClip([dict(params=groups[0], gamma=0.3), dict(params=groups[1], delta=0.2)],
                         lr=0.05, weight_decay=weight_decay, foreach=foreach)
        norms = []
        for noise_t in noise:
            set_grads(groups, noise_t)
            opt.step()
            norms.append([(s.grad_norm, s.clipped_norm) for s in opt.group_stats])
        runs.append(([p.detach() for ps in groups for p in ps], norms))
    (params_a, norms_a), (params_b, norms_b) = runs
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    for step_a, step_b in zip(norms_a, norms_b, strict=True):
        for (ga, ca), (gb, cb) in zip(step_a, step_b, strict=True):
            assert torch.equal(ga, gb) and torch.equal(ca, cb)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(lr=-0.1), "learning rate"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=-1.0), "gamma"),
        (dict(delta=-0.01), "delta"),
        (dict(delta=1.5), "delta"),
        (dict(weight_decay=-1e-4), "weight_decay"),
    ],
)
def test_invalid_hyperparameters_raise_one_line_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        DeltaGClip([torch.nn.Parameter(torch.zeros(2))], **{"lr": 0.1, **kwargs})
    assert "\n" not in str(info.value) and "allowed" in str(info.value)


def test_registered_and_accepts_boundary_values():
    assert OPTIMIZERS["delta_gclip"] is DeltaGClip
    for delta in (0.0, 1.0):
        DeltaGClip([torch.nn.Parameter(torch.zeros(2))], lr=0.0, delta=delta)
