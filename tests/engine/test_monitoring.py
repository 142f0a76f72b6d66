"""Noise diagnostics in the engine: the ModelTask noise source, the monitor section, the runner's records.

The noise of ``noisy-quadratic`` is known in closed form: its gradient is ``A (x - x*) + xi_t``,
so a noise sample is ``xi_j - mean(xi_1..xi_M)``, replayed here from the task's generator.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tailclip.engine.config import ConfigError, parse_config
from tailclip.engine.report import write_report
from tailclip.engine.runner import checkpoint_path, run_one
from tailclip.engine.schedules import make_scheduler
from tailclip.engine.store import ResultsStore
from tailclip.engine.train_steps import build_task, model_step
from tailclip.engine.yaml_loading import apply_overrides
from tailclip.noise import BatchLoss, RandomProjection, collect_noise
from tailclip.problems import TASKS, ModelTask, TaskContext, TaskOptions, register_task
from tailclip.problems.samplers import sample_noise

BASE: dict[str, Any] = {
    "name": "m",
    "task": {"name": "noisy-quadratic", "options": {"dim": 6, "dtype": "float64", "noise": "student_t"}},
    "optimizer": {"name": "clip_sgd", "lr": 0.1, "clip": "global", "max_norm": 2.0},
    "train": {"steps": 40, "eval_every": 10, "checkpoint_every": None},
}
MONITOR = "monitor={every: 10, mean_batches: 2, noise_batches: 20}"
NOISE_KEYS = {"noise/alpha", "noise/alpha_low", "noise/alpha_high", "noise/clipped_fraction"}
REPORT_KINDS = {"noise/report", "noise/histogram", "noise/hill", "noise/moments", "noise/training"}


def make(*overrides: str) -> Any:
    return parse_config(apply_overrides(BASE, list(overrides)))


def series(store: ResultsStore, run_id: str) -> dict[str, tuple[list[int], list[float]]]:
    return {
        k: (s.tolist(), v.tolist())
        for k, (s, v) in store.metrics([run_id])[run_id].items()
        if not k.startswith("time/")
    }


def without_noise(logged: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logged.items() if not k.startswith("noise/")}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "a" / "store.sqlite")


@pytest.fixture
def other(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "b" / "store.sqlite")


# ----------------------------------------------------------------------------- the noise source


def replayed_noise(config: Any, count: int, skip: int = 0) -> torch.Tensor:
    """The task's ``xi_t`` (``t = skip + 1 .. skip + count``), drawn again from its generator."""
    options = config.task.options
    generator = torch.Generator().manual_seed(config.train.seed)
    draws = [
        sample_noise(
            options["noise"], (config.train.batch_size, options["dim"]), alpha=options["alpha"],
            df=options["df"], generator=generator,
        ).mean(dim=0).double()
        for _ in range(skip + count)
    ]  # fmt: skip
    return torch.stack(draws[skip:])


def test_default_noise_source_measures_the_task_objective_on_its_next_batches() -> None:
    """Norms of xi_j - mean(xi_1..M) from the task's own stream; the data position is put back."""
    config = make("train.batch_size=3")
    task = build_task(config, torch.device("cpu"))
    assert isinstance(task, ModelTask)
    source = task.noise_source()
    assert source.model is task.model and isinstance(source.loss_fn, BatchLoss) and source.batch_size == 3
    before = task.data_state()["noise_generator"].clone()
    with task.preserved_data_position():
        sample = collect_noise(source.model, source.loss_fn, source.data, batch_size=3, mean_batches=4,
                               noise_batches=30, seed=5)  # fmt: skip
    assert torch.equal(task.data_state()["noise_generator"], before)
    xi = replayed_noise(config, 34)
    expected_noise = xi[4:] - xi[:4].mean(dim=0)
    np.testing.assert_allclose(
        sample.norms, torch.linalg.vector_norm(expected_noise, dim=1).numpy(), rtol=1e-12
    )
    model = task.model
    a = model.eigenvalues.double()
    gbar = a * (model.x.detach().double() - model.x_star.double()) + xi[:4].mean(dim=0)
    assert sample.mean_grad_norm == pytest.approx(float(torch.linalg.vector_norm(gbar)), rel=1e-12)
    # the next training batch is still the first one
    assert torch.allclose(task.train_batch(), xi[0])


def test_default_noise_source_refuses_other_batch_sizes_and_per_sample() -> None:
    task = build_task(make(), torch.device("cpu"))
    source = task.noise_source()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"^Invalid batch_size: 4; allowed: 1 "):
        collect_noise(
            source.model, source.loss_fn, source.data, batch_size=4, mean_batches=1, noise_batches=2
        )
    with pytest.raises(ValueError, match=r"^Invalid per_sample=True: a BatchLoss has no per-example form"):
        collect_noise(source.model, source.loss_fn, source.data, batch_size=1, mean_batches=1,
                      noise_batches=2, per_sample=True)  # fmt: skip


