"""Model-wide quantities: ``clip="global"`` clips by ONE norm over every param group.

Two groups with identical hyperparameters must give the parameters of one group holding both
(float64, to 1e-10), for every case of every registered optimizer; ``clip="group"`` keeps the
per-group norms; ``step_stats`` report the model-wide norms; a model-wide scalar state is saved
once and the per-group layout of earlier versions fails to load with a message.
"""

from __future__ import annotations

import copy

import pytest
import torch
from cases import battery_cases, grad_stream, make_params, set_grads

from tailclip.clip import AutoClip, ZClip
from tailclip.optim import NSGD, ClipAdaGrad, ClipAdam, ClipSGD

STEPS = 6


def _run(case, grouped: bool, steps: int = STEPS) -> tuple[list[torch.Tensor], object]:
    params = make_params(seed=3, dtype=torch.float64)
    stream = grad_stream(steps, seed=5)
    kwargs = case.fresh_kwargs()
    if grouped:
        opt = case.cls([{"params": params[0]}, {"params": params[1]}], **kwargs)
    else:
        opt = case.cls(params[0] + params[1], **kwargs)
    for grads in stream:
        set_grads(params, grads)
        opt.step()
    return [p.detach().clone() for group in params for p in group], opt


@pytest.mark.parametrize("case", battery_cases(), ids=lambda c: c.id)
def test_two_groups_equal_one_group(case) -> None:
    """Identical hyperparameters in two groups give one group's parameters and step stats."""
    split, split_opt = _run(case, grouped=True)
    whole, whole_opt = _run(case, grouped=False)
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        split_opt.step_stats.grad_norm, whole_opt.step_stats.grad_norm, rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        split_opt.step_stats.clipped_norm, whole_opt.step_stats.clipped_norm, rtol=1e-10, atol=1e-12
    )


class _Spec:
    """A case built from a class and keyword arguments (the torch.optim options with clipping)."""

    def __init__(self, cls, **kwargs) -> None:
        self.cls, self.kwargs = cls, kwargs

    def fresh_kwargs(self) -> dict:
        return copy.deepcopy(self.kwargs)


OPTION_SPECS = {
    "sgd-momentum-target-nesterov-maximize-wd": _Spec(
        ClipSGD, lr=0.1, momentum=0.9, nesterov=True, maximize=True, weight_decay=0.1,
        clip="global", clip_target="momentum", max_norm=0.5,
    ),
    "sgd-momentum-target-dampening-wd": _Spec(
        ClipSGD, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1,
        clip="global", clip_target="momentum", max_norm=0.5,
    ),
    "adagrad-maximize-wd": _Spec(
        ClipAdaGrad, lr=0.1, maximize=True, weight_decay=0.1, clip="global", max_norm=0.5
    ),
    "adagrad-norm-maximize-wd": _Spec(
        ClipAdaGrad, lr=0.1, norm=True, maximize=True, weight_decay=0.1, clip="global", max_norm=0.5
    ),
    "nsgd-maximize-wd": _Spec(NSGD, lr=0.1, momentum=0.9, maximize=True, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTION_SPECS))
def test_two_groups_equal_one_group_with_torch_options(name: str) -> None:
    """The model-wide norm is the norm of what each rule really clips or normalises, with
    ``maximize``, ``dampening``, ``nesterov`` and coupled weight decay in it."""
    split, _ = _run(OPTION_SPECS[name], grouped=True)
    whole, _ = _run(OPTION_SPECS[name], grouped=False)
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _issue_groups() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0])
    return a, b


def test_global_clip_is_model_wide_issue_reproduction() -> None:
    """Issue 10: grads (3,0,0) and (0,4,0) in two groups, max_norm 1: the update has norm 1."""
    a, b = _issue_groups()
    opt = ClipSGD([{"params": [a]}, {"params": [b]}], lr=1.0, clip="global", max_norm=1.0)
    opt.step()
    assert torch.cat([a, b]).detach().norm().item() == pytest.approx(1.0, rel=1e-6)
    stats = opt.step_stats
    assert stats.grad_norm.item() == pytest.approx(5.0)
    assert stats.clipped_norm.item() == pytest.approx(1.0)
    assert stats.clip_factor.item() == pytest.approx(0.2)
    assert [s.grad_norm.item() for s in opt.group_stats] == pytest.approx([3.0, 4.0])
    assert [s.clip_factor.item() for s in opt.group_stats] == pytest.approx([0.2, 0.2])


