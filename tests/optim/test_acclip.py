"""ACClip against plain-loop float64 math of Algorithm 1 (Zhang et al., NeurIPS 2020)."""

from __future__ import annotations

import math
from typing import Any

import optim_fixtures as fixtures
import pytest
import torch
from cases import OptimCase, case

from tailclip.optim import OPTIMIZERS, ACClip

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("acclip", label, **kwargs)


BATTERY_CASES = [
    _case("paper", lr=1e-2),
    _case("alpha2", lr=1e-2, alpha=2.0),
    _case("betas-no-wd", lr=1e-2, betas=(0.8, 0.95), weight_decay=0.0),
    _case("weight-decay", lr=1e-2, eps=1e-3, weight_decay=0.1),
]
VECTORIZED_CASES = [
    {"lr": 0.05},
    {"lr": 0.05, "alpha": 1.5, "weight_decay": 0.0},
]

SEED = 2020
STEPS = 40
SHAPES = [[(3, 4), (5,)], [(2, 2, 2), (6,)]]  # two param groups
CURVATURE = 0.5  # g = CURVATURE * x + xi, xi ~ Student-t(1.5 dof): infinite variance
HYPERS = [
    dict(lr=0.05, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01),
    dict(lr=0.02, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.0),
]


def student_t_noise(shapes, steps, seed=SEED, scale=1.0):
    return fixtures.student_t_lists(shapes, steps, seed, scale)


def initial_values(shapes, seed=SEED + 1):
    return fixtures.normal_lists(shapes, seed)


make_params = fixtures.params_from_lists


def set_grads(groups, noise_t, curvature=CURVATURE):
    fixtures.set_grads(groups, noise_t, curvature)


def reference_acclip(values, noise, hypers, alpha, curvature=CURVATURE, coupled_decay=False):
    """Algorithm 1 elementwise in plain float64 loops; per step: x, tau^alpha, ||g||, ||ghat||.

    ``coupled_decay`` adds ``wd x`` to the gradient instead of decaying ``x`` (not ACClip's rule;
    used to show that the decoupled decay is what the optimizer does).
    """
    x = [[list(t) for t in group] for group in values]
    m = [[[0.0] * len(t) for t in group] for group in values]
    v = [[[0.0] * len(t) for t in group] for group in values]
    history = []
    for noise_t in noise:
        step = []
        for gi, hp in enumerate(hypers):
            b1, b2 = hp["betas"]
            lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
            grad_sq = ghat_sq = 0.0
            for ti in range(len(x[gi])):
                for j in range(len(x[gi][ti])):
                    xj = x[gi][ti][j]
                    g = curvature * xj + noise_t[gi][ti][j]
                    grad_sq += g * g
                    if coupled_decay:
                        g += wd * xj
                    else:
                        xj *= 1 - lr * wd
                    m[gi][ti][j] = b1 * m[gi][ti][j] + (1 - b1) * g
                    v[gi][ti][j] = b2 * v[gi][ti][j] + (1 - b2) * abs(g) ** alpha
                    tau = v[gi][ti][j] ** (1 / alpha)
                    ghat = min(tau / (abs(m[gi][ti][j]) + eps), 1.0) * m[gi][ti][j]
                    ghat_sq += ghat * ghat
                    x[gi][ti][j] = xj - lr * ghat
            step.append((math.sqrt(grad_sq), math.sqrt(ghat_sq)))
        snapshot = [[list(t) for t in group] for group in x], [[list(t) for t in group] for group in v]
        history.append((*snapshot, step))
    return history


def assert_close_flat(tensor, values, rtol=1e-7):
    torch.testing.assert_close(
        tensor.detach().reshape(-1), torch.tensor(values, dtype=torch.float64), rtol=rtol, atol=1e-12
    )


