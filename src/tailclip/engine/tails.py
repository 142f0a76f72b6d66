"""The gradient noise of a config's model task, for ``tailclip tails``: :func:`config_tails_report`.

The task is built from the resolved config exactly as :func:`~tailclip.engine.runner.run_one`
builds it (seeded with ``train.seed``). With ``steps = N > 0`` it is first trained for ``N``
steps by :class:`~tailclip.engine.train_steps.ModelSteps`, the runner's own steps (the
schedule over the config's full training length, so the parameters are those of step ``N`` of
a ``tailclip run``). The noise is then measured through ``task.noise_source(batch_size)``
(:mod:`tailclip.problems.task`) with :func:`tailclip.noise.tails_report`, seeded with
``train.seed``.

A task whose noise source draws its training batches (the default) measures at another batch
size ``B`` than ``train.batch_size`` by drawing its next batches at ``B``
(``train_batch(B)``): the same task and the same loaded data, continuing its data stream
after the ``N`` training steps (training itself always uses the config's batch size).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tailclip.engine.config import ExperimentConfig
from tailclip.engine.devices import resolve_device
from tailclip.engine.train_steps import ModelSteps, build_task, training_length
from tailclip.noise import BatchLoss, NoiseReport, tails_report
from tailclip.problems import ModelTask

__all__ = ["config_tails_report"]

Progress = Callable[[int, int], None]


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
    task = build_task(config, resolve_device(config.train.device))
    if not isinstance(task, ModelTask):
        raise ValueError(f"task.name: {config.task.name!r} is not a model task; allowed: a model task")
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
        _train(ModelSteps(task, config), steps, on_train)
    source = task.noise_source()
    if source.batch_size is not None and source.batch_size != size:
        source = task.noise_source(size)
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


def _train(model_steps: ModelSteps, steps: int, progress: Progress | None) -> None:
    for step in range(1, steps + 1):
        model_steps.step(step, record=False)
        if progress is not None:
            progress(step, steps)
    if not model_steps.params_finite():
        raise RuntimeError(f"training diverged: the parameters are not finite after {steps} steps")
