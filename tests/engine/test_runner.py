"""run_one: what it records, determinism, checkpoint-resume equality, divergence, vectorized tasks."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tailclip.engine.config import ExperimentConfig, parse_config, task_context
from tailclip.engine.runner import checkpoint_path, run_one
from tailclip.engine.schedules import lr_factor
from tailclip.engine.store import ResultsStore, owner_alive
from tailclip.engine.train_steps import QUANTILES
from tailclip.engine.yaml_loading import apply_overrides, load_config
from tailclip.problems import TASKS, ModelTask, TaskContext, TaskOptions, VectorizedTask, register_task
from tailclip.problems.quadratic import NoisyQuadratic, QuadraticModel
from tailclip.problems.samplers import sample_noise

BASE: dict[str, Any] = {
    "name": "r",
    "task": {
        "name": "noisy-quadratic",
        "options": {"dim": 4, "dtype": "float64", "noise": "student_t", "df": 1.5},
    },
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"steps": 20, "eval_every": 5, "checkpoint_every": None},
}


def make(*overrides: str, base: dict[str, Any] | None = None) -> ExperimentConfig:
    return parse_config(apply_overrides(base or BASE, list(overrides)))


def series(store: ResultsStore, run_id: str) -> dict[str, tuple[list[int], list[float]]]:
    """Metrics of a run without timings (which legitimately differ between runs)."""
    return {
        k: (s.tolist(), v.tolist())
        for k, (s, v) in store.metrics([run_id])[run_id].items()
        if not k.startswith("time/")
    }


def same(a: dict[str, tuple[list[int], list[float]]], b: dict[str, tuple[list[int], list[float]]]) -> bool:
    """Equal keys, steps and values (NaN equal to NaN)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        if a[key][0] != b[key][0]:
            return False
        if not np.array_equal(np.array(a[key][1]), np.array(b[key][1]), equal_nan=True):
            return False
    return True


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "a" / "store.sqlite")


@pytest.fixture
def other(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "b" / "store.sqlite")


def test_records_the_training_it_did(store: ResultsStore) -> None:
    """Replay the run by hand: train/loss is f(x_{t-1}), eval/loss f(x_t), grad norm ||A(x - x*) + xi||."""
    config = make("optimizer.momentum=0.5")
    run_id = run_one(config, store)
    torch.manual_seed(config.train.seed)
    options = NoisyQuadratic.Options.model_validate(config.task.options)
    task = NoisyQuadratic(options, task_context(config, torch.device("cpu")))
    a, x_star = task.model.eigenvalues.tolist(), task.model.x_star.tolist()
    x, velocity = [0.0] * 4, [0.0] * 4
    losses, grad_norms, evals = [], [], {0: 0.5 * sum(ai * s * s for ai, s in zip(a, x_star))}
    for t in range(1, 21):
        xi = task.train_batch().tolist()
        losses.append(0.5 * sum(ai * (xv - s) ** 2 for ai, xv, s in zip(a, x, x_star)))
        g = [ai * (xv - s) + n for ai, xv, s, n in zip(a, x, x_star, xi)]
        grad_norms.append(math.sqrt(sum(v * v for v in g)))
        velocity = [g[i] if t == 1 else 0.5 * velocity[i] + g[i] for i in range(4)]
        x = [xv - 0.1 * v for xv, v in zip(x, velocity)]
        if t % 5 == 0:
            evals[t] = 0.5 * sum(ai * (xv - s) ** 2 for ai, xv, s in zip(a, x, x_star))
    logged = series(store, run_id)
    assert logged["train/loss"][0] == list(range(1, 21))
    assert logged["train/loss"][1] == pytest.approx(losses, rel=1e-12)
    assert logged["opt/grad_norm"][1] == pytest.approx(grad_norms, rel=1e-12)
    assert logged["eval/loss"][0] == sorted(evals)
    assert logged["eval/loss"][1] == pytest.approx([evals[t] for t in sorted(evals)], rel=1e-12)
    assert logged["opt/lr"][1] == [0.1] * 20
    record = store.run(run_id)
    assert record is not None and record.status == "finished" and record.steps == 20 and record.wall_time > 0
    timings = store.metrics([run_id], ["time/step_seconds"])[run_id]["time/step_seconds"]
    assert timings[0].tolist() == [5, 10, 15, 20] and (timings[1] > 0).all()
    assert not checkpoint_path(store.path, run_id).exists()


