"""Experiment configs: the YAML schema, ``--set`` overrides, sweep expansion and run identity.

One experiment is one YAML file::

    name: demo
    task: {name: noisy-quadratic, options: {dim: 20, noise: student_t, df: 1.5}}
    optimizer: {name: clip_sgd, lr: 0.05, clip: global, max_norm: 1.0}
    schedule: {kind: cosine, warmup_steps: 20, final_factor: 0.0}
    train: {steps: 300, batch_size: 1, eval_every: 50, seed: 0}
    sweep: {grid: {optimizer.lr: [0.1, 0.05]}, seeds: [0, 1, 2]}
    monitor: {every: null}              # or {every: 100, mean_batches: 4, noise_batches: 50}
    output: {store: runs/tailclip.sqlite}

``optimizer`` names a key of :data:`tailclip.optim.OPTIMIZERS` or a ``torch.optim`` baseline
(``sgd``, ``adam``, ``adamw``); the other keys are the optimizer's keyword arguments, checked
against its signature and validated by constructing it on a dummy parameter. A threshold
policy is written ``max_norm: {policy: autoclip, percentile: 10}`` (or ``zclip``); a wrapper
such as ``noise_injection`` takes its base optimizer as ``base_optimizer: {name: adamw, ...}``.

Loading is two-phase: pydantic checks the structure (``extra="forbid"``, strict types), then
:func:`parse_config` resolves what depends on registries (task options through the task's own
``Options`` model, optimizer hyperparameters, cross-field rules). The resolved config fills
in every default, so equal experiments written differently get the same identity.

Identity: :func:`config_hash` is the sha256 (16 hex characters) of the canonical JSON of the
run's config, :func:`run_config_dict`: the resolved config without ``sweep`` (a run does not
depend on the grid it came from) and ``output`` (where results go is not what is run).
:func:`group_key` is the same hash without ``train.seed``; it groups the seeds of one
configuration.

Every user error is a :class:`ConfigError` whose message is one line,
``<file>: <dotted.field>: <what is wrong>; allowed: <...>``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import itertools
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

import tailclip.problems  # noqa: F401  (registers the built-in tasks)
from tailclip.clip import AutoClip, ThresholdPolicy, ZClip
from tailclip.engine.tasks import TASKS, ModelTask
from tailclip.optim import OPTIMIZERS

__all__ = [
    "BASELINE_OPTIMIZERS",
    "BUILTIN_CONFIG_DIR",
    "THRESHOLD_POLICIES",
    "ConfigError",
    "ExperimentConfig",
    "MonitorConfig",
    "OptimizerConfig",
    "OutputConfig",
    "ScheduleConfig",
    "SweepConfig",
    "SweepPoint",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "build_optimizer",
    "builtin_configs",
    "config_hash",
    "expand_sweep",
    "group_key",
    "load_config",
    "optimizer_class",
    "parse_config",
    "resolve_config_path",
    "run_config_dict",
    "sweep_points",
]

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

BASELINE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

THRESHOLD_POLICIES: dict[str, type[ThresholdPolicy]] = {"autoclip": AutoClip, "zclip": ZClip}

# Constructor arguments a config cannot set: the parameters themselves, and objects.
_NOT_CONFIGURABLE = ("params", "generator")
_WRAPPED_OPTIMIZER = "base_optimizer"
_MAX_REPR = 60


class ConfigError(ValueError):
    """A user error in a config; ``str()`` is one line naming the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _wrong_type(value: Any, allowed: str) -> str:
    return f"wrong type: got {_short(value)}; allowed: {allowed}"


def _error(source: str, field: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: {field}: {what}")


# ----------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """Safe loader that reads ``1e-3`` as a float (YAML 1.2), not as the string PyYAML makes it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        return _raise(ConfigError(f"{source}: invalid YAML: {where}{problem}"))
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        return _raise(ConfigError(f"{source}: invalid YAML: {type(exc).__name__}: {exc}"))


def _raise(exc: Exception) -> Any:
    raise exc


# ----------------------------------------------------------------------------- schema


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

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
    of ``mean_batches`` batches, from the task's ``noise_source()`` (:mod:`tailclip.engine.tasks`);
    at least ``2 k1 = 20`` samples for the tail index. Cost: about
    ``(mean_batches + noise_batches) / every`` of the training's forward-backward passes.
    """

    every: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    mean_batches: int = Field(4, ge=1)
    noise_batches: int = Field(50, ge=20)


class OutputConfig(_Section):
    """``output``: where results go (the SQLite store; checkpoints live beside it)."""

    store: str = Field("runs/tailclip.sqlite", min_length=1)


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
    # Presentation only (report and table labels): not part of the run id (see config_hash).
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


# ----------------------------------------------------------------------------- pydantic errors


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc``, if ``loc`` walks through models."""
    current: type[BaseModel] = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)]
        nested = [a for a in nested if issubclass(a, BaseModel)]
        if not nested:
            return None
        current = nested[0]
    return current


