"""tailclip optimizers inside the PyTorch machinery: GradScaler, torch.compile, DDP.

* ``torch.amp.GradScaler`` on CPU: a step whose scaled gradients overflow (a huge initial
  scale, or an injected inf) is skipped and leaves parameters and optimizer state untouched;
  every other step equals, to rounding, a run without the scaler on the unscaled gradients.
* ``torch.compile`` of a whole training step (forward, backward, ``opt.step()``) gives the
  eager parameters.
* ``DistributedDataParallel`` (gloo, 2 CPU processes, half the batch each) gives the
  parameters of one process on the full batch: clipping sees the all-reduced gradient.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from cases import CASES, WRAPPERS, student_t
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tailclip.optim import OPTIMIZERS


def make_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def make_batches(steps: int, batch: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Gaussian inputs, heavy-tailed (Student-t, df 1.5) targets."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 6, generator=gen), student_t((batch, 1), seed=seed * 1000 + t).float())
        for t in range(steps)
    ]


def params_of(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------------------------- GradScaler


def _first_case(name: str) -> dict[str, Any]:
    """The kwargs of the optimizer's first global-clipping case (else its first case)."""
    cases = CASES[name]
    chosen = next((c for c in cases if c.kwargs.get("clip") == "global" and c.global_bound), cases[0])
    return chosen.fresh_kwargs()


def _scaler_factories() -> list[Any]:
    factories = []
    for name, cls in OPTIMIZERS.items():
        if name in WRAPPERS or not CASES.get(name):
            continue
        factories.append(pytest.param(
            (lambda params, cls=cls, name=name: cls(params, **_first_case(name))), 1, id=name
        ))
    if "noise_injection" in OPTIMIZERS:
        wrapper = OPTIMIZERS["noise_injection"]
        base = OPTIMIZERS.get("clip_adam", OPTIMIZERS["clip_sgd"])
        base_kwargs = _first_case("clip_adam" if "clip_adam" in OPTIMIZERS else "clip_sgd")
        for variance, microbatches in (("ema", 1), ("microbatch", 2)):
            factories.append(pytest.param(
                (lambda params, variance=variance: wrapper(
                    base(params, **copy.deepcopy(base_kwargs)), eta=0.01, variance=variance,
                    generator=torch.Generator().manual_seed(7),
                )),
                microbatches,
                id=f"noise_injection-{variance}",
            ))
    return factories


def _accumulate(opt: torch.optim.Optimizer) -> None:
    if hasattr(opt, "accumulate"):
        opt.accumulate()


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "autocast-bfloat16"])
@pytest.mark.parametrize(("factory", "microbatches"), _scaler_factories())
def test_grad_scaler_skips_overflow_and_matches_unscaled_run(
    factory: Callable[[Any], torch.optim.Optimizer], microbatches: int, autocast: bool
) -> None:
    """Step 0 overflows at init_scale 2^120 (grads > 2^8), step 3 gets an injected inf."""
    steps, overflow_steps = 6, {0, 3}
    batches = make_batches(steps, 8 * microbatches, seed=1)
    batches[0][1][0, 0] = 1e6  # a heavy-tail outlier: its scaled gradient overflows float32
    model, reference = make_mlp(0), make_mlp(0)
    opt, ref_opt = factory(model.parameters()), factory(reference.parameters())
    scaler = torch.amp.GradScaler(
        "cpu", init_scale=2.0**120, backoff_factor=2.0**-50, growth_interval=10_000
    )

    def loss_of(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(x)
        return F.mse_loss(out.float(), y) / microbatches

    for t, (x, y) in enumerate(batches):
        opt.zero_grad()
        before = (params_of(model), copy.deepcopy(opt.state_dict()))
        for xs, ys in zip(x.chunk(microbatches), y.chunk(microbatches)):
            scaler.scale(loss_of(model, xs, ys)).backward()
            _accumulate(opt)
        if t == 3:
            next(model.parameters()).grad[0, 0] = math.inf
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        if t in overflow_steps:
            if t == 0:
                assert scaler.get_scale() == 2.0**70, "step 0 was meant to overflow"
            for p, b in zip(params_of(model), before[0]):
                assert torch.equal(p, b), f"step {t}: a skipped step moved the parameters"
            opt.zero_grad()  # what the next step starts from: records of the skipped step must be gone
            _assert_state_equal(opt.state_dict(), before[1], f"step {t}")
            continue
        ref_opt.zero_grad()
        for xs, ys in zip(x.chunk(microbatches), y.chunk(microbatches)):
            loss_of(reference, xs, ys).backward()
            _accumulate(ref_opt)
        ref_opt.step()
        for p, r in zip(params_of(model), params_of(reference)):
            torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7, msg=lambda m, t=t: f"step {t}: {m}")
    assert scaler.get_scale() == 2.0**20


