"""The generic battery, part 2: torch.optim's generic optimizer contract, for every registered
ClipOptimizer (the first case each rule declares, see ``cases.py``).

As torch's ``OptimizerInfo`` battery checks its own optimizers: ``step()`` without gradients
is a no-op; ``zero_grad`` both ways; step pre/post hooks; ``state_dict`` carries a format
version and a state saved by the previous tailclip version (``data/format1_states.pt``) loads
and continues; ``deepcopy``; param groups added later; a Tensor ``lr`` under every LR
scheduler that edits one; ``torch.compile(opt.step)`` does not recompile when a scheduler
changes a Tensor ``lr``; and the CUDA-only contracts (``fused``, ``capturable``), which skip
without a GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from cases import CASES, OptimCase, grad_stream, make_params, param_groups, set_grads
from torch import Tensor
from torch.optim import lr_scheduler

from tailclip.optim import OPTIMIZERS
from tailclip.optim._base import STATE_FORMAT, STATE_FORMAT_KEY

FIRST_CASES = [pytest.param(cases[0], id=name) for name, cases in CASES.items() if cases]
NAMES = [name for name, cases in CASES.items() if cases]
FORMAT1 = Path(__file__).parent / "data" / "format1_states.pt"


def _flat(params: list[list[Tensor]]) -> list[Tensor]:
    return [p.detach().clone() for group in params for p in group]


def _equal(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("case", FIRST_CASES)
def test_step_without_gradients_is_a_no_op(case: OptimCase) -> None:
    params = make_params(0)
    opt = case.build(param_groups(case, params))
    before = _flat(params)
    opt.step()
    assert _equal(_flat(params), before)
    assert len(opt.state) == 0


@pytest.mark.parametrize("set_to_none", [True, False], ids=["none", "zeros"])
@pytest.mark.parametrize("case", FIRST_CASES)
def test_zero_grad(case: OptimCase, set_to_none: bool) -> None:
    params = make_params(0)
    opt = case.build(param_groups(case, params))
    set_grads(params, grad_stream(1, seed=1, none_pattern=False)[0])
    opt.zero_grad(set_to_none=set_to_none)
    for p in (p for group in params for p in group):
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and not p.grad.any()


@pytest.mark.parametrize("case", FIRST_CASES)
def test_step_hooks_run_around_the_step(case: OptimCase) -> None:
    params = make_params(0)
    opt = case.build(param_groups(case, params))
    calls: list[tuple[str, bool]] = []
    before = _flat(params)
    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", _equal(_flat(params), before))))
    post = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", _equal(_flat(params), before))))
    set_grads(params, grad_stream(1, seed=1, none_pattern=False)[0])
    opt.step()
    assert calls == [("pre", True), ("post", False)]
    pre.remove()
    post.remove()
    opt.step()
    assert len(calls) == 2


@pytest.mark.parametrize("case", FIRST_CASES)
def test_state_dict_carries_the_format_version(case: OptimCase) -> None:
    params = make_params(0)
    opt = case.build(param_groups(case, params))
    assert opt.state_dict()[STATE_FORMAT_KEY] == STATE_FORMAT
    state = opt.state_dict()
    state[STATE_FORMAT_KEY] = STATE_FORMAT + 1
    with pytest.raises(ValueError, match=STATE_FORMAT_KEY):
        opt.load_state_dict(state)


def _format1_stream(step: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen, dtype=torch.float64) * 3 for s in ((3, 2), (2,))]


def _format1_params() -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in ((3, 2), (2,))]


@pytest.mark.parametrize("name", sorted(torch.load(FORMAT1, weights_only=True)))
def test_state_saved_by_the_previous_version_loads_and_continues(name: str) -> None:
    """``data/format1_states.pt`` was written by tailclip before the format version (commit
    35d5f9e, ``data/make_format1_states.py``): 3 steps saved; today's code loads them and
    continues exactly as an uninterrupted run of today's code."""
    saved = torch.load(FORMAT1, weights_only=True)[name]
    assert STATE_FORMAT_KEY not in saved["state"]
    reference = _format1_params()
    uninterrupted = OPTIMIZERS[name](reference, **saved["kwargs"])
    for t in range(5):
        for p, g in zip(reference, _format1_stream(t)):
            p.grad = g
        uninterrupted.step()
        if t == 2:
            assert _equal([p.detach() for p in reference], saved["params"])
    resumed_params = [p.clone().requires_grad_() for p in saved["params"]]
    resumed = OPTIMIZERS[name](resumed_params, **saved["kwargs"])
    resumed.load_state_dict(saved["state"])
    for t in range(3, 5):
        for p, g in zip(resumed_params, _format1_stream(t)):
            p.grad = g
        resumed.step()
    assert _equal([p.detach() for p in resumed_params], [p.detach() for p in reference])
    assert resumed.state_dict()[STATE_FORMAT_KEY] == STATE_FORMAT