def run(groups, noise, opt, curvature=CURVATURE):
    for noise_t in noise:
        set_grads(groups, noise_t, curvature)
        opt.step()
        yield


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_matches_algorithm_1_reference_over_heavy_tailed_steps(alpha, foreach):
    noise = student_t_noise(SHAPES, STEPS)
    values = initial_values(SHAPES)
    groups = make_params(values, SHAPES)
    opt = ACClip([dict(params=ps, **hp) for ps, hp in zip(groups, HYPERS, strict=True)], alpha=alpha,
                 foreach=foreach)
    reference = reference_acclip(values, noise, HYPERS, alpha)
    for _, (x_ref, v_ref, step_ref) in zip(run(groups, noise, opt), reference, strict=True):
        for params, xs, vs, stats, (grad_norm, ghat_norm) in zip(
            groups, x_ref, v_ref, opt.group_stats, step_ref, strict=True
        ):
            for p, xv, vv in zip(params, xs, vs, strict=True):
                assert_close_flat(p, xv)
                assert_close_flat(opt.state[p]["tau_alpha"], vv)  # the state holds tau^alpha
            torch.testing.assert_close(stats.grad_norm.item(), grad_norm, rtol=1e-7, atol=0)
            torch.testing.assert_close(stats.clipped_norm.item(), ghat_norm, rtol=1e-7, atol=0)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_clip_factor_is_in_unit_interval_and_both_regimes_occur(alpha):
    lr = 0.1
    noise = student_t_noise(SHAPES, STEPS, seed=5)
    groups = make_params(initial_values(SHAPES, seed=6), SHAPES)
    params = [p for ps in groups for p in ps]
    opt = ACClip(params, lr=lr, alpha=alpha, weight_decay=0.0)
    factors = []
    for noise_t in noise:
        set_grads(groups, noise_t, curvature=0.0)
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, b in zip(params, before, strict=True):
            # The applied direction over the momentum, read from the parameters' motion.
            factors.append(((b - p.detach()) / lr / opt.state[p]["exp_avg"]).reshape(-1))
    factors = torch.cat(factors)
    assert bool((factors > 0).all()) and bool((factors <= 1 + 1e-9).all())
    assert bool((factors > 1 - 1e-9).any())  # unclipped coordinates
    assert bool((factors < 0.9).any())  # clipped coordinates


@pytest.mark.parametrize("foreach", [True, False])
def test_weight_decay_with_zero_gradient_is_torch_adamw(foreach):
    generator = torch.Generator().manual_seed(1)
    ours = torch.nn.Parameter(torch.randn(4, 5, dtype=torch.float64, generator=generator))
    theirs = torch.nn.Parameter(ours.detach().clone())
    opt = ACClip([ours], lr=0.1, weight_decay=0.2, foreach=foreach)
    adamw = torch.optim.AdamW([theirs], lr=0.1, weight_decay=0.2, foreach=foreach)
    start = ours.detach().clone()
    for _ in range(30):
        ours.grad = torch.zeros_like(ours)
        theirs.grad = torch.zeros_like(theirs)
        opt.step()
        adamw.step()
        assert torch.equal(ours, theirs)
    torch.testing.assert_close(ours.detach(), start * (1 - 0.1 * 0.2) ** 30, rtol=1e-12, atol=0)


def test_weight_decay_is_decoupled_not_added_to_the_gradient():
    hypers = [dict(lr=0.05, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.5)]
    shapes = SHAPES[:1]
    noise = student_t_noise(shapes, STEPS, seed=9)
    values = initial_values(shapes, seed=10)
    (params,) = make_params(values, shapes)
    opt = ACClip([dict(params=params, **hypers[0])])
    list(run([params], noise, opt))
    decoupled = reference_acclip(values, noise, hypers, 1.0)[-1][0][0]
    coupled = reference_acclip(values, noise, hypers, 1.0, coupled_decay=True)[-1][0][0]
    for p, xd, xc in zip(params, decoupled, coupled, strict=True):
        assert_close_flat(p, xd)
        gap = torch.tensor(xd) - torch.tensor(xc)
        assert float(gap.abs().max()) > 1e-3  # the two decays really differ here


def public_variant(values, noise, lr, scale):
    """The public implementation's rule: alpha = 2, coupled decay (here 0), and the clipped
    momentum divided by an Adam-style ``sqrt(beta_2 v) + eps`` (its ``mod=1``)."""
    b1, b2, eps = 0.9, 0.99, 1e-10
    x = [list(t) for t in values]
    m = [[0.0] * len(t) for t in values]
    tau2 = [[0.0] * len(t) for t in values]
    v = [[0.0] * len(t) for t in values]
    for noise_t in noise:
        for ti in range(len(x)):
            for j in range(len(x[ti])):
                g = scale * noise_t[0][ti][j]
                m[ti][j] = b1 * m[ti][j] + (1 - b1) * g
                tau2[ti][j] = b2 * tau2[ti][j] + (1 - b2) * g * g
                v[ti][j] = b2 * v[ti][j] + (1 - b2) * g * g
                factor = min(math.sqrt(tau2[ti][j]) / (abs(m[ti][j]) + eps), 1.0)
                x[ti][j] -= lr * factor / (math.sqrt(b2 * v[ti][j]) + eps) * m[ti][j]
    return x


