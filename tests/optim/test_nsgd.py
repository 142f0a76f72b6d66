"""NSGD: float64 reference math (momentum 0 and 0.9, weight decay) on heavy-tailed gradients,
step length and statistics, the group norm, foreach == loop, validation."""

from __future__ import annotations

import math
from typing import Any

import optim_fixtures as fixtures
import pytest
import torch
from cases import OptimCase, case
from optim_fixtures import flat_lists, set_grads

from tailclip.optim import NSGD, OPTIMIZERS

# ---------------------------------------------------------------- cases of the generic batteries
# Found through the registry by tests/optim/cases.py (the battery) and
# tests/problems/test_vectorized.py (the vectorized suite).


def _case(label: str, **kwargs: Any) -> OptimCase:
    return case("nsgd", label, coupled_decay=True, **kwargs)


BATTERY_CASES = [
    _case("default", lr=0.1),
    _case("no-momentum", lr=0.1, momentum=0.0),
    _case("eps", lr=0.05, momentum=0.5, eps=1e-3),
    _case("weight-decay", lr=0.1, momentum=0.9, weight_decay=0.01),
]
VECTORIZED_CASES = [
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.1},
]

SHAPES = [[(4, 3), (5,)], [(2, 2, 2)]]  # two param groups
STEPS = 32


def initial_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.initial_params(SHAPES, dtype)


def student_t_noise(dtype: torch.dtype, seed: int = 2) -> list[list[list[torch.Tensor]]]:
    return fixtures.torch_student_t(SHAPES, STEPS, dtype, seed)