def test_global_clip_equals_clip_grad_norm_then_sgd() -> None:
    """One threshold: ``clip_grad_norm_(all_params)`` followed by the unclipped update."""
    params = make_params(seed=1, dtype=torch.float64)
    ref = [[p.detach().clone().requires_grad_() for p in g] for g in params]
    opt = ClipSGD([{"params": params[0]}, {"params": params[1], "lr": 0.05}], lr=0.1, momentum=0.9,
                  clip="global", max_norm=0.5)
    ref_opt = torch.optim.SGD([{"params": ref[0]}, {"params": ref[1], "lr": 0.05}], lr=0.1, momentum=0.9)
    for grads in grad_stream(5, seed=2, none_pattern=False):
        set_grads(params, grads)
        set_grads(ref, grads)
        opt.step()
        torch.nn.utils.clip_grad_norm_([p for g in ref for p in g], 0.5)
        ref_opt.step()
    for a, b in zip([p for g in params for p in g], [p for g in ref for p in g]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # clip_grad_norm_ divides by norm + 1e-6


def test_group_mode_keeps_per_group_norms() -> None:
    a, b = _issue_groups()
    opt = ClipSGD([{"params": [a]}, {"params": [b]}], lr=1.0, clip="group", max_norm=1.0)
    opt.step()
    assert a.detach().norm().item() == pytest.approx(1.0)
    assert b.detach().norm().item() == pytest.approx(1.0)
    assert torch.cat([a, b]).detach().norm().item() == pytest.approx(2**0.5)


def test_each_group_applies_its_own_threshold_to_the_model_norm() -> None:
    a, b = _issue_groups()
    opt = ClipSGD([{"params": [a]}, {"params": [b], "max_norm": 2.5}], lr=1.0, clip="global", max_norm=1.0)
    opt.step()
    torch.testing.assert_close(a.detach(), -torch.tensor([3.0, 0, 0]) / 5)
    torch.testing.assert_close(b.detach(), -torch.tensor([0, 4.0, 0]) * 2.5 / 5)


@pytest.mark.parametrize("policy", [AutoClip(percentile=50.0), ZClip(warmup=2)], ids=["autoclip", "zclip"])
def test_policy_sees_the_model_norm_once_per_step(policy) -> None:
    a, b = _issue_groups()
    opt = ClipSGD([{"params": [a]}, {"params": [b]}], lr=1.0, clip="global", max_norm=copy.deepcopy(policy))
    served = opt.param_groups[0]["max_norm"]
    assert opt.param_groups[1]["max_norm"] is served  # one policy state for the model-wide norm
    for _ in range(3):
        a.grad, b.grad = torch.tensor([3.0, 0, 0]), torch.tensor([0, 4.0, 0])
        opt.step()
    assert int(served.count) == 3
    if isinstance(served, AutoClip):
        torch.testing.assert_close(served.norms, torch.full((3,), 5.0))
    group_opt = ClipSGD(
        [{"params": [a]}, {"params": [b]}], lr=1.0, clip="group", max_norm=copy.deepcopy(policy)
    )
    assert group_opt.param_groups[1]["max_norm"] is not group_opt.param_groups[0]["max_norm"]


@pytest.mark.parametrize("cls", [ClipAdam, ClipAdaGrad], ids=["adam_norm", "adagrad_norm"])
def test_model_wide_scalar_lives_once_and_round_trips(cls) -> None:
    params = make_params(seed=4, dtype=torch.float64)
    kwargs = dict(lr=0.1, norm=True, clip="global", max_norm=1.0)
    opt = cls([{"params": params[0]}, {"params": params[1]}], **kwargs)
    stream = grad_stream(4, seed=6, none_pattern=False)
    for grads in stream[:2]:
        set_grads(params, grads)
        opt.step()
    key = cls.GROUP_STATE_KEYS[0]
    holders = [p for p in opt.state if key in opt.state[p]]
    assert holders == [params[0][0]]
    saved = copy.deepcopy(opt.state_dict())
    clone = [[p.detach().clone().requires_grad_() for p in g] for g in params]
    loaded = cls([{"params": clone[0]}, {"params": clone[1]}], **kwargs)
    loaded.load_state_dict(saved)
    for grads in stream[2:]:
        set_grads(params, grads)
        set_grads(clone, grads)
        opt.step()
        loaded.step()
    for x, y in zip([p for g in params for p in g], [p for g in clone for p in g]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("cls", [ClipAdam, ClipAdaGrad], ids=["adam_norm", "adagrad_norm"])
def test_per_group_scalar_layout_fails_with_a_message(cls) -> None:
    """A state saved with one scalar per group (the earlier layout, kept by clip='group')."""
    params = make_params(seed=4, dtype=torch.float64)
    old = cls([{"params": params[0]}, {"params": params[1]}], lr=0.1, norm=True, clip="group")
    for grads in grad_stream(2, seed=6, none_pattern=False):
        set_grads(params, grads)
        old.step()
    saved = old.state_dict()
    for group in saved["param_groups"]:
        group["clip"] = "global"  # as the earlier version saved it
    new = cls([{"params": params[0]}, {"params": params[1]}], lr=0.1, norm=True, clip="global")
    with pytest.raises(ValueError, match="clip='group'"):
        new.load_state_dict(saved)
    for group in saved["param_groups"]:
        group["clip"] = "group"  # the migration the message names
    kept = cls([{"params": params[0]}, {"params": params[1]}], lr=0.1, norm=True, clip="group")
    kept.load_state_dict(saved)
    key = cls.GROUP_STATE_KEYS[0]
    for group in params:
        assert torch.equal(kept.state[group[0]][key], old.state[group[0]][key])


def test_adam_norm_groups_sharing_the_scalar_need_one_beta2() -> None:
    params = make_params(seed=4, dtype=torch.float64)
    opt = ClipAdam([{"params": params[0]}, {"params": params[1], "betas": (0.9, 0.99)}], norm=True)
    set_grads(params, grad_stream(1, seed=6, none_pattern=False)[0])
    with pytest.raises(ValueError, match="beta2"):
        opt.step()


# ---------------------------------------------------------------------------------------------
# Issue 11: a finite float32 gradient whose norm squares past float32 range is clipped.


@pytest.mark.parametrize("name", ["clip_sgd", "clip_adam", "clip_adagrad", "delta_gclip"])
@pytest.mark.parametrize("groups", [1, 2])
def test_huge_finite_float32_gradient_is_clipped_not_skipped(name, groups) -> None:
    from tailclip.optim import OPTIMIZERS

    params = [torch.zeros(4, requires_grad=True), torch.zeros(3, requires_grad=True)]
    kwargs = {"gamma": 1.0, "delta": 0.0} if name == "delta_gclip" else {"clip": "global", "max_norm": 1.0}
    built = [{"params": params[:1]}, {"params": params[1:]}] if groups == 2 else params
    opt = OPTIMIZERS[name](built, lr=0.5, nonfinite="skip", **kwargs)
    for p in params:
        p.grad = torch.full_like(p, 1e30)
    opt.step()
    assert opt.skipped_steps == 0
    moved = torch.cat([p.detach() for p in params])
    assert bool(torch.isfinite(moved).all()) and bool((moved < 0).all())
    assert opt.step_stats.grad_norm.item() == pytest.approx(1e30 * 7**0.5, rel=1e-6)
    assert opt.step_stats.clipped_norm.item() == pytest.approx(1.0, rel=1e-6)
    if name in ("clip_sgd", "delta_gclip"):  # the update is lr times the clipped gradient
        assert moved.norm().item() == pytest.approx(0.5, rel=1e-5)


def test_nonfinite_gradient_still_skipped() -> None:
    p = torch.zeros(3, requires_grad=True)
    opt = ClipSGD([p], lr=0.5, nonfinite="skip")
    p.grad = torch.tensor([1e30, float("inf"), 0.0])
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(p.detach(), torch.zeros(3))
