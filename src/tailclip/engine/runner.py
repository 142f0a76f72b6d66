"""Train one config: :func:`run_one`. The loop a researcher would write, made robust.

A step is a model task's optimizer step or a vectorized task's ``task.step(lr_factor)``
(:func:`tailclip.engine.train_steps.train_steps`: one loop drives both). Around it the runner

* seeds ``random``, numpy and torch with ``train.seed`` before building the task, so the same
  config and seed give identical metrics;
* keeps each logged step's values as one tensor (what :mod:`~tailclip.engine.train_steps`
  logs; with ``train.accumulation_steps`` > 1 the train metrics are means over the
  micro-batches) and converts them to floats in one batch at log boundaries (evaluation,
  checkpoint, end, or every 1000 logged steps): no host synchronisation per step;
* evaluates at step 0, every ``train.eval_every`` steps and at the end;
* logs ``time/step_seconds``, the mean wall time of the steps since the previous boundary
  (evaluation and checkpoint time excluded), and ``opt/lr``;
* writes a checkpoint every ``train.checkpoint_every`` steps, atomically (a temporary file,
  fsync, ``os.replace``): task state (model, data position), optimizer, schedule, the step,
  the wall time so far and the RNG states of torch (and CUDA), numpy and ``random``. A run
  that finds its checkpoint resumes from it and ends with the metrics of an uninterrupted
  run: steps after the checkpoint are recomputed and their rows overwritten;
* with ``train.stop_on_divergence`` (default) ends a model-task run whose train loss becomes
  NaN or infinite (or whose optimizer raises ``FloatingPointError``) as *finished*, logging
  ``train/diverged = 1`` at the first such step: under heavy-tailed noise a diverged run is a
  result, not an error to retry.

Vectorized tasks log ``<key>/q10``, ``/q50``, ``/q90``, ``/q99`` and ``/mean`` over their
``R`` runs and save the final per-run values as ``.npy`` artifacts (kind ``per_run/<key>``).

With ``monitor.every`` set (model tasks), a :class:`~tailclip.noise.TailMonitor` over the task's
``noise_source()`` is called after every step; every ``monitor.every`` steps it collects a noise
sample and the runner logs ``noise/alpha``, ``noise/alpha_low``, ``noise/alpha_high`` (the
vector-mode Mohammadi tail index and its 95% interval) and, for optimizers that record clipping
statistics, ``noise/clipped_fraction`` (clipped steps since the previous record). A record
changes nothing the training sees: parameters are only read, the model's modes, buffers and
the torch RNG are restored by the collection, the data position by
``task.preserved_data_position()`` and the numpy and ``random`` generators by the runner; its
time is excluded from ``time/step_seconds``. A record whose sample is degenerate (parameters
no longer finite, or noise lost to rounding as a run diverges: the estimators refuse it with a
``ValueError``) is skipped and logged as ``noise/skipped = 1``, a gap rather than a failed run;
a dataset too small for one collection fails the run at its start. The monitor's history is
checkpointed, so a resumed run logs the same values.
At the end, one more sample of the same size at the final parameters gives a
:class:`~tailclip.noise.NoiseReport` (with the alpha-over-training history) written to
``<artifacts>/noise/``; its JSON and PNGs are artifacts of kinds ``noise/report``,
``noise/histogram``, ``noise/hill``, ``noise/moments`` and ``noise/training``, which
``tailclip report`` shows (when that sample is degenerate, the history alone, ``noise/history``).

``run_one`` uses only these store methods: ``add_runs``, ``log_metrics``, ``add_artifact``,
``finish``, ``fail``, and the attribute ``path`` (checkpoints go to ``<store dir>/checkpoints``,
artifacts to ``<store dir>/artifacts/<run_id>`` unless given): an object forwarding them can
stand in for a :class:`~tailclip.engine.store.ResultsStore`. Claiming the run is the caller's
business (:mod:`tailclip.engine.sweep`, the CLI).
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from tailclip.engine.config import ExperimentConfig
from tailclip.engine.devices import resolve_device
from tailclip.engine.identity import config_hash
from tailclip.engine.train_steps import MetricRow, ModelSteps, build_task, train_steps
from tailclip.noise import BatchSource, TailMonitor, tails_report

__all__ = [
    "CHECKPOINT_FORMAT",
    "ProgressCallback",
    "RunStore",
    "artifact_dir",
    "checkpoint_path",
    "run_one",
]

CHECKPOINT_FORMAT = 1
NOISE_REPORT_KINDS = {
    "json": "noise/report",
    "histogram": "noise/histogram",
    "hill": "noise/hill",
    "moments": "noise/moments",
    "training": "noise/training",
}
_FLUSH_EVERY = 1000

ProgressCallback = Callable[[int, int], None]
"""``progress(step, total_steps)``, called after every step (throttle inside if it is costly)."""


class RunStore(Protocol):
    """What :func:`run_one` needs from a store."""

    path: Path

    def add_runs(self, configs: list[ExperimentConfig]) -> list[str]: ...

    def log_metrics(self, run_id: str, rows: list[tuple[int, str, float]]) -> None: ...

    def add_artifact(self, run_id: str, kind: str, path: str | Path) -> None: ...

    def finish(self, run_id: str, wall_time: float, steps: int) -> None: ...

    def fail(self, run_id: str, error: str) -> None: ...


def checkpoint_path(store_path: str | Path, run_id: str) -> Path:
    """Where a run's checkpoint lives: ``<store dir>/checkpoints/<run_id>.pt``."""
    return Path(store_path).resolve().parent / "checkpoints" / f"{run_id}.pt"


