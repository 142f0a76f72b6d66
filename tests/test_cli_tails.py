"""``tailclip tails``: the noise of a config's task, its files, its numbers, its exit codes.

On ``noisy-quadratic`` the gradient is ``A (x - x*) + xi_t`` with ``xi_t`` from the task's
generator, so the measured mean gradient is replayed exactly here, and the tail index of the
noise is known: symmetric alpha-stable coordinates with alpha = 1.5, or Gaussian ones (alpha 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.problems.quadratic import eigenvalues
from tailclip.problems.samplers import sample_noise

runner = CliRunner()
FILES = {
    "noise_report.json",
    "noise_histogram.png",
    "hill_plot.png",
    "running_variance.png",
    "noise_section.html",
}


def write_config(tmp_path: Path, noise: str = "stable", **train: Any) -> Path:
    data = {
        "name": "tails",
        "task": {
            "name": "noisy-quadratic",
            "options": {
                "dim": 20,
                "noise": noise,
                "alpha": 1.5,
                "dtype": "float64",
                "condition_number": 10.0,
            },
        },
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 50, "batch_size": 1, "seed": 3, **train},
        "output": {"store": str(tmp_path / "runs" / "store.sqlite")},
    }
    path = tmp_path / "tails.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["tails", *args])


def replayed_xi(seed: int, batch_size: int, count: int, noise: str = "stable") -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            sample_noise(noise, (batch_size, 20), alpha=1.5, df=1.5, generator=generator).mean(dim=0).double()
            for _ in range(count)
        ]
    )


def x_star() -> torch.Tensor:
    return torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(
    ("noise", "verdict"),
    [("stable", "heavy-tailed"), ("gaussian", "light-tailed")],
    ids=["stable", "gaussian"],
)
def test_tails_writes_the_report_and_measures_the_known_tail(
    tmp_path: Path, noise: str, verdict: str
) -> None:
    out = tmp_path / "out"
    result = invoke(str(write_config(tmp_path, noise)), "-o", str(out), "--noise-batches", "400")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == FILES  # no training figure without a history
    report = json.loads((out / "noise_report.json").read_text())
    tail = report["tail_index"]
    if noise == "stable":
        assert abs(tail["alpha"] - 1.5) <= 0.2
    else:
        assert tail["alpha"] >= 1.85
    assert report["verdict"]["label"] == verdict
    assert report["sample"]["n"] == 400 and report["sample"]["mean_batches"] == 16
    assert report["sample"]["step"] == 0 and report["sample"]["batch_size"] == 1
    # the rich table shows the verdict and alpha with its interval; no progress bar off a terminal
    assert verdict in result.stdout
    assert f"{tail['alpha']:.3f} [{tail['low']:.3f}, {tail['high']:.3f}]" in result.stdout
    assert "noise batches" not in result.stdout
    section = (out / "noise_section.html").read_text()
    assert section.startswith('<section class="tailclip-noise">') and verdict in section
    for png in ("noise_histogram.png", "hill_plot.png", "running_variance.png"):
        assert f'src="{png}"' in section


def test_tails_after_training_steps_measures_at_step_n(tmp_path: Path) -> None:
    """--steps 7 with SGD lr 0.1: x_7 replayed by hand; gbar = A (x_7 - x*) + mean of the next 16 xi."""
    out = tmp_path / "out"
    result = invoke(str(write_config(tmp_path)), "-o", str(out), "--steps", "7", "--noise-batches", "30")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "noise_report.json").read_text())
    a = eigenvalues(20, 10.0)
    xi = replayed_xi(3, 1, 7 + 16)
    x = torch.zeros(20, dtype=torch.float64)
    for t in range(7):
        x = x - 0.1 * (a * (x - x_star()) + xi[t])
    gbar = a * (x - x_star()) + xi[7:].mean(dim=0)
    assert report["sample"]["step"] == 7
    assert report["sample"]["mean_grad_norm"] == pytest.approx(
        float(torch.linalg.vector_norm(gbar)), rel=1e-10
    )


def test_tails_at_another_batch_size_keeps_training_at_the_config_batch_size(tmp_path: Path) -> None:
    """--batch-size 4 with train.batch_size 1: noise means of 4 draws, from a fresh stream of the task."""
    out = tmp_path / "out"
    config = str(write_config(tmp_path))
    result = invoke(
        config, "-o", str(out), "--batch-size", "4", "--mean-batches", "5", "--noise-batches", "20"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "noise_report.json").read_text())
    gbar = eigenvalues(20, 10.0) * (0.0 - x_star()) + replayed_xi(3, 4, 5).mean(dim=0)
    assert report["sample"]["batch_size"] == 4 and report["sample"]["mean_batch_size"] == 4
    assert report["sample"]["mean_grad_norm"] == pytest.approx(
        float(torch.linalg.vector_norm(gbar)), rel=1e-10
    )


def test_tails_set_overrides_and_default_output_folder(tmp_path: Path) -> None:
    result = invoke(str(write_config(tmp_path)), "--set", "name=renamed", "--noise-batches", "20")
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "tails" / "renamed"
    assert {p.name for p in out.iterdir()} == FILES
    assert str(out / "noise_report.json") in result.stdout


BAD = [
    pytest.param(["--set", "train.stepz=3"], "train.stepz: unknown key", id="unknown-key"),
    pytest.param(["--set", "task={name: stochastic-quadratic}", "--set", "optimizer.name=clip_sgd"],
                 "task.name: 'stochastic-quadratic' is a vectorized task; allowed: a model task (",
                 id="vectorized"),
    pytest.param(["--mean-batches", "0"], "--mean-batches: got 0; allowed: an integer >= 1",
                 id="mean-batches"),
    pytest.param(["--noise-batches", "5"], "--noise-batches: 5 gives 5 noise samples; allowed: at least 20",
                 id="too-few-samples"),
    pytest.param(["--steps", "51"], "--steps: got 51; allowed: 0 <= steps <= train.steps (50)", id="steps"),
    pytest.param(["--per-sample"], "per_sample: task 'noisy-quadratic' measures noise through its own loss",
                 id="per-sample"),
    pytest.param(["--set", "train.device=mps"], "train.device: 'mps' is not available", id="device"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD)
def test_user_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = invoke(str(write_config(tmp_path)), "-o", str(out), *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "file not found" in result.stderr


def test_diverged_training_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    """SGD with lr 50 on the quadratic: |1 - 50| > 1, the float32 iterate overflows within 40 steps."""
    out = tmp_path / "out"
    config = str(write_config(tmp_path))
    overrides = ["--set", "optimizer.lr=50.0", "--set", "task.options.dtype=float32"]
    result = invoke(config, "-o", str(out), *overrides, "--steps", "40")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: tails failed: RuntimeError: training diverged")
    assert not out.exists()


def test_another_batch_size_measures_the_trained_task_itself(tmp_path: Path, monkeypatch: Any) -> None:
    """--steps 3 --batch-size 4: one task is built, and its noise stream continues after training.

    Training draws xi_1..xi_3 at batch size 1 from the seed-3 generator; the mean gradient then
    takes the next 5 draws of 4 noise vectors each from the same generator.
    """
    import tailclip.engine.tails as tails

    built: list[Any] = []
    original = tails.build_task
    monkeypatch.setattr(tails, "build_task", lambda *a: built.append(original(*a)) or built[-1])
    out = tmp_path / "out"
    sizes = ["--batch-size", "4", "--mean-batches", "5", "--noise-batches", "20"]
    result = invoke(str(write_config(tmp_path)), "-o", str(out), "--steps", "3", *sizes)
    assert result.exit_code == 0, result.output
    assert len(built) == 1
    generator = torch.Generator().manual_seed(3)
    draw = lambda b: sample_noise("stable", (b, 20), alpha=1.5, df=1.5, generator=generator).mean(0).double()
    a = eigenvalues(20, 10.0)
    x = torch.zeros(20, dtype=torch.float64)
    for _ in range(3):
        x = x - 0.1 * (a * (x - x_star()) + draw(1))
    gbar = a * (x - x_star()) + torch.stack([draw(4) for _ in range(5)]).mean(dim=0)
    report = json.loads((out / "noise_report.json").read_text())
    assert report["sample"]["batch_size"] == 4 and report["sample"]["step"] == 3
    expected = float(torch.linalg.vector_norm(gbar))
    assert report["sample"]["mean_grad_norm"] == pytest.approx(expected, rel=1e-10)
