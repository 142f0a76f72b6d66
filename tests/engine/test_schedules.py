"""Learning-rate schedules against their closed forms and torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from tailclip.engine.config import ScheduleConfig
from tailclip.engine.schedules import lr_factor, make_scheduler, warmup_steps


def test_constant_with_warmup_ramps_to_one() -> None:
    factor = lr_factor(ScheduleConfig(kind="constant", warmup_steps=4), 20)
    assert [factor(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_warmup_fraction_rounds() -> None:
    assert warmup_steps(ScheduleConfig(kind="cosine", warmup_fraction=0.05), 210) == 10
    assert warmup_steps(ScheduleConfig(kind="cosine"), 210) == 0


def test_warmup_linear_decays_to_final_factor() -> None:
    total, warmup, final = 110, 10, 0.1
    factor = lr_factor(ScheduleConfig(kind="warmup_linear", warmup_steps=warmup, final_factor=final), total)
    for t in range(total + 5):
        if t < warmup:
            expected = (t + 1) / warmup
        else:
            p = min(1.0, (t - warmup) / (total - warmup))
            expected = final + (1 - final) * (1 - p)
        assert factor(t) == pytest.approx(expected, abs=1e-15)
    assert factor(total) == pytest.approx(final)


def test_cosine_matches_closed_form_and_torch() -> None:
    total = 50
    factor = lr_factor(ScheduleConfig(kind="cosine"), total)
    for t in range(total + 1):
        assert factor(t) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / total)), abs=1e-15)
    # torch's CosineAnnealingLR (eta_min = 0) gives the same lr sequence
    p = torch.zeros(1, requires_grad=True)
    ours = make_scheduler(torch.optim.SGD([p], lr=0.2), ScheduleConfig(kind="cosine"), total)
    q = torch.zeros(1, requires_grad=True)
    theirs_opt = torch.optim.SGD([q], lr=0.2)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(theirs_opt, T_max=total)
    for _ in range(total):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12)
        ours.optimizer.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_step_schedule_matches_multisteplr() -> None:
    milestones, gamma, total = [3, 7], 0.5, 12
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    ours = make_scheduler(opt, ScheduleConfig(kind="step", milestones=milestones, gamma=gamma), total)
    q = torch.zeros(1, requires_grad=True)
    ref_opt = torch.optim.SGD([q], lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=milestones, gamma=gamma)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
        opt.step()
        ref_opt.step()
        ours.step()
        ref.step()
    assert seen == [1.0] * 3 + [0.5] * 4 + [0.25] * 5


def test_invalid_total_steps() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(ScheduleConfig(), 0)
