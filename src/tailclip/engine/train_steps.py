"""The training steps of a task, model or vectorized, behind one interface: :func:`train_steps`.

For a model task (see :mod:`tailclip.problems.task`) one step is::

    batch = task.train_batch()
    loss, metrics = task.loss(batch)
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

with the config's optimizer over the model's trainable parameters and its schedule over the
training length (:class:`ModelSteps`); a vectorized task's step is ``task.step(lr_factor)``
with the schedule's factor for the step (:class:`VectorizedSteps`). Both keep a logged step's
values as one tensor row and turn blocks of rows into metric rows ``(step, key, value)`` only
at log boundaries, so a step needs no host synchronisation:

* a model task logs each value (``train/*``; ``opt/grad_norm``, ``opt/clip_factor`` and
  ``opt/clipped`` from a tailclip optimizer's ``step_stats``; for ``NoiseInjection`` the norm
  before the noise and ``opt/noise_norm``; for others the total gradient norm), and with
  ``train.stop_on_divergence`` its first non-finite ``train/loss`` ends the run;
* a vectorized task logs, for each key, the 10/50/90/99% quantiles and the mean over its ``R``
  runs (a non-finite value counts as ``+inf``: a diverged run is the worst run) and keeps the
  last per-run values, saved at the end as ``.npy`` files (artifacts ``per_run/<key>``).

The runner (:mod:`tailclip.engine.runner`) drives either through the same loop;
``tailclip tails`` (:mod:`tailclip.engine.tails`) trains a model task with :class:`ModelSteps`.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailclip.clip import total_norm
from tailclip.engine.config import ExperimentConfig, TrainConfig, task_context
from tailclip.engine.optimizer_spec import build_optimizer
from tailclip.engine.schedules import lr_factor, make_scheduler
from tailclip.optim import ClipOptimizer, NoiseInjection
from tailclip.problems import TASKS, ModelTask, Task, VectorizedTask

__all__ = [
    "QUANTILES",
    "MetricRow",
    "ModelSteps",
    "StepValues",
    "VectorizedSteps",
    "build_task",
    "model_step",
    "optimizer_steps_per_epoch",
    "seed_everything",
    "train_steps",
    "training_length",
]

QUANTILES = (0.10, 0.50, 0.90, 0.99)

MetricRow = tuple[int, str, float]
StepValues = tuple[dict[str, Any], float]
"""A logged step: its values by metric key and the learning rate it used."""


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
    return task_cls(options, task_context(config, device))


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


def training_length(config: ExperimentConfig, task: Task) -> int:
    """The config's number of training steps (``train.steps``, or epochs times the epoch length)."""
    if config.train.steps is not None:
        return config.train.steps
    per_epoch = task.steps_per_epoch() if isinstance(task, ModelTask) else None
    if per_epoch is None or config.train.epochs is None:
        raise ValueError(f"train.epochs: task {config.task.name!r} has no finite data; allowed: train.steps")
    return config.train.epochs * optimizer_steps_per_epoch(per_epoch, config.train)


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


