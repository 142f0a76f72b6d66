"""TailMonitor: records at the right steps, clipping statistics from ClipSGD, plain optimizers, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tailclip.noise import TailMonitor
from tailclip.optim import ClipSGD


def setup(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 2))
    x = torch.randn(2000, 5)
    return model, (x, (x[:, 0] > 0).long())


def train(
    model: nn.Module,
    data: tuple,
    optimizer: torch.optim.Optimizer,
    monitor: TailMonitor,
    steps: int,
    pass_step: bool = True,
) -> list[float]:
    """Train on fixed batches; returns the pre-clip gradient norm of every step, computed independently."""
    x, y = data
    norms = []
    for step in range(1, steps + 1):
        index = torch.arange(step * 16, step * 16 + 16) % x.shape[0]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        norms.append(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item())
        optimizer.step()
        monitor.step(optimizer, step if pass_step else None)
    return norms


def test_records_at_the_right_steps_with_clipping_statistics() -> None:
    model, data = setup()
    optimizer = ClipSGD(model.parameters(), lr=0.1, max_norm=0.3)
    monitor = TailMonitor(
        model,
        nn.CrossEntropyLoss(),
        data,
        batch_size=16,
        every=4,
        mean_batches=2,
        noise_batches=20,
        n_boot=20,
    )
    norms = train(model, data, optimizer, monitor, 12)
    assert [h["step"] for h in monitor.history] == [4, 8, 12]
    for i, record in enumerate(monitor.history):
        window = np.array(norms[4 * i : 4 * i + 4])
        assert record["window_steps"] == 4
        assert record["grad_norm_q50"] == pytest.approx(np.quantile(window, 0.5), rel=1e-5)
        assert record["grad_norm_max"] == pytest.approx(window.max(), rel=1e-5)
        assert record["clip_fraction"] == pytest.approx(np.mean(window > 0.3))
        assert record["clip_factor_mean"] == pytest.approx(np.mean(np.minimum(1.0, 0.3 / window)), rel=1e-5)
        assert record["alpha_low"] <= record["alpha"] <= record["alpha_high"] <= 2.0
        assert (record["n_noise"], record["noise_batch_size"], record["mean_batches"]) == (20, 16, 2)


def test_two_param_groups_combine_in_squares() -> None:
    model, data = setup()
    optimizer = ClipSGD(
        [{"params": model[0].parameters()}, {"params": model[3].parameters()}], lr=0.1, max_norm=10.0
    )
    monitor = TailMonitor(
        model,
        nn.CrossEntropyLoss(),
        data,
        batch_size=16,
        every=3,
        mean_batches=2,
        noise_batches=20,
        n_boot=20,
    )
    norms = train(model, data, optimizer, monitor, 3)
    assert monitor.history[0]["grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
    assert monitor.history[0]["clip_fraction"] == 0.0


def test_plain_torch_optimizer_and_default_step_counter() -> None:
    model, data = setup()
    monitor = TailMonitor(
        model,
        nn.CrossEntropyLoss(),
        data,
        batch_size=16,
        every=5,
        mean_batches=2,
        noise_batches=20,
        n_boot=20,
    )
    train(model, data, torch.optim.SGD(model.parameters(), lr=0.1), monitor, 10, pass_step=False)
    assert [h["step"] for h in monitor.history] == [5, 10]
    assert monitor.history[0]["window_steps"] == 0 and "clip_fraction" not in monitor.history[0]
    assert monitor.step(None) is None and monitor.steps_seen == 11


def test_monitor_leaves_training_untouched() -> None:
    model_a, data = setup()
    model_b, _ = setup()
    opt_a, opt_b = (ClipSGD(m.parameters(), lr=0.1, max_norm=0.5) for m in (model_a, model_b))
    monitor = TailMonitor(
        model_a,
        nn.CrossEntropyLoss(),
        data,
        batch_size=16,
        every=2,
        mean_batches=2,
        noise_batches=20,
        n_boot=20,
    )

    class NoMonitor:
        def step(self, optimizer: object, step: object) -> None:
            return None

    torch.manual_seed(5)
    train(model_a, data, opt_a, monitor, 6)
    torch.manual_seed(5)
    train(model_b, data, opt_b, NoMonitor(), 6)  # type: ignore[arg-type]
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))
    assert len(monitor.history) == 3


def test_to_json(tmp_path: object) -> None:
    model, data = setup()
    monitor = TailMonitor(
        model,
        nn.CrossEntropyLoss(),
        data,
        batch_size=16,
        every=2,
        mean_batches=2,
        noise_batches=20,
        n_boot=20,
    )
    train(model, data, ClipSGD(model.parameters(), lr=0.1), monitor, 4)
    path = tmp_path / "history.json"  # type: ignore[operator]
    text = monitor.to_json(path)
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert parsed["every"] == 2 and [h["step"] for h in parsed["history"]] == [2, 4]
    assert json.loads(path.read_text()) == parsed
    assert parsed["history"][0]["alpha"] == monitor.history[0]["alpha"]


def test_errors() -> None:
    model, data = setup()
    with pytest.raises(ValueError, match="Invalid every"):
        TailMonitor(model, nn.CrossEntropyLoss(), data, batch_size=16, every=0)
    with pytest.raises(ValueError, match="gives 10 noise samples; allowed: at least 2 \\* k1 = 20"):
        TailMonitor(model, nn.CrossEntropyLoss(), data, batch_size=16, noise_batches=10)