def _assert_state_equal(actual: Any, expected: Any, path: str) -> None:
    if isinstance(expected, Tensor):
        assert torch.equal(actual, expected), f"{path}: a skipped step changed the optimizer state"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: state keys changed"
        for key in expected:
            _assert_state_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_state_equal(a, e, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------- compile


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[Tensor, Tensor], Tensor]:
    def train_step(x: Tensor, y: Tensor) -> Tensor:
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return train_step


@pytest.mark.slow
def test_torch_compile_whole_training_step_matches_eager() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    batches = make_batches(5, 16, seed=2)
    eager, compiled = make_mlp(3), make_mlp(3)
    kwargs = {"lr": 1e-2, "clip": "global", "max_norm": 1.0}
    eager_step = _train_step(eager, OPTIMIZERS["clip_adam"](eager.parameters(), **kwargs))
    compiled_opt = OPTIMIZERS["clip_adam"](compiled.parameters(), **kwargs)
    compiled_step = torch.compile(_train_step(compiled, compiled_opt))
    start = time.perf_counter()
    for x, y in batches:
        torch.testing.assert_close(compiled_step(x, y), eager_step(x, y), rtol=1e-5, atol=1e-5)
    print(f"compiled 5 steps in {time.perf_counter() - start:.1f} s")
    assert counters["stats"]["unique_graphs"] > 0, "torch.compile compiled nothing"
    for c, e in zip(params_of(compiled), params_of(eager)):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(c, i) for c, i in zip(params_of(compiled), params_of(make_mlp(3))))


# --------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, name: str, kwargs: dict[str, Any],
                batches: list[tuple[Tensor, Tensor]], out_path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(make_mlp(4))
        opt = OPTIMIZERS[name](model.parameters(), **kwargs)
        for x, y in batches:
            opt.zero_grad()
            F.mse_loss(model(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
            opt.step()
        torch.save({"params": params_of(model.module), "clipped": bool(opt.step_stats.clipped)},
                   f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip_sgd", "clip_adam"])
def test_ddp_matches_single_process_on_the_full_batch(name: str, tmp_path: Any) -> None:
    kwargs = {"lr": 0.05 if name == "clip_sgd" else 1e-2, "clip": "global", "max_norm": 0.5}
    batches = make_batches(5, 16, seed=5)
    out = str(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, _free_port(), name, kwargs, batches, out), nprocs=2, join=True)
    single = make_mlp(4)
    opt = OPTIMIZERS[name](single.parameters(), **kwargs)
    clipped = []
    for x, y in batches:
        opt.zero_grad()
        F.mse_loss(single(x), y).backward()
        opt.step()
        clipped.append(bool(opt.step_stats.clipped))
    assert any(clipped), "max_norm never clipped: the test would not see a wrong norm"
    for rank in range(2):
        result = torch.load(f"{out}.{rank}", weights_only=True)
        for d, s in zip(result["params"], params_of(single)):
            torch.testing.assert_close(d, s, rtol=1e-5, atol=1e-6)
        assert result["clipped"] == clipped[-1]