@pytest.mark.parametrize("case", FIRST_CASES)
def test_deepcopy_continues_independently(case: OptimCase) -> None:
    params = make_params(0)
    opt = case.build(param_groups(case, params))
    stream = grad_stream(4, seed=2)
    for grads in stream[:2]:
        set_grads(params, grads)
        opt.step()
    twin = copy.deepcopy(opt)
    twin_params = [group["params"] for group in twin.param_groups]
    frozen = _flat(params)
    for grads in stream[2:]:
        set_grads(twin_params, grads)
        twin.step()
    assert _equal(_flat(params), frozen)  # the copy's steps leave the original alone
    for grads in stream[2:]:
        set_grads(params, grads)
        opt.step()
    assert _equal(_flat(params), _flat(twin_params))


@pytest.mark.parametrize("case", FIRST_CASES)
def test_param_group_added_later_steps_as_a_group_given_at_construction(case: OptimCase) -> None:
    """A group added after two steps is the same as a group present from the start whose
    parameters had no gradients for those two steps."""
    stream = grad_stream(4, seed=3, none_pattern=False)
    for grads in stream[:2]:
        grads[1] = [None] * len(grads[1])
    late, early = make_params(0), make_params(0)
    opt_late = case.build(param_groups(case, late)[:1])
    opt_early = case.build(param_groups(case, early))
    for t, grads in enumerate(stream):
        if t == 2:
            opt_late.add_param_group(param_groups(case, late)[1])
        set_grads(late, grads)
        set_grads(early, grads)
        opt_late.step()
        opt_early.step()
    assert _equal(_flat(late), _flat(early))


def _schedulers() -> dict[str, Any]:
    """Every torch LR scheduler that edits ``lr`` in place (Tensor lrs are filled, not replaced)."""
    return {
        "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda t: 0.9**t),
        "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda t: 0.9),
        "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[1, 3], gamma=0.5),
        "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2),
        "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=3),
        "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8),
        "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=4, power=2.0),
        "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=3),
        "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2),
        "CyclicLR": lambda o: lr_scheduler.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=2,
                                                   cycle_momentum=False),
        "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=10, cycle_momentum=False),
        "SequentialLR": lambda o: lr_scheduler.SequentialLR(
            o, [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2), lr_scheduler.ExponentialLR(o, 0.9)],
            milestones=[2]),
        "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
            [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2), lr_scheduler.ExponentialLR(o, 0.9)]),
        "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5),
    }


def test_the_scheduler_list_covers_torch() -> None:
    """New torch schedulers show up here: each must be in the list (or named as excluded)."""
    excluded = {"LRScheduler", "_LRScheduler"}
    torch_schedulers = {
        n for n, obj in vars(lr_scheduler).items()
        if isinstance(obj, type) and n[0] != "_" and (issubclass(obj, lr_scheduler.LRScheduler)
                                                     or n == "ReduceLROnPlateau")
    }
    assert torch_schedulers - excluded <= set(_schedulers())


@pytest.mark.parametrize("scheduler", sorted(_schedulers()))
@pytest.mark.parametrize("case", FIRST_CASES)
def test_tensor_lr_under_every_scheduler_matches_a_float_lr(case: OptimCase, scheduler: str) -> None:
    runs = []
    for lr in (float(case.kwargs["lr"]), torch.tensor(float(case.kwargs["lr"]), dtype=torch.float64)):
        params = make_params(0, dtype=torch.float64)
        groups = param_groups(case, params)
        if isinstance(lr, Tensor):
            groups[1]["lr"] = torch.tensor(float(groups[1]["lr"]), dtype=torch.float64)
        opt = case.build(groups, lr=lr)
        sched = _schedulers()[scheduler](opt)
        lrs = []
        for grads in grad_stream(5, seed=4):
            set_grads(params, grads)
            opt.step()
            sched.step(1.0) if scheduler == "ReduceLROnPlateau" else sched.step()
            lrs += [float(g["lr"]) for g in opt.param_groups]
        assert all(isinstance(g["lr"], Tensor) == isinstance(lr, Tensor) for g in opt.param_groups)
        runs.append((_flat(params), lrs))
    (float_params, float_lrs), (tensor_params, tensor_lrs) = runs
    assert tensor_lrs == pytest.approx(float_lrs, rel=1e-12)
    for a, b in zip(tensor_params, float_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip_sgd", "clip_adam"])
def test_compiled_step_does_not_recompile_when_a_scheduler_changes_a_tensor_lr(name: str) -> None:
    from torch._dynamo.utils import counters

    case = CASES[name][0]
    params = make_params(0)
    groups = param_groups(case, params)
    groups[1]["lr"] = torch.tensor(0.005)
    opt = case.build(groups, lr=torch.tensor(0.01))
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.8)
    step = torch.compile(opt.step)
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for grads in grad_stream(5, seed=5, none_pattern=False):
        set_grads(params, grads)
        step()
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    # the first step builds the state (its own graphs); later steps, each with a new lr, reuse
    assert graphs[1] == graphs[-1], graphs
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01 * 0.8**5)