def test_batch_loss_on_a_dataset_equals_the_output_target_form() -> None:
    """The same numbers whether the loss is loss_fn(model(x), y) or a BatchLoss of the (x, y) rows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3)).double()
    x = torch.randn(600, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (600,))
    loss = nn.CrossEntropyLoss()
    kwargs: dict[str, Any] = {"batch_size": 8, "mean_batches": 5, "noise_batches": 40, "seed": 3}
    plain = collect_noise(model, loss, (x, y), **kwargs)
    whole = collect_noise(model, BatchLoss(lambda batch: loss(model(batch[0]), batch[1])), (x, y), **kwargs)
    np.testing.assert_array_equal(plain.norms, whole.norms)
    np.testing.assert_array_equal(plain.projections, whole.projections)


# ----------------------------------------------------------------------------- the monitor section


def test_monitor_section_is_validated() -> None:
    assert make(MONITOR).monitor.noise_batches == 20
    cases = [
        ("monitor.noise_batches=5", r"monitor\.noise_batches: 5 is out of range; allowed: >= 20"),
        ("monitor.samples=100", r"monitor\.samples: unknown key; allowed: every, batch_size, mean_batches"),
        ("monitor.batch_size=4", r"monitor\.batch_size: task 'noisy-quadratic' measures noise on its "
                                 r"training batches; allowed: null or train\.batch_size \(1\)"),
        ("task={name: stochastic-quadratic}",
         r"monitor\.every: task 'stochastic-quadratic' is not a model task; allowed: null"),
    ]  # fmt: skip
    for override, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            make(MONITOR, override)
        assert "\n" not in str(info.value)
    assert make(MONITOR, "monitor.batch_size=1").monitor.batch_size == 1


# ----------------------------------------------------------------------------- the runner


def test_monitoring_leaves_training_unchanged_and_logs_the_tail_index(
    store: ResultsStore, other: ResultsStore
) -> None:
    config = make(MONITOR)
    monitored = series(store, run_one(config, store))
    plain = series(other, run_one(make(), other))
    assert without_noise(monitored) == plain
    assert NOISE_KEYS <= monitored.keys()
    for key in NOISE_KEYS:
        assert monitored[key][0] == [10, 20, 30, 40]
    low, alpha, high = (np.array(monitored[f"noise/{k}"][1]) for k in ("alpha_low", "alpha", "alpha_high"))
    assert np.all((0 < low) & (low <= alpha) & (alpha <= high) & (high <= 2))
    # the clipped fraction is the share of the window's steps whose pre-clip norm exceeded max_norm
    steps, clipped = monitored["opt/clipped"]
    for record_step, fraction in zip(*monitored["noise/clipped_fraction"]):
        window = [c for s, c in zip(steps, clipped) if record_step - 10 < s <= record_step]
        assert fraction == pytest.approx(float(np.mean(window)), abs=1e-12)


def test_logged_alpha_is_that_of_an_independent_measurement(store: ResultsStore) -> None:
    """Replay 20 steps, sample the noise as the monitor is documented to (seed + step), compare."""
    config = make(MONITOR, "optimizer={name: sgd, lr: 0.05}")
    logged = series(store, run_one(config, store))
    task = build_task(config, torch.device("cpu"))
    assert isinstance(task, ModelTask)
    params = list(task.model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05)
    scheduler = make_scheduler(optimizer, config.schedule, config.train.steps)
    for _ in range(20):
        model_step(task, optimizer, scheduler)
    source = task.noise_source()
    sample = collect_noise(
        source.model, source.loss_fn, source.data, batch_size=1, mean_batches=2, noise_batches=20,
        seed=config.train.seed + 20, projection=RandomProjection(6, 64, config.train.seed),
    )  # fmt: skip
    tail = sample.tail_index("mohammadi", k1=10, ci=0.95, n_boot=100, seed=config.train.seed)
    index = logged["noise/alpha"][0].index(20)
    assert logged["noise/alpha"][1][index] == pytest.approx(tail.alpha, abs=1e-12)
    assert logged["noise/alpha_low"][1][index] == pytest.approx(tail.low, abs=1e-12)
    assert logged["noise/alpha_high"][1][index] == pytest.approx(tail.high, abs=1e-12)
    assert "noise/clipped_fraction" not in logged  # torch.optim.SGD records no clipping


class DropoutBatchNormTask(ModelTask):
    """An MLP with dropout and BatchNorm; batches from a task generator plus numpy and ``random``."""

    Options = TaskOptions

    def __init__(self, options: TaskOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        self.model = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(16, 1)).double()  # fmt: skip
        self.generator = torch.Generator().manual_seed(context.seed)

    def train_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(8, 3, generator=self.generator, dtype=torch.float64)
        shift = np.random.standard_normal() + random.gauss(0.0, 1.0)  # global generators, as some loaders do
        return x, x.sum(dim=1, keepdim=True) + shift

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y), {}

    def evaluate(self) -> dict[str, Any]:
        x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(8, 3)
        return {"loss": nn.functional.mse_loss(self.model(x), x.sum(dim=1, keepdim=True))}

    def data_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@pytest.fixture
def dropout_task() -> Any:
    register_task("test-dropout-batchnorm")(DropoutBatchNormTask)
    yield "test-dropout-batchnorm"
    TASKS.pop("test-dropout-batchnorm")


def test_monitoring_restores_dropout_rng_buffers_data_and_global_generators(
    store: ResultsStore, other: ResultsStore, dropout_task: str
) -> None:
    config = make(f"task={{name: {dropout_task}}}", "optimizer={name: clip_adam, lr: 0.01, max_norm: 1.0}",
                  "train.steps=30")  # fmt: skip
    monitored = series(store, run_one(parse_config(apply_overrides(config._raw, [MONITOR])), store))
    plain = series(other, run_one(config, other))
    assert without_noise(monitored) == plain
    assert monitored["noise/alpha"][0] == [10, 20, 30]


def test_resume_with_monitor_is_exact(store: ResultsStore, other: ResultsStore) -> None:
    """A crash after a checkpoint taken mid-window: the resumed run logs and reports the same values."""
    config = make(MONITOR, "train.steps=50", "train.checkpoint_every=15")
    reference_id = run_one(config, other)
    reference = series(other, reference_id)

    def crash(step: int, total: int) -> None:
        if step == 27:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_one(config, store, progress=crash)
    saved = torch.load(checkpoint_path(store.path, config.run_id), weights_only=False)
    assert saved["step"] == 15 and len(saved["monitor"]["window"]) == 5
    assert [r["step"] for r in saved["monitor"]["history"]] == [10]
    run_one(config, store)
    assert series(store, config.run_id) == reference

    def report_of(results: ResultsStore) -> dict[str, Any]:
        (artifact,) = results.artifacts(config.run_id, "noise/report")
        data = json.loads(Path(artifact.path).read_text())
        for record in data["history"]:
            record.pop("seconds")  # wall time of each record
        return data

    assert report_of(store) == report_of(other)


def test_final_noise_report_is_stored_and_shown_by_the_html_report(
    store: ResultsStore, tmp_path: Path
) -> None:
    config = make(MONITOR)
    run_id = run_one(config, store)
    artifacts = {a.kind: Path(a.path) for a in store.artifacts(run_id)}
    assert set(artifacts) == REPORT_KINDS
    assert all(p.is_file() and p.parent == store.path.parent / "artifacts" / run_id / "noise"
               for p in artifacts.values())  # fmt: skip
    report = json.loads(artifacts["noise/report"].read_text())
    assert [r["step"] for r in report["history"]] == [10, 20, 30, 40]
    assert (
        report["sample"]["step"] == 40 and report["sample"]["n"] == 20 and report["sample"]["batch_size"] == 1
    )
    assert report["verdict"]["label"] in ("heavy-tailed", "light-tailed", "inconclusive")
    assert (
        0 < report["tail_index"]["low"] <= report["tail_index"]["alpha"] <= report["tail_index"]["high"] <= 2
    )
    html = write_report(store, tmp_path / "report.html").read_text()
    # above the fold: the tail index over training and the noise histogram; in the folded
    # detail: every artifact, the histogram named (shown above), hill/moments/training embedded
    above = re.search(r"<h3>Gradient noise</h3>(.*?)<details>", html, re.S)
    match = re.search(r"<h3>Noise diagnostics of every run</h3>(.*?)</details>", html, re.S)
    assert above is not None and match is not None
    assert 'alt="tail index of ' in above.group(1) and 'alt="noise histogram of ' in above.group(1)
    noise = match.group(1)
    for kind in REPORT_KINDS:
        assert f"{kind} <span" in noise
    assert noise.count('src="data:image/png;base64,') == 3
    assert "tail_index" in noise and report["verdict"]["label"] in noise


def test_divergence_with_monitor_keeps_the_history(store: ResultsStore) -> None:
    """SGD with lr 2.5 overflows float32: degenerate records become noise/skipped, the run finishes."""
    config = make(
        "task.options={dim: 4, condition_number: 1.0, noise: gaussian, dtype: float32}",
        "optimizer={name: sgd, lr: 2.5}", "train.steps=400", "train.eval_every=50", MONITOR,
    )  # fmt: skip
    run_id = run_one(config, store)
    record = store.run(run_id)
    assert record is not None and record.status == "finished"
    logged = series(store, run_id)
    (diverged_at,), _ = logged["train/diverged"]
    steps, alphas = logged["noise/alpha"]
    skipped, flags = logged["noise/skipped"]
    assert steps and all(math.isfinite(a) for a in alphas) and set(flags) == {1.0}
    assert sorted(steps + skipped) == list(range(10, record.steps + 1, 10))
    assert max(steps) < diverged_at and all(
        s in skipped for s in range(10, record.steps + 1, 10) if s >= diverged_at
    )
    kinds = {a.kind for a in store.artifacts(run_id)}
    assert kinds == {"noise/history"}
    (artifact,) = store.artifacts(run_id, "noise/history")
    history = json.loads(Path(artifact.path).read_text())["history"]
    assert [r["step"] for r in history] == steps
