"""Train one config: :func:`run_one`. The loop a researcher would write, made robust.

For a model task (see :mod:`tailclip.engine.tasks`) one step is::

    batch = task.train_batch()
    loss, metrics = task.loss(batch)
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

and a vectorized task's step is ``task.step(lr_factor)``. Around it the runner

* seeds ``random``, numpy and torch with ``train.seed`` before building the task, so the same
  config and seed give identical metrics;
* keeps each logged step's values as one tensor (train metrics; for tailclip optimizers
  ``opt.step_stats``: ``grad_norm``, ``clip_factor``, ``clipped``; for ``NoiseInjection`` the
  gradient norm before the noise and ``noise_norm``; for others the total gradient norm; with
  ``train.accumulation_steps`` > 1 the train metrics are means over the micro-batches) and
  converts them to floats in one batch at log boundaries (evaluation, checkpoint, end, or
  every 1000 logged steps): no host synchronisation per step;
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

import math
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

from tailclip.clip import total_norm
from tailclip.engine.config import ExperimentConfig, TrainConfig, build_optimizer, config_hash
from tailclip.engine.schedules import lr_factor, make_scheduler
from tailclip.engine.tasks import TASKS, ModelTask, Task, TaskContext, VectorizedTask
from tailclip.noise import BatchSource, TailMonitor, tails_report
from tailclip.optim import ClipOptimizer, NoiseInjection

__all__ = [
    "CHECKPOINT_FORMAT",
    "QUANTILES",
    "ProgressCallback",
    "RunStore",
    "artifact_dir",
    "build_task",
    "checkpoint_path",
    "model_step",
    "optimizer_steps_per_epoch",
    "resolve_device",
    "run_one",
    "seed_everything",
]

QUANTILES = (0.10, 0.50, 0.90, 0.99)
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


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device; ``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device: {name!r} is not available on this machine; allowed: cpu, auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"train.device: {name!r} is not available on this machine; allowed: cpu, auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_task(config: ExperimentConfig, device: torch.device) -> Task:
    """Seed everything with ``train.seed`` and construct the config's task on ``device``."""
    seed_everything(config.train.seed)
    task_cls = TASKS[config.task.name]
    options = task_cls.Options.model_validate(config.task.options)
    return task_cls(options, TaskContext(config, device))


def model_step(
    task: ModelTask, optimizer: torch.optim.Optimizer, scheduler: Any, accumulation: int = 1
) -> tuple[Tensor, dict[str, Tensor]]:
    """One training step of a model task over ``accumulation`` micro-batches.

    Each micro-batch's backward takes ``loss / accumulation``, so the step's gradient is the
    mean over the micro-batches; an optimizer with ``accumulate()`` (AGNI's micro-batch
    variance) records each micro-batch gradient. Returns the differentiated loss and the task's
    metrics, averaged over the micro-batches.
    """
    optimizer.zero_grad(set_to_none=True)
    record = getattr(optimizer, "accumulate", None)
    results = []
    for _ in range(accumulation):
        loss, metrics = task.loss(task.train_batch())
        (loss if accumulation == 1 else loss / accumulation).backward()
        if record is not None:
            record()
        results.append((loss.detach(), metrics))
    optimizer.step()
    scheduler.step()
    if accumulation == 1:
        return results[0]
    losses, micro_metrics = zip(*results, strict=True)
    means = {k: torch.stack([m[k] for m in micro_metrics]).mean(0) for k in micro_metrics[0]}
    return torch.stack(losses).mean(), means


def optimizer_steps_per_epoch(batches: int, train: TrainConfig) -> int:
    """Optimizer steps in an epoch of ``batches`` batches, ``train.accumulation_steps`` each."""
    steps = batches // train.accumulation_steps
    if steps < 1:
        raise ValueError(
            f"train.accumulation_steps: {train.accumulation_steps} micro-batches per step, but an epoch "
            f"has {batches} batches; allowed: <= {batches}"
        )
    return steps