# ------------------------------------------------------------------ CUDA-only contracts

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FUSED = [("clip_sgd", {"momentum": 0.9}), ("clip_adam", {"weight_decay": 0.1, "amsgrad": True}),
         ("clip_adagrad", {"lr_decay": 0.1})]
TORCH = {"clip_sgd": torch.optim.SGD, "clip_adam": torch.optim.AdamW, "clip_adagrad": torch.optim.Adagrad}


def _torch_run(make: Any, device: str, steps: int = 4) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in ((4, 3), (5,))]
    opt = make(params)
    for t in range(steps):
        gen = torch.Generator().manual_seed(10 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device)
        opt.step()
    return [p.detach().cpu() for p in params]


@pytest.mark.parametrize(("name", "kwargs"), FUSED, ids=[n for n, _ in FUSED])
def test_fused_flag_is_accepted_and_routed_to_torchs_fused_kernel_on_cpu(name: str, kwargs: dict) -> None:
    """On the CPU torch has fused SGD, AdamW and Adagrad kernels: the flag runs them (same
    numbers as torch's ``fused=True``)."""
    lr = {"clip_sgd": 0.1, "clip_adam": 1e-2, "clip_adagrad": 0.1}[name]
    expected = _torch_run(lambda ps: TORCH[name](ps, lr=lr, **kwargs, fused=True), "cpu")
    got = _torch_run(lambda ps: OPTIMIZERS[name](ps, lr=lr, clip=None, **kwargs, fused=True), "cpu")
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


@pytest.mark.parametrize("name", ["nsgd", "acclip", "delta_gclip"])
def test_fused_is_refused_where_there_is_no_fused_kernel(name: str) -> None:
    with pytest.raises(ValueError, match="Invalid fused: True; .* no fused kernel") as info:
        OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], lr=0.1, fused=True)
    assert "\n" not in str(info.value)


def test_capturable_is_accepted_and_needs_a_capturable_device_on_cpu() -> None:
    p = torch.zeros(3, requires_grad=True)
    opt = OPTIMIZERS["clip_adam"]([p], capturable=True)
    assert opt.param_groups[0]["capturable"] is True
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="Invalid capturable: True; got a parameter on cpu") as info:
        opt.step()
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="capturable"):
        OPTIMIZERS["clip_adam"]([p], capturable=True, norm=True)


@needs_cuda
@pytest.mark.parametrize(("name", "kwargs"), FUSED, ids=[n for n, _ in FUSED])
def test_fused_on_cuda_follows_torch(name: str, kwargs: dict) -> None:
    lr = {"clip_sgd": 0.1, "clip_adam": 1e-2, "clip_adagrad": 0.1}[name]
    expected = _torch_run(lambda ps: TORCH[name](ps, lr=lr, **kwargs, fused=True), "cuda")
    got = _torch_run(lambda ps: OPTIMIZERS[name](ps, lr=lr, clip=None, **kwargs, fused=True), "cuda")
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


@needs_cuda
@pytest.mark.parametrize("lr", [1e-2, "tensor"])
def test_capturable_adam_on_cuda_follows_torch(lr: Any) -> None:
    def make_lr() -> Any:
        return torch.tensor(1e-2, device="cuda") if lr == "tensor" else lr

    kwargs = {"weight_decay": 0.1, "amsgrad": True, "capturable": True}
    expected = _torch_run(lambda ps: torch.optim.AdamW(ps, lr=make_lr(), **kwargs), "cuda")
    got = _torch_run(lambda ps: OPTIMIZERS["clip_adam"](ps, lr=make_lr(), clip=None, **kwargs), "cuda")
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)
    opt = OPTIMIZERS["clip_adam"]([torch.zeros(2, device="cuda", requires_grad=True)], capturable=True)
    opt.param_groups[0]["params"][0].grad = torch.ones(2, device="cuda")
    opt.step()
    assert opt.state[opt.param_groups[0]["params"][0]]["step"].device.type == "cuda"
