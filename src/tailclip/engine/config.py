"""The experiment config: its pydantic schema and :func:`parse_config`, which validates and resolves it.

One experiment is one YAML file (read by :mod:`tailclip.engine.yaml_loading`)::

    name: demo
    task: {name: noisy-quadratic, options: {dim: 20, noise: student_t, df: 1.5}}
    optimizer: {name: clip_sgd, lr: 0.05, clip: global, max_norm: 1.0}
    schedule: {kind: cosine, warmup_steps: 20, final_factor: 0.0}
    train: {steps: 300, batch_size: 1, eval_every: 50, seed: 0}
    sweep: {grid: {optimizer.lr: [0.1, 0.05]}, seeds: [0, 1, 2]}
    monitor: {every: null}              # or {every: 100, mean_batches: 4, noise_batches: 50}
    output: {store: runs/tailclip.sqlite}

``optimizer`` names a key of :data:`tailclip.optim.OPTIMIZERS` or a ``torch.optim`` baseline
(``sgd``, ``adam``, ``adamw``); the other keys are the optimizer's keyword arguments, resolved
by :func:`tailclip.engine.optimizer_spec.resolve_optimizer` (checked against its signature,
defaults filled, validated by its constructor). A threshold policy is written
``max_norm: {policy: autoclip, percentile: 10}`` (or ``zclip``); a wrapper such as
``noise_injection`` takes its base optimizer as ``base_optimizer: {name: adamw, ...}``.

Validation is two-phase: pydantic checks the structure (``extra="forbid"``, strict types),
then :func:`parse_config` resolves what depends on registries (task options through the
task's own ``Options`` model, optimizer hyperparameters, cross-field rules, the task's
``check_config`` hook with the run's :class:`~tailclip.problems.TaskContext`). The resolved
config fills in every default, so equal experiments written differently get the same identity
(:mod:`tailclip.engine.identity`). Sweeps expand in :mod:`tailclip.engine.grid`.

Every user error is a :class:`ConfigError` whose message is one line,
``<file>: <dotted.field>: <what is wrong>; allowed: <...>``
(:mod:`tailclip.engine._config_errors`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from tailclip.engine._config_errors import ConfigError, config_error, from_validation_error, short
from tailclip.engine.devices import resolve_device
from tailclip.engine.identity import config_hash
from tailclip.engine.optimizer_spec import optimizer_class, resolve_optimizer
from tailclip.problems import TASKS, ModelTask, TaskContext

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "MonitorConfig",
    "OptimizerConfig",
    "OutputConfig",
    "ScheduleConfig",
    "SweepConfig",
    "TaskConfig",
    "TrainConfig",
    "STORE_FILE_NAME",
    "parse_config",
    "task_context",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class TaskConfig(_Section):
    """``task``: a registered task and its options (validated by the task's ``Options``)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}")
        return name


class OptimizerConfig(BaseModel):
    """``optimizer``: a registered optimizer; every other key is one of its keyword arguments."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    name: str

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        optimizer_class(name)
        return name

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


ScheduleKind = Literal["constant", "warmup_linear", "cosine", "step"]
_SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "constant": ("warmup_steps", "warmup_fraction"),
    "warmup_linear": ("warmup_steps", "warmup_fraction", "final_factor"),
    "cosine": ("warmup_steps", "warmup_fraction", "final_factor"),
    "step": ("warmup_steps", "warmup_fraction", "milestones", "gamma"),
}


class ScheduleConfig(_Section):
    """``schedule``: the learning-rate multiplier against the step (see :mod:`tailclip.engine.schedules`)."""

    kind: ScheduleKind = "constant"
    warmup_steps: int | None = Field(None, ge=0)
    warmup_fraction: float | None = Field(None, ge=0.0, lt=1.0)
    final_factor: float = Field(0.0, ge=0.0, le=1.0)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)


class TrainConfig(_Section):
    """``train``: length (``steps``, or ``epochs`` for tasks with finite data), batch, intervals, seed.

    ``accumulation_steps`` (model tasks): micro-batches of ``batch_size`` per optimizer step,
    each backward on ``loss / accumulation_steps``; an optimizer with ``accumulate()``
    (``NoiseInjection(variance="microbatch")``) records each micro-batch gradient. ``steps`` and
    epochs count optimizer steps (an epoch is ``floor(batches / accumulation_steps)`` of them).
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) must exist on the machine that
    validates the config (:func:`tailclip.engine.devices.resolve_device`); ``auto`` is CUDA
    when available, else the CPU.
    """

    steps: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(1, ge=1)
    accumulation_steps: int = Field(1, ge=1)
    eval_every: int | None = Field(None, ge=1)
    log_every: int = Field(1, ge=1)
    checkpoint_every: int | None = Field(1000, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)
    device: str = "cpu"
    stop_on_divergence: bool = True
    keep_checkpoint: bool = False


class SweepConfig(_Section):
    """``sweep``: a grid over dotted keys (the cartesian product) and a list of seeds."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | None = None