def _quantile_rows(steps: list[int], keys: list[str], block: Tensor) -> list[MetricRow]:
    """Quantiles and mean over the runs of ``block`` (steps, keys, R); non-finite values count as +inf."""
    values = torch.nan_to_num(block.to(torch.float64), nan=math.inf)
    levels = torch.tensor(QUANTILES, dtype=torch.float64)
    names = [f"q{round(100 * p)}" for p in QUANTILES]
    chunk = max(1, (1 << 24) // max(1, values[0].numel()))  # torch.quantile's input size limit
    rows: list[MetricRow] = []
    for start in range(0, len(steps), chunk):
        part = values[start : start + chunk]
        quantiles = torch.quantile(part, levels, dim=-1).tolist()  # (levels, steps, keys)
        means = part.mean(dim=-1).tolist()
        for i, step in enumerate(steps[start : start + chunk]):
            for j, key in enumerate(keys):
                rows.extend((step, f"{key}/{name}", quantiles[n][i][j]) for n, name in enumerate(names))
                rows.append((step, f"{key}/mean", means[i][j]))
    return rows


class ModelSteps:
    """A model task trained by the config's optimizer and schedule (see the module docstring)."""

    def __init__(self, task: ModelTask, config: ExperimentConfig) -> None:
        self.task = task
        self.total = training_length(config, task)
        self.accumulation = config.train.accumulation_steps
        self.stop_on_divergence = config.train.stop_on_divergence
        self.params = [p for p in task.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(config.optimizer, self.params)
        self.scheduler = make_scheduler(self.optimizer, config.schedule, self.total)
        self.clip_stats = isinstance(self.optimizer, ClipOptimizer)

    def step(self, step: int, record: bool) -> StepValues | None:
        """Take training step ``step`` (1-based); its values when ``record``."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss, metrics = model_step(self.task, self.optimizer, self.scheduler, self.accumulation)
        if not record:
            return None
        values = {"train/loss": metrics.get("loss", loss)}
        values.update({f"train/{k}": v for k, v in metrics.items() if k != "loss"})
        if self.clip_stats:
            stats = self.optimizer.step_stats  # type: ignore[attr-defined]
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
        return values, lr

    def params_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all())

    @staticmethod
    def row(values: dict[str, Any]) -> Tensor:
        """One step's values as a float64 vector (one entry per key)."""
        return torch.stack(
            [torch.as_tensor(v).detach().reshape(()).to(torch.float64) for v in values.values()]
        )

    def metric_rows(self, steps: list[int], keys: list[str], block: Tensor) -> list[MetricRow]:
        """Rows of ``block`` (steps, keys) on the CPU."""
        return [
            (step, key, value) for step, row in zip(steps, block.tolist()) for key, value in zip(keys, row)
        ]

    def first_divergence(self, steps: list[int], keys: list[str], block: Tensor) -> int | None:
        """The first step of ``block`` whose ``train/loss`` is not finite, if divergence ends the run."""
        if not self.stop_on_divergence:
            return None
        bad = (~torch.isfinite(block[:, keys.index("train/loss")])).nonzero()
        return steps[int(bad[0, 0])] if len(bad) else None

    def evaluate(self, step: int) -> list[MetricRow]:
        """``eval/*`` rows: ``task.evaluate()`` under ``no_grad`` with the model in eval mode."""
        model = self.task.model
        model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate()
        model.train()
        keys = list(metrics)
        converted = _as_row([metrics[k] for k in keys]).tolist()
        return [(step, f"eval/{k}", v) for k, v in zip(keys, converted)]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_results(self, artifacts: Path) -> list[tuple[str, Path]]:
        """Files that end a run, as ``(kind, path)``: none for a model task."""
        return []


class VectorizedSteps:
    """A vectorized task's steps: ``task.step(lr_factor)`` with the schedule's factor (module docstring)."""

    stop_on_divergence = False  # a diverged run is one of R; the quantiles show it

    def __init__(self, task: VectorizedTask, config: ExperimentConfig) -> None:
        self.task = task
        self.total = training_length(config, task)
        self.factor = lr_factor(config.schedule, self.total)
        self.lr = float(config.optimizer.hyperparameters.get("lr", 1.0))
        self.final_per_run: dict[str, Tensor] = {}

    def step(self, step: int, record: bool) -> StepValues | None:
        factor = self.factor(step - 1)
        metrics = self.task.step(factor)
        if not record:
            return None
        return {f"train/{k}": v for k, v in metrics.items()}, self.lr * factor

    @staticmethod
    def row(values: dict[str, Any]) -> Tensor:
        """One step's values as a float64 block (keys, R)."""
        return torch.stack(
            [torch.as_tensor(v).detach().to(torch.float64).reshape(-1) for v in values.values()]
        )

    def metric_rows(self, steps: list[int], keys: list[str], block: Tensor) -> list[MetricRow]:
        """Quantile rows of ``block`` (steps, keys, R); the last step's values are kept per run."""
        self.final_per_run.update({key: block[-1, j] for j, key in enumerate(keys)})
        return _quantile_rows(steps, keys, block)

    def first_divergence(self, steps: list[int], keys: list[str], block: Tensor) -> int | None:
        return None

    def evaluate(self, step: int) -> list[MetricRow]:
        """``eval/*`` quantile rows of ``task.evaluate()`` (under ``no_grad``)."""
        with torch.no_grad():
            metrics = self.task.evaluate()
        keys = [f"eval/{k}" for k in metrics]
        block = self.row(metrics).cpu()
        self.final_per_run.update({key: block[j] for j, key in enumerate(keys)})
        return _quantile_rows([step], keys, block[None])

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def save_results(self, artifacts: Path) -> list[tuple[str, Path]]:
        """The last per-run values as ``<key>.npy`` files (atomic writes), kinds ``per_run/<key>``."""
        artifacts.mkdir(parents=True, exist_ok=True)
        saved = []
        for key, values in self.final_per_run.items():
            path = artifacts / f"{key.replace('/', '__')}.npy"
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, values.numpy())
            os.replace(tmp, path)
            saved.append((f"per_run/{key}", path))
        return saved


def train_steps(task: Task, config: ExperimentConfig) -> ModelSteps | VectorizedSteps:
    """The steps that train ``task`` as ``config`` says: :class:`ModelSteps` or :class:`VectorizedSteps`."""
    if isinstance(task, ModelTask):
        return ModelSteps(task, config)
    return VectorizedSteps(task, config)  # type: ignore[arg-type]  (register_task admits only the two kinds)