def test_rule_differs_from_the_public_adam_style_variant():
    """Algorithm 1 steps proportionally to the gradient scale; the public variant's Adam-style
    division makes its step scale-free. Same alpha = 2, same betas, no weight decay."""
    lr, shapes = 1e-3, SHAPES[:1]
    noise = student_t_noise(shapes, STEPS, seed=13)
    values = initial_values(shapes, seed=14)
    displacement = {}
    for scale in (1.0, 100.0):
        (params,) = make_params(values, shapes)
        opt = ACClip(params, lr=lr, betas=(0.9, 0.99), eps=1e-10, alpha=2.0, weight_decay=0.0)
        scaled = [[[[scale * v for v in t] for t in group] for group in noise_t] for noise_t in noise]
        list(run([params], scaled, opt, curvature=0.0))
        ours = torch.cat([(p.detach() - torch.tensor(x0).reshape(p.shape)).reshape(-1)
                          for p, x0 in zip(params, values[0], strict=True)])
        variant = public_variant(values[0], noise, lr, scale)
        theirs = torch.cat([torch.tensor(x) - torch.tensor(x0)
                            for x, x0 in zip(variant, values[0], strict=True)])
        displacement[scale] = (ours, theirs)
    (ours_1, theirs_1), (ours_100, theirs_100) = displacement[1.0], displacement[100.0]
    torch.testing.assert_close(ours_100, 100 * ours_1, rtol=1e-6, atol=0)
    torch.testing.assert_close(theirs_100, theirs_1, rtol=1e-6, atol=0)
    # At scale 1 the two rules already disagree by far more than rounding.
    assert float((ours_1 - theirs_1).norm() / ours_1.norm()) > 0.1


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_foreach_and_loop_give_the_same_numbers(alpha):
    noise = student_t_noise(SHAPES, 30, seed=17)
    values = initial_values(SHAPES, seed=18)
    runs = []
    for foreach in (True, False):
        groups = make_params(values, SHAPES, dtype=torch.float32)
        opt = ACClip([dict(params=ps, **hp) for ps, hp in zip(groups, HYPERS, strict=True)], alpha=alpha,
                     foreach=foreach)
        norms = []
        for _ in run(groups, noise, opt):
            norms.append([(s.grad_norm, s.clipped_norm) for s in opt.group_stats])
        params = [p for ps in groups for p in ps]
        state = [(opt.state[p]["exp_avg"], opt.state[p]["tau_alpha"]) for p in params]
        runs.append(([p.detach() for p in params], state, norms))
    (params_a, state_a, norms_a), (params_b, state_b, norms_b) = runs
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    for (ma, va), (mb, vb) in zip(state_a, state_b, strict=True):
        assert torch.equal(ma, mb) and torch.equal(va, vb)
    for step_a, step_b in zip(norms_a, norms_b, strict=True):
        for (ga, ca), (gb, cb) in zip(step_a, step_b, strict=True):
            assert torch.equal(ga, gb) and torch.equal(ca, cb)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(lr=-1e-4), "learning rate"),
        (dict(betas=(1.0, 0.99)), "beta parameter at index 0"),
        (dict(betas=(0.9, -0.01)), "beta parameter at index 1"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-8), "eps"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=2.5), "alpha"),
        (dict(weight_decay=-1e-5), "weight_decay"),
    ],
)
def test_invalid_hyperparameters_raise_one_line_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        ACClip([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    assert "\n" not in str(info.value) and "allowed" in str(info.value)


def test_registered_with_the_paper_defaults():
    assert OPTIMIZERS["acclip"] is ACClip
    defaults = ACClip([torch.nn.Parameter(torch.zeros(2))]).defaults
    paper = dict(lr=1e-4, betas=(0.9, 0.99), eps=1e-5, alpha=1.0, weight_decay=1e-5)
    assert {key: defaults[key] for key in paper} == paper
    ACClip([torch.nn.Parameter(torch.zeros(2))], alpha=0.5)  # (0, 2] is open at 0 only