class MonitorConfig(_Section):
    """``monitor``: gradient-noise diagnostics during training of a model task (``every: null`` = never).

    Every ``every`` steps a :class:`~tailclip.noise.TailMonitor` takes ``noise_batches`` noise
    samples at batch size ``batch_size`` (``null``: ``train.batch_size``) around a mean gradient
    of ``mean_batches`` batches, from the task's ``noise_source()`` (:mod:`tailclip.problems.task`);
    at least ``2 k1 = 20`` samples for the tail index. Cost: about
    ``(mean_batches + noise_batches) / every`` of the training's forward-backward passes.
    """

    every: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    mean_batches: int = Field(4, ge=1)
    noise_batches: int = Field(50, ge=20)


STORE_FILE_NAME = "tailclip.sqlite"


class OutputConfig(_Section):
    """``output``: where results go (the SQLite store; checkpoints live beside it).

    ``store`` is the store's file. A path ending in a separator (``runs/``) or naming an
    existing folder is a folder: the store is ``<folder>/tailclip.sqlite`` inside it.
    """

    store: str = Field(f"runs/{STORE_FILE_NAME}", min_length=1)

    @field_validator("store")
    @classmethod
    def _store_file(cls, store: str) -> str:
        separators = tuple(s for s in (os.sep, os.altsep, "/") if s)
        if store.endswith(separators) or Path(store).is_dir():
            return str(Path(store) / STORE_FILE_NAME)
        return store


class ExperimentConfig(_Section):
    """A whole experiment. Build it with :func:`load_config` or :func:`parse_config`."""

    name: str = Field(min_length=1)
    task: TaskConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sweep: SweepConfig | None = None
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # Presentation only (report and table labels): not part of the run id (see identity.config_hash).
    label: str | None = Field(None, min_length=1, max_length=40)

    _raw: dict[str, Any] | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="<config>")

    @property
    def run_id(self) -> str:
        return config_hash(self)

    @property
    def source(self) -> str:
        """The file (or ``<dict>``) the config came from, for error messages."""
        return self._source


_SECTIONS: dict[str, type[BaseModel]] = {
    "task": TaskConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "sweep": SweepConfig,
    "monitor": MonitorConfig,
    "output": OutputConfig,
}



# ----------------------------------------------------------------------------- resolution


def _check_schedule(schedule: ScheduleConfig, total_steps: int | None, source: str) -> None:
    allowed = _SCHEDULE_FIELDS[schedule.kind]
    for key in sorted(schedule.model_fields_set - {"kind"}):
        default = ScheduleConfig.model_fields[key].get_default(call_default_factory=True)
        if key not in allowed and getattr(schedule, key) != default:
            raise config_error(
                source,
                f"schedule.{key}",
                f"not used by kind {schedule.kind!r}; allowed for {schedule.kind}: {', '.join(allowed)}",
            )
    if schedule.warmup_steps is not None and schedule.warmup_fraction is not None:
        raise config_error(
            source, "schedule.warmup_fraction", "give warmup_steps or warmup_fraction, not both"
        )
    milestones = schedule.milestones
    if any(m < 1 for m in milestones) or any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise config_error(
            source,
            "schedule.milestones",
            f"got {short(milestones)}; allowed: strictly increasing steps >= 1",
        )
    if total_steps is not None:
        if schedule.warmup_steps is not None and schedule.warmup_steps > total_steps:
            raise config_error(
                source,
                "schedule.warmup_steps",
                f"{schedule.warmup_steps} is out of range; allowed: <= train.steps",
            )
        if milestones and milestones[-1] >= total_steps:
            raise config_error(
                source, "schedule.milestones", f"{milestones[-1]} is out of range; allowed: < train.steps"
            )