def test_accumulation_steps_average_micro_batch_gradients(store: ResultsStore) -> None:
    """Replay by hand with 3 micro-batches per step: g = A(x - x*) + mean(xi_1, xi_2, xi_3); the
    logged noise norm is the mean of the micro-batches' and an epoch counts optimizer steps."""
    config = make("train.accumulation_steps=3", "train.steps=8", "train.eval_every=4")
    run_id = run_one(config, store)
    torch.manual_seed(config.train.seed)
    options = NoisyQuadratic.Options.model_validate(config.task.options)
    task = NoisyQuadratic(options, task_context(config, torch.device("cpu")))
    a, x_star = task.model.eigenvalues.tolist(), task.model.x_star.tolist()
    x = [0.0] * 4
    grad_norms, noise_norms = [], []
    for _ in range(8):
        xis = [task.train_batch().tolist() for _ in range(3)]
        noise_norms.append(sum(math.sqrt(sum(v * v for v in xi)) for xi in xis) / 3)
        g = [ai * (xv - s) + sum(xi[i] for xi in xis) / 3
             for i, (ai, xv, s) in enumerate(zip(a, x, x_star))]
        grad_norms.append(math.sqrt(sum(v * v for v in g)))
        x = [xv - 0.1 * gv for xv, gv in zip(x, g)]
    logged = series(store, run_id)
    assert logged["opt/grad_norm"][1] == pytest.approx(grad_norms, rel=1e-12)
    assert logged["train/noise_norm"][1] == pytest.approx(noise_norms, rel=1e-12)
    final = 0.5 * sum(ai * (xv - s) ** 2 for ai, xv, s in zip(a, x, x_star))
    assert logged["eval/loss"][1][-1] == pytest.approx(final, rel=1e-12)