def artifact_dir(store_path: str | Path, run_id: str) -> Path:
    """Where a run's artifacts go: ``<store dir>/artifacts/<run_id>/``."""
    return Path(store_path).resolve().parent / "artifacts" / run_id


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class _NoiseMonitoring:
    """The ``monitor`` section during a model task's run: records every ``every`` steps, a final report."""

    def __init__(self, steps: ModelSteps, config: ExperimentConfig, device: torch.device) -> None:
        self.steps, self.config, self.device = steps, config, device
        monitor = config.monitor
        self.noise = steps.task.noise_source()
        self.batch_size = monitor.batch_size or config.train.batch_size
        self.noise.check_batch_size(self.batch_size)
        # a dataset too small for one collection is a config error: fail now, not at the first record
        BatchSource(self.noise.data, self.batch_size, 0, monitor.mean_batches + monitor.noise_batches)
        self.monitor = TailMonitor(
            self.noise.model,
            self.noise.loss_fn,
            self.noise.data,
            batch_size=self.batch_size,
            every=monitor.every,  # type: ignore[arg-type]
            mean_batches=monitor.mean_batches,
            noise_batches=monitor.noise_batches,
            seed=config.train.seed,
        )

    def step(self, step: int) -> list[MetricRow]:
        """Feed the monitor this step's statistics; on its record steps, the record's rows."""
        optimizer = self.steps.optimizer
        if step % self.monitor.every != 0:
            self.monitor.step(optimizer, step)
            return []
        try:
            if not self.steps.params_finite():
                raise ValueError("the parameters are not finite")
            record = self._measure(lambda: self.monitor.step(optimizer, step))
        except ValueError:  # a degenerate sample (see the module docstring): a gap, not a failed run
            return [(step, "noise/skipped", 1.0)]
        rows = [(step, f"noise/{key}", record[key]) for key in ("alpha", "alpha_low", "alpha_high")]
        if "clip_fraction" in record:
            rows.append((step, "noise/clipped_fraction", record["clip_fraction"]))
        return rows

    def _measure(self, measurement: Callable[[], Any]) -> Any:
        """Run ``measurement`` with the data position and every RNG of the run put back afterwards."""
        rng = _rng_state(self.device)
        try:
            with self.steps.task.preserved_data_position():
                return measurement()
        finally:
            _set_rng_state(rng)

    def save_report(self, out: Path, step: int) -> list[tuple[str, Path]]:
        """The final :class:`NoiseReport` (from a degenerate sample, the history alone): ``(kind, path)``s."""
        monitor = self.config.monitor
        try:
            if not self.steps.params_finite():
                raise ValueError("the parameters are not finite")
            report = self._measure(
                lambda: tails_report(
                    self.noise.model,
                    self.noise.loss_fn,
                    self.noise.data,
                    out,
                    batch_size=self.batch_size,
                    mean_batches=monitor.mean_batches,
                    noise_batches=monitor.noise_batches,
                    seed=self.config.train.seed + step,
                    projection_dim=self.monitor.projection_dim,
                    step=step,
                    history=self.monitor.history,
                )
            )
        except ValueError:  # a degenerate final sample: keep what the monitor recorded
            out.mkdir(parents=True, exist_ok=True)
            path = out / "noise_history.json"
            self.monitor.to_json(path)
            return [("noise/history", path)]
        return [
            (NOISE_REPORT_KINDS[name], path)
            for name, path in report.paths.items()
            if name in NOISE_REPORT_KINDS
        ]