def make_params(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    return fixtures.make_params(SHAPES, dtype)


def reference_nsgd(lr: float, momentum: float, eps: float, group_wd: list[float]):
    """Plain-loop float64 NSGD on g = x + xi; returns final x, final m and per-step stats.

    Every group divides its momentum by the model-wide ||m_t||; the stats are the group's
    (||g_t||, ||m_t^group|| / (||m_t|| + eps))."""
    x = flat_lists(initial_params(torch.float64))
    noise = [flat_lists(step) for step in student_t_noise(torch.float64)]
    m = [[[0.0] * len(p) for p in group] for group in x]
    stats = []
    for t in range(STEPS):
        gs = []
        for gi, group in enumerate(x):
            wd = group_wd[gi]
            g = [
                [xj + nj + wd * xj for xj, nj in zip(p, n, strict=True)]
                for p, n in zip(group, noise[t][gi], strict=True)
            ]
            gs.append(g)
            for mk, gk in zip(m[gi], g, strict=True):
                for j in range(len(mk)):
                    mk[j] = momentum * mk[j] + (1 - momentum) * gk[j]
        m_norm = math.sqrt(sum(v * v for mg in m for mk in mg for v in mk))
        step_stats = []
        for gi, group in enumerate(x):
            for pk, mk in zip(group, m[gi], strict=True):
                for j in range(len(pk)):
                    pk[j] -= lr * mk[j] / (m_norm + eps)
            g_norm = math.sqrt(sum(v * v for gk in gs[gi] for v in gk))
            group_m_norm = math.sqrt(sum(v * v for mk in m[gi] for v in mk))
            step_stats.append((g_norm, group_m_norm / (m_norm + eps)))
        stats.append(step_stats)
    return x, m, stats


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("group_wd", [[0.0, 0.0], [0.05, 0.2]], ids=["no_wd", "wd"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_float64_reference(momentum, group_wd, foreach):
    lr, eps = 0.1, 1e-3
    noise = student_t_noise(torch.float64)
    params = make_params(torch.float64)
    opt = NSGD(
        [{"params": group, "weight_decay": wd} for group, wd in zip(params, group_wd, strict=True)],
        lr=lr, momentum=momentum, eps=eps, foreach=foreach,
    )
    stats = []
    for t in range(STEPS):
        set_grads(params, noise[t])
        opt.step()
        stats.append([(s.grad_norm.item(), s.clipped_norm.item()) for s in opt.group_stats])
    x_ref, m_ref, stats_ref = reference_nsgd(lr, momentum, eps, group_wd)
    for group, group_x, group_m in zip(params, x_ref, m_ref, strict=True):
        for p, p_ref, m_p in zip(group, group_x, group_m, strict=True):
            torch.testing.assert_close(p.detach().flatten(), torch.tensor(p_ref, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-12)
            torch.testing.assert_close(opt.state[p]["momentum_buffer"].flatten(),
                                       torch.tensor(m_p, dtype=torch.float64), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(torch.tensor(stats), torch.tensor(stats_ref), rtol=1e-7, atol=0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_step_length_is_lr_times_normalized_momentum(momentum):
    """||x_{t+1} - x_t|| = lr ||m_t|| / (||m_t|| + eps) over the model, whatever ||g_t|| is."""
    lr, eps = 0.3, 0.5  # a large eps makes ||m|| / (||m|| + eps) visibly below 1
    noise = student_t_noise(torch.float64)
    params = make_params(torch.float64)
    opt = NSGD([{"params": group} for group in params], lr=lr, momentum=momentum, eps=eps)
    for t in range(STEPS):
        set_grads(params, noise[t])
        before = [[p.detach().clone() for p in group] for group in params]
        opt.step()
        everything, everything_before = sum(params, []), sum(before, [])
        stats = opt.step_stats
        moves = [p.detach() - q for p, q in zip(everything, everything_before, strict=True)]
        step = math.sqrt(sum((d**2).sum().item() for d in moves))
        m_norm = math.sqrt(sum((opt.state[p]["momentum_buffer"] ** 2).sum().item() for p in everything))
        assert step == pytest.approx(lr * m_norm / (m_norm + eps), rel=1e-12)
        assert stats.clipped_norm.item() == pytest.approx(m_norm / (m_norm + eps), rel=1e-12)
        if momentum == 0.0:  # normalized GD: the step is -lr g / (||g|| + eps)
            g_norm = math.sqrt(sum((p.grad**2).sum().item() for p in everything))
            assert stats.grad_norm.item() == pytest.approx(g_norm, rel=1e-12)
            for p, d in zip(everything, moves, strict=True):
                torch.testing.assert_close(d, -lr * p.grad / (g_norm + eps), rtol=1e-12, atol=1e-15)


def test_normalizes_by_group_norm_not_per_parameter():
    """g = ((3, 0), (0, 4)) in one group: the step is -lr (3, 0, 0, 4) / 5, not a unit step per tensor."""
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = NSGD([a, b], lr=1.0, momentum=0.0, eps=1e-300)
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 4.0], dtype=torch.float64)
    opt.step()
    assert a.tolist() == pytest.approx([-0.6, 0.0], rel=1e-15)
    assert b.tolist() == pytest.approx([0.0, -0.8], rel=1e-15)


def test_momentum_starts_at_zero():
    """m_1 = (1 - beta) g_1: with m_0 = 0 the first direction is g_1 / (||g_1|| + eps / (1 - beta))."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = NSGD([x], lr=1.0, momentum=0.9, eps=0.1)
    x.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    opt.step()
    m_norm = 0.1 * 5.0
    assert opt.state[x]["momentum_buffer"].tolist() == pytest.approx([0.3, 0.4], rel=1e-14)
    assert x.tolist() == pytest.approx([-0.3 / (m_norm + 0.1), -0.4 / (m_norm + 0.1)], rel=1e-14)


def test_zero_gradient_gives_zero_step():
    x = torch.ones(3, requires_grad=True)
    opt = NSGD([x], lr=1.0)
    x.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(x.detach(), torch.ones(3))
    assert opt.step_stats.grad_norm.item() == 0.0 and opt.step_stats.clipped_norm.item() == 0.0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_foreach_matches_loop(momentum):
    noise = student_t_noise(torch.float32)
    runs = []
    for foreach in (True, False):
        params = make_params(torch.float32)
        opt = NSGD([{"params": params[0]}, {"params": params[1], "weight_decay": 0.1}],
                   lr=0.05, momentum=momentum, foreach=foreach)
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


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -0.1}, "learning rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        NSGD([torch.zeros(2, requires_grad=True)], **{"lr": 0.1, **kwargs})


def test_registered():
    assert OPTIMIZERS["nsgd"] is NSGD
