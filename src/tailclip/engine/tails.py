"""The gradient noise of a config's model task, for ``tailclip tails``: :func:`config_tails_report`.

The task is built from the resolved config exactly as :func:`~tailclip.engine.runner.run_one`
builds it (seeded with ``train.seed``). With ``steps = N > 0`` it is first trained for ``N``
steps with the config's optimizer and schedule (the schedule over the config's full training
length, so the parameters are those of step ``N`` of a ``tailclip run``). The noise is then
measured through ``task.noise_source()`` (:mod:`tailclip.engine.tasks`) with
:func:`tailclip.noise.tails_report`, seeded with ``train.seed``.

A task whose noise source draws its training batches (the default) measures at
``train.batch_size`` only; for another batch size ``B`` a second instance of the task is built
with ``train.batch_size = B`` and given the trained model's state, so training still uses the
config's batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tailclip.engine.config import ExperimentConfig, TrainConfig, build_optimizer
from tailclip.engine.runner import build_task, model_step, optimizer_steps_per_epoch, resolve_device
from tailclip.engine.schedules import make_scheduler
from tailclip.engine.tasks import ModelTask, NoiseSource
from tailclip.noise import BatchLoss, NoiseReport, tails_report

__all__ = ["config_tails_report", "training_length"]

Progress = Callable[[int, int], None]


def training_length(config: ExperimentConfig, task: ModelTask) -> int:
    """The config's number of training steps (``train.steps``, or epochs times the epoch length)."""
    if config.train.steps is not None:
        return config.train.steps
    per_epoch = task.steps_per_epoch()
    if per_epoch is None or config.train.epochs is None:
        raise ValueError(f"train.epochs: task {config.task.name!r} has no finite data; allowed: train.steps")
    return config.train.epochs * optimizer_steps_per_epoch(per_epoch, config.train)


def _model_task(config: ExperimentConfig, device: torch.device) -> ModelTask:
    task = build_task(config, device)
    if not isinstance(task, ModelTask):
        raise ValueError(f"task.name: {config.task.name!r} is not a model task; allowed: a model task")
    return task


def _train(
    task: ModelTask, config: ExperimentConfig, steps: int, total: int, progress: Progress | None
) -> None:
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config.optimizer, params)
    scheduler = make_scheduler(optimizer, config.schedule, total)
    for step in range(1, steps + 1):
        model_step(task, optimizer, scheduler, config.train.accumulation_steps)
        if progress is not None:
            progress(step, steps)
    if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise RuntimeError(f"training diverged: the parameters are not finite after {steps} steps")


def _source_at(
    task: ModelTask, config: ExperimentConfig, batch_size: int, device: torch.device
) -> NoiseSource:
    """``task``'s noise source, or that of a twin task at ``batch_size`` holding the same model state."""
    source = task.noise_source()
    if source.batch_size is None or source.batch_size == batch_size:
        return source
    train = TrainConfig.model_validate({**config.train.model_dump(), "batch_size": batch_size})
    twin = _model_task(config.model_copy(update={"train": train}), device)
    twin.model.load_state_dict(task.model.state_dict())
    return twin.noise_source()


def config_tails_report(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    mean_batches: int = 16,
    noise_batches: int = 200,
    per_sample: bool = False,
    steps: int = 0,
    on_train: Progress | None = None,
    on_noise: Progress | None = None,
) -> NoiseReport:
    """Measure the gradient noise of ``config``'s task after ``steps`` training steps; write the report.

    ``batch_size`` defaults to ``monitor.batch_size`` or ``train.batch_size``; the other
    arguments are those of :func:`tailclip.noise.tails_report`. ``on_train(step, steps)`` and
    ``on_noise(done, total)`` report progress. User errors (a vectorized task, ``steps``
    beyond the training length, per-sample mode on a task's own batch loss, too small a
    dataset) raise ``ValueError`` before anything is trained or written; a training that
    diverges raises ``RuntimeError``. Files go to ``out_dir`` (see :meth:`NoiseReport.save`).
    """
    try:
        device = resolve_device(config.train.device)
    except RuntimeError as exc:  # a device this machine lacks is the user's to fix
        raise ValueError(str(exc)) from None
    task = _model_task(config, device)
    total = training_length(config, task)
    if not 0 <= steps <= total:
        raise ValueError(f"steps: got {steps}; allowed: 0 <= steps <= {total} (the config's training length)")
    if per_sample and isinstance(task.noise_source().loss_fn, BatchLoss):
        raise ValueError(
            f"per_sample: task {config.task.name!r} measures noise through its own loss of whole "
            "batches, which has no per-example form; allowed: minibatch mode (no --per-sample)"
        )
    size = batch_size or config.monitor.batch_size or config.train.batch_size
    if steps:
        _train(task, config, steps, total, on_train)
    source = _source_at(task, config, size, device)
    return tails_report(
        source.model,
        source.loss_fn,
        source.data,
        out_dir,
        batch_size=size,
        mean_batches=mean_batches,
        noise_batches=noise_batches,
        per_sample=per_sample,
        seed=config.train.seed,
        step=steps,
        progress=on_noise,
    )