class _Training:
    """The state of one run in progress; :meth:`run` trains it to the end."""

    def __init__(
        self,
        config: ExperimentConfig,
        run_id: str,
        store: RunStore,
        checkpoint: Path,
        artifacts: Path,
        progress: ProgressCallback | None,
    ) -> None:
        self.config, self.run_id, self.store = config, run_id, store
        self.checkpoint, self.artifacts, self.progress = checkpoint, artifacts, progress
        self.device = resolve_device(config.train.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.task = build_task(config, self.device)
        self.steps = train_steps(self.task, config)
        self.total = self.steps.total
        self.step = 0
        self.elapsed_before = 0.0
        self.keys: list[str] | None = None
        self.pending: list[tuple[int, Tensor, float]] = []
        self.diverged_at: int | None = None
        self.last_eval_step: int | None = None
        self.monitoring: _NoiseMonitoring | None = None
        if config.monitor.every is not None:  # validation allows it for model tasks only
            assert isinstance(self.steps, ModelSteps)
            self.monitoring = _NoiseMonitoring(self.steps, config, self.device)
        if self.checkpoint.exists():
            self._load_checkpoint()

    # ------------------------------------------------------------------ logging

    def _record(self, values: dict[str, Any], lr: float) -> None:
        if self.keys is None:
            self.keys = list(values)
        elif list(values) != self.keys:
            raise RuntimeError(
                f"task {self.config.task.name!r} changed its metric keys: {self.keys} -> {list(values)}"
            )
        self.pending.append((self.step, self.steps.row(values), lr))

    def _flush(self) -> None:
        """Convert the pending steps to floats in one batch, log them, look for divergence."""
        if not self.pending:
            return
        assert self.keys is not None
        steps = [s for s, _, _ in self.pending]
        block = torch.stack([r for _, r, _ in self.pending]).cpu()
        rows = self.steps.metric_rows(steps, self.keys, block)
        if self.diverged_at is None:
            self.diverged_at = self.steps.first_divergence(steps, self.keys, block)
        rows.extend((step, "opt/lr", lr) for step, _, lr in self.pending)
        self.pending.clear()
        now = time.perf_counter()
        if self.interval_steps:
            seconds = (now - self.interval_start - self.excluded) / self.interval_steps
            rows.append((self.step, "time/step_seconds", seconds))
        self.store.log_metrics(self.run_id, rows)
        self.interval_start, self.interval_steps, self.excluded = time.perf_counter(), 0, 0.0

    def _evaluate(self) -> None:
        start = time.perf_counter()
        self.store.log_metrics(self.run_id, self.steps.evaluate(self.step))
        self.last_eval_step = self.step
        self.excluded += time.perf_counter() - start

    def _monitor_step(self) -> None:
        assert self.monitoring is not None
        start = time.perf_counter()
        rows = self.monitoring.step(self.step)
        if rows:
            self.store.log_metrics(self.run_id, rows)
            self.excluded += time.perf_counter() - start

    def _add_artifacts(self, artifacts: list[tuple[str, Path]]) -> None:
        for kind, path in artifacts:
            self.store.add_artifact(self.run_id, kind, str(path))

    # ------------------------------------------------------------------ checkpoints

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    def _save_checkpoint(self) -> None:
        start = time.perf_counter()
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.run_id,
            "step": self.step,
            "elapsed": self._elapsed(),
            "task": self.task.state_dict(),
            "rng": _rng_state(self.device),
            **self.steps.state_dict(),
        }
        if self.monitoring is not None:
            state["monitor"] = self.monitoring.monitor.state_dict()
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(f"{self.checkpoint.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.checkpoint)
        self.excluded += time.perf_counter() - start

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError(
                f"cannot load checkpoint {self.checkpoint}: {type(exc).__name__}: {exc}; "
                "delete it to restart the run"
            ) from exc
        if state.get("format") != CHECKPOINT_FORMAT or state.get("run_id") != self.run_id:
            raise RuntimeError(
                f"checkpoint {self.checkpoint} is not a format-{CHECKPOINT_FORMAT} checkpoint "
                f"of run {self.run_id}; delete it to restart the run"
            )
        self.task.load_state_dict(state["task"])
        self.steps.load_state_dict(state)
        if self.monitoring is not None and "monitor" in state:
            self.monitoring.monitor.load_state_dict(state["monitor"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed"])

    # ------------------------------------------------------------------ the loop

    def run(self) -> tuple[float, int]:
        """Train to the end; return (wall seconds over all attempts, steps done)."""
        train = self.config.train
        self.started = time.perf_counter()
        self.interval_start, self.interval_steps, self.excluded = self.started, 0, 0.0
        if self.step == 0:
            self._evaluate()
        while self.step < self.total:
            self.step += 1
            record = self.step % train.log_every == 0 or self.step == self.total
            try:
                logged = self.steps.step(self.step, record)
            except FloatingPointError:
                if not self.steps.stop_on_divergence:
                    raise
                self.diverged_at = self.step
            else:
                if logged is not None:
                    self._record(*logged)
            if self.monitoring is not None and self.diverged_at is None:
                self._monitor_step()
            self.interval_steps += 1
            if self.progress is not None:
                self.progress(self.step, self.total)
            at_eval = train.eval_every is not None and self.step % train.eval_every == 0
            at_checkpoint = (
                train.checkpoint_every is not None
                and self.step % train.checkpoint_every == 0
                and self.step < self.total
            )
            if at_eval or at_checkpoint or self.step == self.total or len(self.pending) >= _FLUSH_EVERY:
                self._flush()
            if self.diverged_at is not None:
                self._flush()
                break
            if at_eval or self.step == self.total:
                self._evaluate()
            if at_checkpoint:
                self._save_checkpoint()
        if self.diverged_at is not None:
            self.store.log_metrics(self.run_id, [(self.diverged_at, "train/diverged", 1.0)])
            if self.last_eval_step != self.step:
                self._evaluate()
        if self.monitoring is not None:
            self._add_artifacts(self.monitoring.save_report(self.artifacts / "noise", self.step))
        if train.keep_checkpoint:
            self._save_checkpoint()
            self.store.add_artifact(self.run_id, "checkpoint", str(self.checkpoint))
        self._add_artifacts(self.steps.save_results(self.artifacts))
        return self._elapsed(), self.step


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-12:])
    return f"{type(exc).__name__}: {exc}\n{text}".strip()


def run_one(
    config: ExperimentConfig,
    store: RunStore,
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    artifacts_dir: str | Path | None = None,
) -> str:
    """Train ``config`` to the end (resuming from its checkpoint if one exists); return the run id.

    The run is added to ``store`` if absent; it ends ``finished`` (with its wall time and
    steps; the checkpoint is then deleted unless ``train.keep_checkpoint``) or, on any
    exception (``KeyboardInterrupt`` included), ``failed`` with the error and the exception
    re-raised; its checkpoint is kept so that a retry resumes. ``progress(step, total)`` is
    called after every step.
    """
    run_id = config_hash(config)
    store.add_runs([config])
    checkpoint = (
        Path(checkpoint_dir) / f"{run_id}.pt"
        if checkpoint_dir is not None
        else checkpoint_path(store.path, run_id)
    )
    artifacts = (
        Path(artifacts_dir) / run_id if artifacts_dir is not None else artifact_dir(store.path, run_id)
    )
    try:
        training = _Training(config, run_id, store, checkpoint, artifacts, progress)
        wall_time, steps = training.run()
    except BaseException as exc:
        store.fail(run_id, _describe(exc))
        raise
    store.finish(run_id, wall_time, steps)
    if not config.train.keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    return run_id