@pytest.mark.parametrize(("accumulation", "warns"), [(1, True), (2, False)])
def test_agni_micro_batch_variance_needs_accumulation(
    store: ResultsStore, accumulation: int, warns: bool
) -> None:
    """With one micro-batch per step AGNI's micro-batch variance is zero and warns; with two the
    engine records both (``accumulate()``) and the noise is on."""
    config = make(
        f"train.accumulation_steps={accumulation}", "train.steps=3",
        "optimizer={name: noise_injection, eta: 0.5, variance: microbatch, "
        "base_optimizer: {name: sgd, lr: 0.1}}",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_one(config, store)
    assert any("no noise was added" in str(w.message) for w in caught) == warns


def test_agni_logs_the_gradient_norm_before_the_noise_and_the_noise_norm(store: ResultsStore) -> None:
    """opt/grad_norm is ||A(x - x*) + xi|| (p.grad holds the noised gradient after the step);
    opt/noise_norm is zero at the first EMA step and positive after."""
    config = make(
        "train.steps=6",
        "optimizer={name: noise_injection, eta: 0.5, variance: ema, base_optimizer: {name: sgd, lr: 0.1}}",
    )
    logged = series(store, run_one(config, store))
    noise = logged["opt/noise_norm"][1]
    assert logged["opt/noise_norm"][0] == list(range(1, 7))
    assert noise[0] == 0.0 and all(v > 0 for v in noise[1:])
    torch.manual_seed(config.train.seed)
    options = NoisyQuadratic.Options.model_validate(config.task.options)
    task = NoisyQuadratic(options, task_context(config, torch.device("cpu")))
    a, x_star = task.model.eigenvalues.tolist(), task.model.x_star.tolist()
    g1 = [ai * (0.0 - s) + n for ai, s, n in zip(a, x_star, task.train_batch().tolist())]
    x1 = [-0.1 * g for g in g1]  # no noise at the first step
    g2 = [ai * (xv - s) + n for ai, xv, s, n in zip(a, x1, x_star, task.train_batch().tolist())]
    norms = [math.sqrt(sum(g * g for g in grad)) for grad in (g1, g2)]
    assert logged["opt/grad_norm"][1][:2] == pytest.approx(norms, rel=1e-12)


def test_accumulation_longer_than_an_epoch_is_a_clear_error() -> None:
    from tailclip.engine.train_steps import optimizer_steps_per_epoch

    train = make("train.accumulation_steps=5").train
    assert optimizer_steps_per_epoch(11, train) == 2
    with pytest.raises(ValueError, match=r"train.accumulation_steps: 5 .* allowed: <= 4"):
        optimizer_steps_per_epoch(4, train)


def test_clip_statistics_and_schedule_are_logged(store: ResultsStore) -> None:
    config = make(
        "optimizer={name: clip_sgd, lr: 0.2, clip: global, max_norm: 2.0}",
        "schedule={kind: cosine, warmup_steps: 4, final_factor: 0.1}",
    )
    logged = series(store, run_one(config, store))
    norms = np.array(logged["opt/grad_norm"][1])
    assert logged["opt/clip_factor"][1] == pytest.approx(np.minimum(1.0, 2.0 / norms).tolist(), rel=1e-6)
    assert logged["opt/clipped"][1] == (norms > 2.0).astype(float).tolist()
    assert 0 < sum(logged["opt/clipped"][1]) < 20  # both regimes occur
    factor = lr_factor(config.schedule, 20)
    assert logged["opt/lr"][1] == pytest.approx([0.2 * factor(t - 1) for t in range(1, 21)], rel=1e-12)


def test_log_every_subsamples_train_metrics(store: ResultsStore) -> None:
    logged = series(store, run_one(make("train.log_every=4", "train.steps=10"), store))
    assert logged["train/loss"][0] == [4, 8, 10]
    assert logged["eval/loss"][0] == [0, 5, 10]


def test_deterministic(store: ResultsStore, other: ResultsStore) -> None:
    config = make("optimizer={name: clip_adam, lr: 0.05, clip: coord, max_norm: 0.5}", "train.steps=40")
    first = series(store, run_one(config, store))
    second = series(other, run_one(config, other))
    assert same(first, second)
    reseeded = make(
        "optimizer={name: clip_adam, lr: 0.05, clip: coord, max_norm: 0.5}", "train.steps=40", "train.seed=1"
    )
    third = series(other, run_one(reseeded, other))
    assert first["train/loss"][1] != third["train/loss"][1]


class Interrupt(Exception):
    """Stands in for a crash in the middle of a run."""


RESUMABLE = [
    pytest.param(
        ["optimizer={name: clip_sgd, lr: 0.1, momentum: 0.9, max_norm: {policy: autoclip, percentile: 50}}",
         "schedule={kind: warmup_linear, warmup_steps: 10}"],
        id="clip_sgd-momentum-autoclip-warmup",
    ),
    pytest.param(["optimizer={name: clip_adam, lr: 0.05, clip: global, max_norm: 1.0}"], id="clip_adam"),
    pytest.param(
        ["optimizer={name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
         "schedule={kind: step, milestones: [50]}"],
        id="sgd-nesterov-step",
    ),
    pytest.param(
        ["optimizer={name: noise_injection, variance: ema, eta: 0.1, "
         "base_optimizer: {name: adamw, lr: 0.05}}"],
        id="noise_injection-rng",
    ),
]  # fmt: skip


@pytest.mark.parametrize("overrides", RESUMABLE)
def test_resume_after_a_crash_gives_identical_metrics(
    store: ResultsStore, other: ResultsStore, overrides: list[str]
) -> None:
    config = make(*overrides, "train.steps=90", "train.checkpoint_every=20", "train.eval_every=15")
    reference = series(other, run_one(config, other))

    def crash_at_57(step: int, total: int) -> None:
        if step == 57:
            raise Interrupt("simulated crash")

    with pytest.raises(Interrupt):
        run_one(config, store, progress=crash_at_57)
    run_id = config.run_id
    record = store.run(run_id)
    assert (
        record is not None
        and record.status == "failed"
        and "Interrupt: simulated crash" in (record.error or "")
    )
    checkpoint = checkpoint_path(store.path, run_id)
    assert torch.load(checkpoint, weights_only=False)["step"] == 40
    assert max(store.metrics([run_id], ["train/loss"])[run_id]["train/loss"][0]) == 45  # flushed at the eval

    resumed_steps: list[int] = []
    run_one(config, store, progress=lambda step, total: resumed_steps.append(step))
    assert resumed_steps == list(range(41, 91))
    assert same(series(store, run_id), reference)
    assert store.run(run_id).status == "finished"  # type: ignore[union-attr]
    assert not checkpoint.exists()


class GlobalNoiseQuadratic(ModelTask):
    """A quadratic with noise from the global torch, numpy and ``random`` generators (as dropout would)."""

    Options = TaskOptions

    def __init__(self, options: TaskOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        self.model = QuadraticModel(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))

    def train_batch(self) -> torch.Tensor:
        return torch.randn(3, dtype=torch.float64) + np.random.standard_normal() + random.gauss(0.0, 1.0)

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        objective = self.model.objective()
        return objective + torch.dot(batch, self.model.x), {"loss": objective.detach()}

    def evaluate(self) -> dict[str, Any]:
        return {"loss": self.model.objective()}


def test_resume_restores_global_generators(store: ResultsStore, other: ResultsStore) -> None:
    register_task("test-global-noise")(GlobalNoiseQuadratic)
    try:
        config = make("task={name: test-global-noise}", "train.steps=30", "train.checkpoint_every=10")
        reference = series(other, run_one(config, other))

        def crash(step: int, total: int) -> None:
            if step == 15:
                raise Interrupt

        with pytest.raises(Interrupt):
            run_one(config, store, progress=crash)
        run_one(config, store)
        assert same(series(store, config.run_id), reference)
    finally:
        TASKS.pop("test-global-noise")


@pytest.mark.slow
def test_kill_9_of_a_run_then_rerun_gives_identical_metrics(tmp_path: Path, other: ResultsStore) -> None:
    store_path = tmp_path / "killed" / "store.sqlite"
    data = {
        **BASE,
        "train": {"steps": 4000, "eval_every": 500, "checkpoint_every": 300},
        "output": {"store": str(store_path)},
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config = load_config(config_file)
    checkpoint = checkpoint_path(store_path, config.run_id)
    command = [sys.executable, "-m", "tailclip.cli", "run", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the run ended before its first checkpoint"
        )
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    store = ResultsStore(store_path)
    record = store.run(config.run_id)
    assert record is not None and record.status == "running" and not owner_alive(record.owner)
    step = torch.load(checkpoint, weights_only=False)["step"]
    assert 300 <= step < 4000

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert store.run(config.run_id).status == "finished"  # type: ignore[union-attr]
    reference = series(other, run_one(config, other))
    assert same(series(store, config.run_id), reference)


def test_keep_checkpoint(store: ResultsStore) -> None:
    config = make("train.keep_checkpoint=true", "train.steps=12")
    run_id = run_one(config, store)
    (artifact,) = store.artifacts(run_id, "checkpoint")
    state = torch.load(artifact.path, weights_only=False)
    assert state["step"] == 12 and state["run_id"] == run_id


def test_divergence_ends_the_run_as_a_result(store: ResultsStore) -> None:
    """SGD with lr 2.5 on a well-conditioned quadratic: |1 - 2.5| > 1, float32 overflows."""
    config = make(
        "task.options={dim: 4, condition_number: 1.0, noise: gaussian, dtype: float32}",
        "optimizer.lr=2.5",
        "train.steps=1000",
        "train.eval_every=50",
    )
    run_id = run_one(config, store)
    record = store.run(run_id)
    assert record is not None and record.status == "finished"
    logged = series(store, run_id)
    (diverged_at,), (flag,) = logged["train/diverged"]
    assert flag == 1.0
    steps, losses = logged["train/loss"]
    first_bad = next(s for s, v in zip(steps, losses) if not math.isfinite(v))
    assert diverged_at == first_bad and all(math.isfinite(v) for s, v in zip(steps, losses) if s < first_bad)
    assert (
        first_bad < record.steps <= first_bad + 50 and record.steps % 50 == 0
    )  # stopped at the next boundary
    assert logged["eval/loss"][0][-1] == record.steps and not math.isfinite(logged["eval/loss"][1][-1])


def test_failure_is_recorded_and_raised(store: ResultsStore) -> None:
    config = make(
        "optimizer={name: clip_sgd, lr: 1.0e+30, clip: null}",
        "task.options.dtype=float32",
        "train.stop_on_divergence=false",
        "train.steps=50",
    )
    with pytest.raises(FloatingPointError):
        run_one(config, store)
    record = store.run(config.run_id)
    assert record is not None and record.status == "failed"
    assert (
        record.error is not None
        and record.error.startswith("FloatingPointError")
        and "Traceback" in record.error
    )


# ----------------------------------------------------------------------------- a vectorized task


class VectorOptions(TaskOptions):
    runs: int = 64
    df: float = 1.5


class VectorQuadratic(VectorizedTask):
    """R independent f(x) = x^2 / 2 from x = 1, Student-t gradient noise, clipped SGD on each run."""

    Options = VectorOptions

    def __init__(self, options: VectorOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        hp = context.hyperparameters
        self.lr, self.max_norm = hp["lr"], hp["max_norm"]
        self.x = torch.ones(options.runs, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(context.seed)

    @property
    def runs(self) -> int:
        return self.options.runs  # type: ignore[attr-defined]

    def step(self, lr_factor: float) -> dict[str, torch.Tensor]:
        loss = 0.5 * self.x**2
        g = self.x + sample_noise("student_t", (self.runs,), df=self.options.df, generator=self.generator)  # type: ignore[attr-defined]
        factor = torch.clamp(self.max_norm / g.abs(), max=1.0)
        self.x = self.x - self.lr * lr_factor * factor * g
        return {"loss": loss, "grad_norm": g.abs(), "clip_factor": factor}

    def evaluate(self) -> dict[str, torch.Tensor]:
        return {"loss": 0.5 * self.x**2, "distance": self.x.abs()}

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = state["x"].clone()
        self.generator.set_state(state["generator"])


@pytest.fixture
def vector_task() -> Iterator[str]:
    register_task("test-vector-quadratic")(VectorQuadratic)
    yield "test-vector-quadratic"
    TASKS.pop("test-vector-quadratic")


def vector_config(name: str, *overrides: str) -> ExperimentConfig:
    base = {
        "name": "v",
        "task": {"name": name, "options": {"runs": 64}},
        "optimizer": {"name": "clip_sgd", "lr": 0.1, "max_norm": 1.0},
        "train": {"steps": 30, "eval_every": 10, "checkpoint_every": None},
    }
    return make(*overrides, base=base)


def test_vectorized_task_logs_quantiles_and_per_run_artifacts(store: ResultsStore, vector_task: str) -> None:
    config = vector_config(vector_task, "schedule={kind: cosine}")
    run_id = run_one(config, store)
    logged = series(store, run_id)
    names = [f"q{round(100 * q)}" for q in QUANTILES] + ["mean"]
    for key in ("train/loss", "train/grad_norm", "train/clip_factor"):
        for name in names:
            assert logged[f"{key}/{name}"][0] == list(range(1, 31))
    for key in ("eval/loss", "eval/distance"):
        assert all(logged[f"{key}/{name}"][0] == [0, 10, 20, 30] for name in names)
    kinds = {a.kind: a.path for a in store.artifacts(run_id)}
    keys = ("train/loss", "train/grad_norm", "train/clip_factor", "eval/loss", "eval/distance")
    assert set(kinds) == {f"per_run/{k}" for k in keys}
    for key in ("train/loss", "eval/loss"):
        per_run = np.load(kinds[f"per_run/{key}"])
        assert per_run.shape == (64,)
        expected = np.quantile(per_run, QUANTILES).tolist()
        assert [logged[f"{key}/{n}"][1][-1] for n in names[:-1]] == pytest.approx(expected, rel=1e-12)
        assert logged[f"{key}/mean"][1][-1] == pytest.approx(per_run.mean(), rel=1e-12)
    # the lr the task got is the schedule's
    eval_distance = logged["eval/distance/q50"][1]
    assert eval_distance[-1] < eval_distance[0] == 1.0


def test_vectorized_task_resumes_identically(
    store: ResultsStore, other: ResultsStore, vector_task: str
) -> None:
    config = vector_config(vector_task, "train.checkpoint_every=8")
    reference = series(other, run_one(config, other))

    def crash(step: int, total: int) -> None:
        if step == 19:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_one(config, store, progress=crash)
    run_one(config, store)
    assert same(series(store, config.run_id), reference)
    reference_final = np.load(other.artifacts(config.run_id, "per_run/eval/loss")[0].path)
    assert np.array_equal(
        np.load(store.artifacts(config.run_id, "per_run/eval/loss")[0].path), reference_final
    )
