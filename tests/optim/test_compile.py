"""``torch.compile(opt.step)``: the parameters AND the statistics equal eager's (issue 10, part 3).

For every registered ClipOptimizer (its first battery case, two param groups, a few steps on
tiny tensors): parameters, ``group_stats`` and ``step_stats`` under compile equal eager's.
``fullgraph=True`` traces the step with ``nonfinite="raise"`` (a device-side check) and fails
with a message naming ``nonfinite`` with ``nonfinite="skip"``.
"""

from __future__ import annotations

import pytest
import torch
from cases import CASES, WRAPPERS

from tailclip.optim import OPTIMIZERS, ClipSGD

STEPS = 3


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, generator=gen).requires_grad_(), torch.randn(2, 2, generator=gen).requires_grad_()]


def _run(name: str, compiled: bool, **overrides) -> tuple[list[torch.Tensor], list[list[float]]]:
    case = CASES[name][0]
    params = _params()
    opt = case.cls([{"params": params[:1]}, {"params": params[1:], **case.group2_overrides()}],
                   **case.fresh_kwargs(**overrides))
    step = torch.compile(opt.step) if compiled else opt.step
    stats = []
    for t in range(STEPS):
        gen = torch.Generator().manual_seed(10 + t)
        for p in params:
            p.grad = 3 * torch.randn(p.shape, generator=gen)
        step()
        records = [*opt.group_stats, opt.step_stats]
        stats.append(
            [float(v) for s in records for v in (s.grad_norm, s.clipped_norm, s.clip_factor, s.clipped)]
        )
        stats[-1].append(len(opt.group_stats))
    return [p.detach().clone() for p in params], stats


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in WRAPPERS])
def test_compiled_step_equals_eager_params_and_stats(name) -> None:
    eager_params, eager_stats = _run(name, compiled=False)
    compiled_params, compiled_stats = _run(name, compiled=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    for a, b in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert eager_stats[0][-1] == 2  # both groups reported
    for eager, compiled in zip(eager_stats, compiled_stats, strict=True):
        assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_fullgraph_with_nonfinite_raise_traces_and_equals_eager() -> None:
    params = _params()
    opt = ClipSGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1, momentum=0.9)
    step = torch.compile(opt.step, fullgraph=True)
    ref = _params()
    ref_opt = ClipSGD([{"params": ref[:1]}, {"params": ref[1:], "lr": 0.05}], lr=0.1, momentum=0.9)
    for t in range(STEPS):
        gen = torch.Generator().manual_seed(10 + t)
        for p, q in zip(params, ref):
            p.grad = 3 * torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        step()
        ref_opt.step()
        torch.testing.assert_close(opt.step_stats.grad_norm, ref_opt.step_stats.grad_norm)
        torch.testing.assert_close(opt.step_stats.clipped_norm, ref_opt.step_stats.clipped_norm)
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b)


def test_fullgraph_nonfinite_raise_catches_a_nan() -> None:
    params = _params()
    opt = ClipSGD(params, lr=0.1)
    step = torch.compile(opt.step, fullgraph=True)
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite gradient"):
        step()


def test_fullgraph_with_nonfinite_skip_fails_naming_the_option() -> None:
    params = _params()
    opt = ClipSGD(params, lr=0.1, nonfinite="skip")
    step = torch.compile(opt.step, fullgraph=True)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(Exception, match="nonfinite='raise'"):
        step()


def test_compiled_skip_without_fullgraph_still_skips() -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    opt = ClipSGD(params, lr=0.1, nonfinite="skip")
    step = torch.compile(opt.step)
    for p in params:
        p.grad = torch.full_like(p, float("inf"))
    step()
    assert opt.skipped_steps == 1
    for p, q in zip(params, before):
        assert torch.equal(p.detach(), q)