def _describe_type(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if annotation in names:
        return names[annotation]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        text = " or ".join(_describe_type(a) for a in args)
        return text + (" or null" if type(None) in typing.get_args(annotation) else "")
    if typing.get_origin(annotation) is list:
        return "a list"
    if typing.get_origin(annotation) is dict:
        return "a mapping"
    if typing.get_origin(annotation) is Literal:
        return ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _from_validation_error(
    exc: ValidationError, source: str, model: type[BaseModel], prefix: Sequence[Any] = ()
) -> ConfigError:
    """The first pydantic error as a one-line :class:`ConfigError`."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    given = err.get("input")
    ctx = err.get("ctx") or {}
    field = _dotted((*prefix, *loc))
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else "see the documentation"
        return _error(source, field, f"unknown key; allowed: {allowed}")
    if kind == "missing":
        return _error(source, field, "missing required key")
    holder = _model_at(model, loc[:-1])
    annotation = None
    if holder is not None and loc and isinstance(loc[-1], str) and loc[-1] in holder.model_fields:
        annotation = holder.model_fields[loc[-1]].annotation
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ops = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        limit = next(iter(ctx.values()), "?")
        return _error(source, field, f"{_short(given)} is out of range; allowed: {ops[kind]} {limit}")
    if kind == "literal_error":
        return _error(source, field, f"got {_short(given)}; allowed: {ctx.get('expected', '?')}")
    if kind in ("string_too_short", "too_short"):
        return _error(source, field, f"got {_short(given)}; allowed: a non-empty value")
    if kind == "value_error":
        message = str(ctx.get("error", err.get("msg", "")))
        return _error(source, field, message)
    if (
        kind.endswith("_type")
        or kind.endswith("_parsing")
        or kind in ("int_from_float", "model_attributes_type")
    ):
        allowed = _describe_type(annotation) if annotation is not None else err.get("msg", "").lower()
        if kind in ("model_type", "dict_type", "model_attributes_type"):
            allowed = "a mapping"
        return _error(source, field, f"wrong type: got {_short(given)}; allowed: {allowed}")
    return _error(source, field, f"{err.get('msg', kind)}; got {_short(given)}")


# ----------------------------------------------------------------------------- optimizers


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class registered as ``name``: :data:`tailclip.optim.OPTIMIZERS` or a torch baseline."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    if name in BASELINE_OPTIMIZERS:
        return BASELINE_OPTIMIZERS[name]
    allowed = ", ".join([*OPTIMIZERS, *BASELINE_OPTIMIZERS])
    raise ValueError(f"unknown optimizer {name!r}; allowed: {allowed}")


def _signature_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return {
        k: p
        for k, p in params.items()
        if k not in _NOT_CONFIGURABLE and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _accepts_any_keyword(cls: type) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def _is_float_parameter(parameter: inspect.Parameter) -> bool:
    if isinstance(parameter.default, float):
        return True
    annotation = parameter.annotation
    if isinstance(annotation, str):
        return "float" in [part.strip() for part in annotation.split("|")]
    return annotation is float or float in typing.get_args(annotation)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    return isinstance(value, float)


def _normalize_value(parameter: inspect.Parameter | None, value: Any, source: str, field: str) -> Any:
    """Check that ``value`` is plain config data and give it the parameter's numeric type."""
    if isinstance(value, list):
        if not all(_plain(v) for v in value):
            raise _error(
                source, field, f"wrong type: got {_short(value)}; allowed: a list of numbers or strings"
            )
        default = parameter.default if parameter is not None else None
        if isinstance(default, tuple) and all(isinstance(d, float) for d in default):
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return list(value)
    if isinstance(value, dict):
        if parameter is not None and not _accepts_policy(parameter):
            raise _error(source, field, _wrong_type(value, _describe_parameter(parameter)))
        return value
    if not _plain(value):
        raise _error(
            source,
            field,
            f"wrong type: got {_short(value)}; allowed: a number, string, boolean, list or null",
        )
    if parameter is not None and _is_float_parameter(parameter):
        if isinstance(value, (str, bool)):
            raise _error(source, field, _wrong_type(value, _describe_parameter(parameter)))
        if isinstance(value, int):
            return float(value)
    return value


def _annotation_text(parameter: inspect.Parameter) -> str:
    annotation = parameter.annotation
    return annotation if isinstance(annotation, str) else str(annotation)


def _accepts_policy(parameter: inspect.Parameter) -> bool:
    return "ThresholdPolicy" in _annotation_text(parameter)


def _describe_parameter(parameter: inspect.Parameter) -> str:
    if _accepts_policy(parameter):
        return "a number or a policy mapping {policy: autoclip | zclip, ...}"
    return "a number" if _is_float_parameter(parameter) else _annotation_text(parameter)


def _resolve_policy(spec: dict[str, Any], source: str, field: str) -> dict[str, Any]:
    kind = spec.get("policy")
    if kind not in THRESHOLD_POLICIES:
        raise _error(
            source, f"{field}.policy", f"got {_short(kind)}; allowed: {', '.join(THRESHOLD_POLICIES)}"
        )
    cls = THRESHOLD_POLICIES[kind]
    parameters = _signature_parameters(cls)
    resolved: dict[str, Any] = {"policy": kind}
    for key, value in spec.items():
        if key == "policy":
            continue
        if key not in parameters:
            raise _error(source, f"{field}.{key}", f"unknown key; allowed: policy, {', '.join(parameters)}")
        resolved[key] = _normalize_value(parameters[key], value, source, f"{field}.{key}")
        if isinstance(resolved[key], (list, dict)):
            raise _error(source, f"{field}.{key}", f"wrong type: got {_short(value)}; allowed: a number")
    for key, parameter in parameters.items():
        if (
            key not in resolved
            and _plain(parameter.default)
            and parameter.default is not inspect.Parameter.empty
        ):
            resolved[key] = parameter.default
    try:
        cls(**{k: v for k, v in resolved.items() if k != "policy"})
    except Exception as exc:  # noqa: BLE001  (any constructor complaint is a config error)
        raise _error(source, field, f"{type(exc).__name__}: {exc}") from None
    return resolved


def _instantiate(value: Any) -> Any:
    """Config data to constructor arguments: policy specs to policies, lists to tuples."""
    if isinstance(value, dict) and "policy" in value:
        args = {k: v for k, v in value.items() if k != "policy"}
        return THRESHOLD_POLICIES[value["policy"]](**args)
    if isinstance(value, list):
        return tuple(value)
    return value


def build_optimizer(
    config: OptimizerConfig | Mapping[str, Any], params: Iterable[Any]
) -> torch.optim.Optimizer:
    """Construct the optimizer a (resolved) ``optimizer`` section describes over ``params``."""
    spec = config.model_dump() if isinstance(config, OptimizerConfig) else dict(config)
    cls = optimizer_class(spec.pop("name"))
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == _WRAPPED_OPTIMIZER and isinstance(value, dict):
            continue
        kwargs[key] = _instantiate(value)
    if isinstance(spec.get(_WRAPPED_OPTIMIZER), dict):
        return cls(build_optimizer(spec[_WRAPPED_OPTIMIZER], params), **kwargs)
    return cls(params, **kwargs)


def _resolve_optimizer(spec: Mapping[str, Any], source: str, field: str) -> dict[str, Any]:
    """Check hyperparameters against the signature, fill defaults, validate by constructing."""
    name = spec.get("name")
    if not isinstance(name, str):
        raise _error(source, f"{field}.name", f"wrong type: got {_short(name)}; allowed: a string")
    try:
        cls = optimizer_class(name)
    except ValueError as exc:
        raise _error(source, f"{field}.name", str(exc)) from None
    parameters = _signature_parameters(cls)
    open_signature = _accepts_any_keyword(cls)
    resolved: dict[str, Any] = {"name": name}
    for key, value in spec.items():
        if key == "name":
            continue
        if not isinstance(key, str) or (key not in parameters and not open_signature):
            allowed = ", ".join(parameters)
            raise _error(source, f"{field}.{key}", f"unknown hyperparameter of {name}; allowed: {allowed}")
        if key == _WRAPPED_OPTIMIZER:
            if not isinstance(value, dict):
                raise _error(
                    source,
                    f"{field}.{key}",
                    f"wrong type: got {_short(value)}; allowed: a mapping with a name",
                )
            resolved[key] = _resolve_optimizer(value, source, f"{field}.{key}")
            continue
        value = _normalize_value(parameters.get(key), value, source, f"{field}.{key}")
        if isinstance(value, dict):
            value = _resolve_policy(value, source, f"{field}.{key}")
        resolved[key] = value
    missing = [k for k, p in parameters.items() if p.default is inspect.Parameter.empty and k not in resolved]
    if missing:
        raise _error(source, f"{field}.{missing[0]}", f"missing required hyperparameter of {name}")
    for key, parameter in parameters.items():
        default = parameter.default
        if key in resolved or default is inspect.Parameter.empty:
            continue
        if _plain(default):
            resolved[key] = _normalize_value(parameter, default, source, f"{field}.{key}")
        elif isinstance(default, tuple) and all(_plain(d) for d in default):
            resolved[key] = list(default)
    try:
        build_optimizer(resolved, [torch.zeros(1, requires_grad=True)])
    except Exception as exc:  # noqa: BLE001  (any constructor complaint is a config error)
        raise _error(source, _culprit(resolved, cls, field), f"{type(exc).__name__}: {exc}") from None
    return resolved


def _culprit(resolved: Mapping[str, Any], cls: type, field: str) -> str:
    """The hyperparameter whose value makes the constructor fail (else the section itself)."""
    parameters = _signature_parameters(cls)
    name = resolved["name"]
    required = {k: resolved[k] for k, p in parameters.items() if p.default is inspect.Parameter.empty}

    def fails(kwargs: dict[str, Any]) -> bool:
        try:
            build_optimizer({"name": name, **kwargs}, [torch.zeros(1, requires_grad=True)])
        except Exception:  # noqa: BLE001
            return True
        return False

    if required and fails(required):
        if len(required) == 1:
            return f"{field}.{next(iter(required))}"
        for key in required:
            if fails({k: (v if k == key else 1e-3) for k, v in required.items()}):
                return f"{field}.{key}"
        return field
    for key, value in resolved.items():
        probed = key not in ("name", _WRAPPED_OPTIMIZER) and key not in required
        if probed and fails({**required, key: value}):
            return f"{field}.{key}"
    return field


# ----------------------------------------------------------------------------- resolution


def _check_schedule(schedule: ScheduleConfig, total_steps: int | None, source: str) -> None:
    allowed = _SCHEDULE_FIELDS[schedule.kind]
    for key in sorted(schedule.model_fields_set - {"kind"}):
        default = ScheduleConfig.model_fields[key].get_default(call_default_factory=True)
        if key not in allowed and getattr(schedule, key) != default:
            raise _error(
                source,
                f"schedule.{key}",
                f"not used by kind {schedule.kind!r}; allowed for {schedule.kind}: {', '.join(allowed)}",
            )
    if schedule.warmup_steps is not None and schedule.warmup_fraction is not None:
        raise _error(source, "schedule.warmup_fraction", "give warmup_steps or warmup_fraction, not both")
    milestones = schedule.milestones
    if any(m < 1 for m in milestones) or any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise _error(
            source,
            "schedule.milestones",
            f"got {_short(milestones)}; allowed: strictly increasing steps >= 1",
        )
    if total_steps is not None:
        if schedule.warmup_steps is not None and schedule.warmup_steps > total_steps:
            raise _error(
                source,
                "schedule.warmup_steps",
                f"{schedule.warmup_steps} is out of range; allowed: <= train.steps",
            )
        if milestones and milestones[-1] >= total_steps:
            raise _error(
                source, "schedule.milestones", f"{milestones[-1]} is out of range; allowed: < train.steps"
            )


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def _check_train(train: TrainConfig, task_cls: type, source: str) -> None:
    if train.steps is None and train.epochs is None:
        raise _error(source, "train.steps", "missing; allowed: set train.steps (or train.epochs)")
    if train.steps is not None and train.epochs is not None:
        raise _error(source, "train.epochs", "give train.steps or train.epochs, not both")
    if train.epochs is not None and not getattr(task_cls, "supports_epochs", False):
        raise _error(
            source, "train.epochs", f"task {task_cls.name!r} has no finite data; allowed: train.steps"
        )
    if train.accumulation_steps > 1 and not issubclass(task_cls, ModelTask):
        raise _error(
            source, "train.accumulation_steps", f"task {task_cls.name!r} is not a model task; allowed: 1"
        )
    if not _DEVICE.match(train.device):
        raise _error(
            source, "train.device", f"got {_short(train.device)}; allowed: auto, cpu, cuda, cuda:N, mps"
        )


def _check_monitor(config: ExperimentConfig, task_cls: type, source: str) -> None:
    monitor = config.monitor
    if monitor.every is None:
        return
    if not issubclass(task_cls, ModelTask):
        raise _error(source, "monitor.every", f"task {task_cls.name!r} is not a model task; allowed: null")
    batch_size = monitor.batch_size
    fixed = task_cls.noise_source is ModelTask.noise_source  # the default: the training batches
    if fixed and batch_size is not None and batch_size != config.train.batch_size:
        raise _error(
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
            raise _error(
                source,
                field,
                "not a sweepable key; allowed: keys under name, task, optimizer, schedule, train, monitor",
            )
        if key == "train.seed":
            raise _error(
                source, field, "seeds are swept by sweep.seeds; allowed: a key other than train.seed"
            )
        if not values:
            raise _error(source, field, "empty list; allowed: a non-empty list of values")
    if sweep.seeds is not None:
        if not sweep.seeds:
            raise _error(source, "sweep.seeds", "empty list; allowed: a non-empty list of integers")
        for i, seed in enumerate(sweep.seeds):
            if not 0 <= seed < 2**32:
                raise _error(
                    source, f"sweep.seeds[{i}]", f"{seed} is out of range; allowed: 0 <= seed < 2**32"
                )
        if len(set(sweep.seeds)) != len(sweep.seeds):
            raise _error(
                source, "sweep.seeds", f"duplicates in {_short(sweep.seeds)}; allowed: distinct seeds"
            )


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate and resolve a config given as plain data (e.g. parsed YAML); see the module docstring."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: (top level): wrong type: got {_short(data)}; allowed: a mapping with the sections "
            "name, " + ", ".join(_SECTIONS)
        )
    raw = copy.deepcopy(data)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, source, ExperimentConfig) from None
    except RecursionError:
        raise ConfigError(f"{source}: (top level): nested too deeply") from None
    task_cls = TASKS[config.task.name]
    try:
        options = task_cls.Options.model_validate(config.task.options)
    except ValidationError as exc:
        raise _from_validation_error(exc, source, task_cls.Options, ("task", "options")) from None
    optimizer = _resolve_optimizer(config.optimizer.model_dump(), source, "optimizer")
    _check_train(config.train, task_cls, source)
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
        task_cls.check_config(options, resolved)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    resolved._raw = raw
    resolved._source = source
    return resolved