def _check_train(train: TrainConfig, task_cls: type, source: str) -> torch.device:
    """The train section's cross-field rules; returns the device ``train.device`` names here."""
    if train.steps is None and train.epochs is None:
        raise config_error(source, "train.steps", "missing; allowed: set train.steps (or train.epochs)")
    if train.steps is not None and train.epochs is not None:
        raise config_error(source, "train.epochs", "give train.steps or train.epochs, not both")
    if train.epochs is not None and not getattr(task_cls, "supports_epochs", False):
        raise config_error(
            source, "train.epochs", f"task {task_cls.name!r} has no finite data; allowed: train.steps"
        )
    if train.accumulation_steps > 1 and not issubclass(task_cls, ModelTask):
        raise config_error(
            source, "train.accumulation_steps", f"task {task_cls.name!r} is not a model task; allowed: 1"
        )
    try:
        return resolve_device(train.device)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_monitor(config: ExperimentConfig, task_cls: type, source: str) -> None:
    monitor = config.monitor
    if monitor.every is None:
        return
    if not issubclass(task_cls, ModelTask):
        raise config_error(
            source, "monitor.every", f"task {task_cls.name!r} is not a model task; allowed: null"
        )
    batch_size = monitor.batch_size
    fixed = task_cls.noise_source is ModelTask.noise_source  # the default: the training batches
    if fixed and batch_size is not None and batch_size != config.train.batch_size:
        raise config_error(
            source,
            "monitor.batch_size",
            f"task {task_cls.name!r} measures noise on its training batches; "
            f"allowed: null or train.batch_size ({config.train.batch_size})",
        )


def _check_sweep(sweep: SweepConfig, source: str) -> None:
    for key, values in sweep.grid.items():
        field = f"sweep.grid.{key}"
        root = key.split(".")[0]
        if root not in ("name", "task", "optimizer", "schedule", "train", "monitor"):
            raise config_error(
                source,
                field,
                "not a sweepable key; allowed: keys under name, task, optimizer, schedule, train, monitor",
            )
        if key == "train.seed":
            raise config_error(
                source, field, "seeds are swept by sweep.seeds; allowed: a key other than train.seed"
            )
        if not values:
            raise config_error(source, field, "empty list; allowed: a non-empty list of values")
    if sweep.seeds is not None:
        if not sweep.seeds:
            raise config_error(source, "sweep.seeds", "empty list; allowed: a non-empty list of integers")
        for i, seed in enumerate(sweep.seeds):
            if not 0 <= seed < 2**32:
                raise config_error(
                    source, f"sweep.seeds[{i}]", f"{seed} is out of range; allowed: 0 <= seed < 2**32"
                )
        if len(set(sweep.seeds)) != len(sweep.seeds):
            raise config_error(
                source, "sweep.seeds", f"duplicates in {short(sweep.seeds)}; allowed: distinct seeds"
            )


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate and resolve a config given as plain data (e.g. parsed YAML); see the module docstring."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: (top level): wrong type: got {short(data)}; allowed: a mapping with the sections "
            "name, " + ", ".join(_SECTIONS)
        )
    raw = copy.deepcopy(data)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source, ExperimentConfig) from None
    except RecursionError:
        raise ConfigError(f"{source}: (top level): nested too deeply") from None
    task_cls = TASKS[config.task.name]
    try:
        options = task_cls.Options.model_validate(config.task.options)
    except ValidationError as exc:
        raise from_validation_error(exc, source, task_cls.Options, ("task", "options")) from None
    optimizer = resolve_optimizer(config.optimizer.model_dump(), source, "optimizer")
    device = _check_train(config.train, task_cls, source)
    _check_schedule(config.schedule, config.train.steps, source)
    _check_monitor(config, task_cls, source)
    if config.sweep is not None:
        _check_sweep(config.sweep, source)
    resolved = config.model_copy(
        update={
            "task": TaskConfig(name=config.task.name, options=options.model_dump(mode="json")),
            "optimizer": OptimizerConfig(**optimizer),
        }
    )
    try:
        task_cls.check_config(options, task_context(resolved, device))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    resolved._raw = raw
    resolved._source = source
    return resolved


def task_context(config: ExperimentConfig, device: torch.device) -> TaskContext:
    """What the config's task sees of it (plain data): seed, batch size, ``device``, optimizer spec."""
    return TaskContext(
        seed=config.train.seed,
        batch_size=config.train.batch_size,
        device=device,
        optimizer=config.optimizer.model_dump(),
    )