def _finite(params: list[Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


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


def _as_row(values: list[Any]) -> Tensor:
    """0-dim tensors and numbers as one float64 CPU vector, with one device-to-host copy per device."""
    out = torch.empty(len(values), dtype=torch.float64)
    tensors: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, Tensor):
            tensors.setdefault(v.device, []).append(i)
        else:
            out[i] = float(v)
    for index in tensors.values():
        out[index] = torch.stack([values[i].detach().reshape(()).to(torch.float64) for i in index]).cpu()
    return out


def _quantile_rows(steps: list[int], keys: list[str], block: Tensor) -> list[tuple[int, str, float]]:
    """Quantiles and mean over the runs of ``block`` (steps, keys, R); non-finite values count as +inf."""
    values = torch.nan_to_num(block.to(torch.float64), nan=math.inf)
    levels = torch.tensor(QUANTILES, dtype=torch.float64)
    names = [f"q{round(100 * p)}" for p in QUANTILES]
    chunk = max(1, (1 << 24) // max(1, values[0].numel()))  # torch.quantile's input size limit
    rows: list[tuple[int, str, float]] = []
    for start in range(0, len(steps), chunk):
        part = values[start : start + chunk]
        quantiles = torch.quantile(part, levels, dim=-1).tolist()  # (levels, steps, keys)
        means = part.mean(dim=-1).tolist()
        for i, step in enumerate(steps[start : start + chunk]):
            for j, key in enumerate(keys):
                rows.extend((step, f"{key}/{name}", quantiles[n][i][j]) for n, name in enumerate(names))
                rows.append((step, f"{key}/mean", means[i][j]))
    return rows


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
        train = config.train
        self.device = resolve_device(train.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.task = build_task(config, self.device)
        self.vectorized = isinstance(self.task, VectorizedTask)
        if isinstance(self.task, ModelTask):
            self.total = train.steps if train.steps is not None else self._epoch_steps(self.task)
            self.params = [p for p in self.task.model.parameters() if p.requires_grad]
            self.optimizer = build_optimizer(config.optimizer, self.params)
            self.scheduler = make_scheduler(self.optimizer, config.schedule, self.total)
            self.clip_stats = isinstance(self.optimizer, ClipOptimizer)
        elif self.vectorized:
            if train.steps is None:
                raise ValueError("train.epochs: a vectorized task has no data epochs; allowed: train.steps")
            self.total = train.steps
            self.factor = lr_factor(config.schedule, self.total)
        else:
            raise TypeError(f"task {config.task.name!r} is neither a ModelTask nor a VectorizedTask")
        self.step = 0
        self.elapsed_before = 0.0
        self.keys: list[str] | None = None
        self.pending: list[tuple[int, Tensor, float]] = []
        self.diverged_at: int | None = None
        self.last_eval_step: int | None = None
        self.final_per_run: dict[str, Tensor] = {}
        self.monitor: TailMonitor | None = None
        if isinstance(self.task, ModelTask) and config.monitor.every is not None:
            self.monitor = self._make_monitor(self.task)
        if self.checkpoint.exists():
            self._load_checkpoint()

    def _epoch_steps(self, task: ModelTask) -> int:
        per_epoch = task.steps_per_epoch()
        if per_epoch is None:
            raise ValueError(
                f"train.epochs: task {self.config.task.name!r} has no finite data; allowed: train.steps"
            )
        epochs: int = self.config.train.epochs  # type: ignore[assignment]
        return epochs * optimizer_steps_per_epoch(per_epoch, self.config.train)

    def _make_monitor(self, task: ModelTask) -> TailMonitor:
        monitor = self.config.monitor
        self.noise = task.noise_source()
        self.noise_batch_size = monitor.batch_size or self.config.train.batch_size
        self.noise.check_batch_size(self.noise_batch_size)
        # a dataset too small for one collection is a config error: fail now, not at the first record
        BatchSource(self.noise.data, self.noise_batch_size, 0, monitor.mean_batches + monitor.noise_batches)
        return TailMonitor(
            self.noise.model,
            self.noise.loss_fn,
            self.noise.data,
            batch_size=self.noise_batch_size,
            every=monitor.every,  # type: ignore[arg-type]
            mean_batches=monitor.mean_batches,
            noise_batches=monitor.noise_batches,
            seed=self.config.train.seed,
        )

    # ------------------------------------------------------------------ steps

    def _model_step(self, record: bool) -> None:
        task: ModelTask = self.task  # type: ignore[assignment]
        lr = float(self.optimizer.param_groups[0]["lr"])
        accumulation = self.config.train.accumulation_steps
        loss, metrics = model_step(task, self.optimizer, self.scheduler, accumulation)
        if not record:
            return
        values = {"train/loss": metrics.get("loss", loss)}
        values.update({f"train/{k}": v for k, v in metrics.items() if k != "loss"})
        if self.clip_stats:
            stats = self.optimizer.step_stats
            values.update(
                {
                    "opt/grad_norm": stats.grad_norm,
                    "opt/clip_factor": stats.clip_factor,
                    "opt/clipped": stats.clipped,
                }
            )
        elif isinstance(self.optimizer, NoiseInjection):  # p.grad now holds the noise: log both norms
            values["opt/grad_norm"] = self.optimizer.last_grad_norm
            values["opt/noise_norm"] = self.optimizer.last_noise_norm
        else:
            values["opt/grad_norm"] = total_norm([p.grad for p in self.params if p.grad is not None])
        self._record(values, lr)

    def _vectorized_step(self, record: bool) -> None:
        task: VectorizedTask = self.task  # type: ignore[assignment]
        factor = self.factor(self.step - 1)
        metrics = task.step(factor)
        if record:
            lr = self.config.optimizer.hyperparameters.get("lr", 1.0)
            self._record({f"train/{k}": v for k, v in metrics.items()}, float(lr) * factor)

    def _record(self, values: dict[str, Any], lr: float) -> None:
        if self.keys is None:
            self.keys = list(values)
        elif list(values) != self.keys:
            raise RuntimeError(
                f"task {self.config.task.name!r} changed its metric keys: {self.keys} -> {list(values)}"
            )
        if self.vectorized:
            row = torch.stack(
                [torch.as_tensor(v).detach().to(torch.float64).reshape(-1) for v in values.values()]
            )
        else:
            row = torch.stack(
                [torch.as_tensor(v).detach().reshape(()).to(torch.float64) for v in values.values()]
            )
        self.pending.append((self.step, row, lr))

    # ------------------------------------------------------------------ logging

    def _flush(self) -> None:
        """Convert the pending steps to floats in one batch, log them, look for divergence."""
        if not self.pending:
            return
        assert self.keys is not None
        steps = [s for s, _, _ in self.pending]
        block = torch.stack([r for _, r, _ in self.pending]).cpu()
        rows: list[tuple[int, str, float]] = []
        if self.vectorized:
            rows.extend(_quantile_rows(steps, self.keys, block))
            self.final_per_run.update({key: block[-1, j] for j, key in enumerate(self.keys)})
        else:
            values = block.tolist()
            for step, row in zip(steps, values):
                rows.extend((step, key, value) for key, value in zip(self.keys, row))
            if self.config.train.stop_on_divergence and self.diverged_at is None:
                losses = block[:, self.keys.index("train/loss")]
                bad = (~torch.isfinite(losses)).nonzero()
                if len(bad):
                    self.diverged_at = steps[int(bad[0, 0])]
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
        model = getattr(self.task, "model", None)
        if model is not None:
            model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate()
        if model is not None:
            model.train()
        rows: list[tuple[int, str, float]] = []
        if self.vectorized:
            keys = [f"eval/{k}" for k in metrics]
            block = torch.stack(
                [torch.as_tensor(v).detach().to(torch.float64).reshape(-1) for v in metrics.values()]
            )
            block = block.cpu()
            rows.extend(_quantile_rows([self.step], keys, block[None]))
            self.final_per_run.update({key: block[j] for j, key in enumerate(keys)})
        else:
            keys = list(metrics)
            converted = _as_row([metrics[k] for k in keys]).tolist()
            rows.extend((self.step, f"eval/{k}", v) for k, v in zip(keys, converted))
        self.store.log_metrics(self.run_id, rows)
        self.last_eval_step = self.step
        self.excluded += time.perf_counter() - start

    # ------------------------------------------------------------------ noise diagnostics

    def _monitor_step(self) -> None:
        """Feed the monitor this step's statistics; on its record steps, log the record."""
        assert self.monitor is not None
        if self.step % self.monitor.every != 0:
            self.monitor.step(self.optimizer, self.step)
            return
        start = time.perf_counter()
        try:
            if not _finite(self.params):
                raise ValueError("the parameters are not finite")
            record = self._measure(lambda: self.monitor.step(self.optimizer, self.step))  # type: ignore[union-attr]
        except ValueError:  # a degenerate sample (see the module docstring): a gap, not a failed run
            rows = [(self.step, "noise/skipped", 1.0)]
        else:
            rows = [(self.step, f"noise/{key}", record[key]) for key in ("alpha", "alpha_low", "alpha_high")]
            if "clip_fraction" in record:
                rows.append((self.step, "noise/clipped_fraction", record["clip_fraction"]))
        self.store.log_metrics(self.run_id, rows)
        self.excluded += time.perf_counter() - start

    def _measure(self, measurement: Callable[[], Any]) -> Any:
        """Run ``measurement`` with the data position and every RNG of the run put back afterwards."""
        task: ModelTask = self.task  # type: ignore[assignment]
        rng = _rng_state(self.device)
        try:
            with task.preserved_data_position():
                return measurement()
        finally:
            _set_rng_state(rng)

    def _save_noise_report(self) -> None:
        """The final :class:`NoiseReport` (or, from a degenerate sample, the history alone) as artifacts."""
        assert self.monitor is not None
        out = self.artifacts / "noise"
        monitor = self.config.monitor
        try:
            if not _finite(self.params):
                raise ValueError("the parameters are not finite")
            report = self._measure(
                lambda: tails_report(
                    self.noise.model,
                    self.noise.loss_fn,
                    self.noise.data,
                    out,
                    batch_size=self.noise_batch_size,
                    mean_batches=monitor.mean_batches,
                    noise_batches=monitor.noise_batches,
                    seed=self.config.train.seed + self.step,
                    projection_dim=self.monitor.projection_dim,  # type: ignore[union-attr]
                    step=self.step,
                    history=self.monitor.history,  # type: ignore[union-attr]
                )
            )
        except ValueError:  # a degenerate final sample: keep what the monitor recorded
            out.mkdir(parents=True, exist_ok=True)
            path = out / "noise_history.json"
            self.monitor.to_json(path)
            self.store.add_artifact(self.run_id, "noise/history", str(path))
            return
        for name, path in report.paths.items():
            if name in NOISE_REPORT_KINDS:
                self.store.add_artifact(self.run_id, NOISE_REPORT_KINDS[name], str(path))

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
        }
        if not self.vectorized:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
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
        if not self.vectorized:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        if self.monitor is not None and "monitor" in state:
            self.monitor.load_state_dict(state["monitor"])
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
        step_fn = self._vectorized_step if self.vectorized else self._model_step
        while self.step < self.total:
            self.step += 1
            record = self.step % train.log_every == 0 or self.step == self.total
            try:
                step_fn(record)
            except FloatingPointError:
                if not train.stop_on_divergence or self.vectorized:
                    raise
                self.diverged_at = self.step
            if self.monitor is not None and self.diverged_at is None:
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
        if self.monitor is not None:
            self._save_noise_report()
        if train.keep_checkpoint:
            self._save_checkpoint()
            self.store.add_artifact(self.run_id, "checkpoint", str(self.checkpoint))
        if self.vectorized:
            self._save_per_run()
        return self._elapsed(), self.step

    def _save_per_run(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        for key, values in self.final_per_run.items():
            path = self.artifacts / f"{key.replace('/', '__')}.npy"
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, values.numpy())
            os.replace(tmp, path)
            self.store.add_artifact(self.run_id, f"per_run/{key}", str(path))


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