def builtin_configs() -> dict[str, Path]:
    """The built-in experiment configs shipped with tailclip, by name (file stem)."""
    if not BUILTIN_CONFIG_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUILTIN_CONFIG_DIR.glob("*.yaml"))}


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it is a file, else the built-in config of that name; ConfigError otherwise."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    builtin = builtin_configs()
    name = candidate.name[: -len(".yaml")] if candidate.name.endswith(".yaml") else candidate.name
    if candidate.parent == Path(".") and name in builtin:
        return builtin[name]
    if candidate.exists():
        raise ConfigError(f"{path}: not a file; allowed: a YAML file or a built-in config name")
    names = ", ".join(builtin) or "none"
    raise ConfigError(f"{path}: file not found; allowed: a YAML file or a built-in config ({names})")


def _set_dotted(data: dict[str, Any], parts: Sequence[str], value: Any, source: str, key: str) -> None:
    current: Any = data
    walked: list[str] = []
    for i, part in enumerate(parts[:-1]):
        walked.append(part)
        if walked == ["sweep", "grid"]:
            grid = current.setdefault("grid", {}) if isinstance(current, dict) else None
            if not isinstance(grid, dict):
                raise ConfigError(
                    f"{source}: {key}: sweep.grid is not a mapping; allowed: set a mapping first"
                )
            grid[".".join(parts[i + 1 :])] = value
            return
        if not isinstance(current, dict):
            raise ConfigError(
                f"{source}: {key}: {'.'.join(walked[:-1])} is not a mapping; allowed: a mapping key"
            )
        nxt = current.get(part)
        if nxt is None:
            nxt = current[part] = {}
        current = nxt
    if not isinstance(current, dict):
        raise ConfigError(f"{source}: {key}: {'.'.join(parts[:-1])} is not a mapping; allowed: a mapping key")
    current[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a copy of ``data``."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise ConfigError(f"{source}: {_short(override)}: not key=value; allowed: dotted.key=value")
        value = _load_yaml(text, f"{source} {key}")
        _set_dotted(data, parts, value, source, key)
    return data


def load_config(path: str | Path, overrides: Iterable[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or a built-in one by name), apply overrides, validate and resolve it."""
    resolved_path = resolve_config_path(path)
    source = str(path)
    try:
        text = resolved_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    data = _load_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: (top level): wrong type: got {_short(data)}; allowed: a mapping with the sections "
            "name, " + ", ".join(_SECTIONS)
        )
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_config(data, source)


# ----------------------------------------------------------------------------- identity and sweeps


def run_config_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config of one run: the resolved config without ``sweep`` and ``output``."""
    return config.model_dump(mode="json", exclude={"sweep", "output"})


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _identity(config: ExperimentConfig) -> dict[str, Any]:
    data = run_config_dict(config)
    data.pop("label", None)  # a label names a run, it does not change it
    return data


def config_hash(config: ExperimentConfig) -> str:
    """Run identity: sha256 of the canonical JSON of :func:`run_config_dict` (``label`` aside), 16 hex."""
    return hashlib.sha256(_canonical(_identity(config)).encode()).hexdigest()[:16]


def group_key(config: ExperimentConfig) -> str:
    """Like :func:`config_hash` without ``train.seed``: equal for the seeds of one configuration."""
    data = _identity(config)
    data["train"].pop("seed", None)
    return hashlib.sha256(_canonical(data).encode()).hexdigest()[:16]


class SweepPoint(typing.NamedTuple):
    """One run of a sweep: its grid assignment (dotted key -> value) and its resolved config."""

    assignment: dict[str, Any]
    config: ExperimentConfig


def _describe_assignment(assignment: Mapping[str, Any], seed: int) -> str:
    parts = [f"{k}={_short(v)}" for k, v in assignment.items()]
    return ", ".join([*parts, f"seed={seed}"])


def sweep_points(config: ExperimentConfig) -> list[SweepPoint]:
    """Every grid point x seed of ``config``'s sweep, resolved (duplicates removed, order kept).

    Grid values replace the value at their dotted key in the config as written (before
    defaults are filled), so ``optimizer: [{name: sgd, lr: 0.1}, {name: clip_sgd, ...}]`` swaps
    whole optimizers and ``optimizer.name: [...]`` swaps names under shared hyperparameters.
    Without a ``sweep`` section the result is the config itself.
    """
    source = config.source
    base = copy.deepcopy(config._raw) if config._raw is not None else config.model_dump(mode="json")
    base.pop("sweep", None)
    sweep = config.sweep or SweepConfig()
    seeds = sweep.seeds if sweep.seeds is not None else [config.train.seed]
    keys = list(sweep.grid)
    points: list[SweepPoint] = []
    seen: set[str] = set()
    for values in itertools.product(*(sweep.grid[k] for k in keys)):
        assignment = dict(zip(keys, values))
        point = copy.deepcopy(base)
        labels = []
        for key, value in assignment.items():
            value = copy.deepcopy(value)
            if isinstance(value, dict) and "label" in value:  # a grid entry's label names the point
                labels.append(value.pop("label"))
            _set_dotted(point, key.split("."), value, source, f"sweep.grid.{key}")
        if labels:
            point["label"] = ", ".join(str(label) for label in labels)
        for seed in seeds:
            data = copy.deepcopy(point)
            if not isinstance(data.get("train"), dict):
                data["train"] = {}
            data["train"]["seed"] = seed
            try:
                resolved = parse_config(data, source)
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc} (in sweep point {_describe_assignment(assignment, seed)})"
                ) from None
            run_id = config_hash(resolved)
            if run_id not in seen:
                seen.add(run_id)
                points.append(SweepPoint(assignment, resolved))
    return points


def expand_sweep(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One resolved config per grid point x seed (see :func:`sweep_points`)."""
    return [p.config for p in sweep_points(config)]
