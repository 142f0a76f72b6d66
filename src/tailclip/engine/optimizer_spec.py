"""Optimizer specs: the ``optimizer`` section of a config, resolved against the constructor it names.

A spec is plain data, ``{"name": <registered name>, <keyword argument>: <value>, ...}``.
``name`` is a key of :data:`tailclip.optim.OPTIMIZERS` or a ``torch.optim`` baseline
(:data:`BASELINE_OPTIMIZERS`). :func:`resolve_optimizer` is the one place hyperparameters are
resolved, in one pass over the constructor's signature (:func:`hyperparameters`: the
``inspect.signature`` defaults and the real types of ``typing.get_type_hints``):

* every key must be a keyword argument (``params`` and ``generator`` are not configurable);
* a value is plain data: a number, string, boolean, null or list; a mapping only where the
  type admits a :class:`~tailclip.clip.ThresholdPolicy` (``{policy: autoclip | zclip, ...}``,
  resolved the same way against the policy's constructor) or, for ``base_optimizer``, a
  wrapped optimizer's spec (resolved recursively);
* an integer given for a ``float`` (or a list for a ``tuple[float, ...]``) becomes a float, so
  ``lr: 1`` and ``lr: 1.0`` are the same experiment; a non-finite number is refused;
* every default is filled in, from the signature, so the resolved spec is the whole
  experiment;
* the resolved spec is checked by constructing the optimizer once on a one-element dummy
  parameter (the wrapped optimizer first): the constructor's own validation is the rule. Only
  when it refuses are single hyperparameters tried on their own, to name the one to blame.

:func:`build_optimizer` turns a resolved spec into the optimizer over real parameters.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tailclip.clip import AutoClip, ThresholdPolicy, ZClip
from tailclip.engine._config_errors import config_error, short, wrong_type
from tailclip.optim import OPTIMIZERS

__all__ = [
    "BASELINE_OPTIMIZERS",
    "THRESHOLD_POLICIES",
    "Hyperparameter",
    "build_optimizer",
    "hyperparameters",
    "optimizer_class",
    "resolve_optimizer",
]

BASELINE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

THRESHOLD_POLICIES: dict[str, type[ThresholdPolicy]] = {"autoclip": AutoClip, "zclip": ZClip}

# Constructor arguments a config cannot set: the parameters themselves, and objects.
_NOT_CONFIGURABLE = ("params", "generator")
_WRAPPED_OPTIMIZER = "base_optimizer"


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class registered as ``name``: :data:`tailclip.optim.OPTIMIZERS` or a torch baseline."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    if name in BASELINE_OPTIMIZERS:
        return BASELINE_OPTIMIZERS[name]
    allowed = ", ".join([*OPTIMIZERS, *BASELINE_OPTIMIZERS])
    raise ValueError(f"unknown optimizer {name!r}; allowed: {allowed}")


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union annotation (``float | None`` -> ``(float, NoneType)``)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    return (annotation,)


def _is_class(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)


@dataclass(frozen=True)
class Hyperparameter:
    """One configurable keyword argument of a constructor: its default and its real type."""

    name: str
    default: Any  # inspect.Parameter.empty when required
    annotation: Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def takes_float(self) -> bool:
        return any(m is float for m in _members(self.annotation))

    @property
    def takes_policy(self) -> bool:
        return any(_is_class(m, ThresholdPolicy) for m in _members(self.annotation))

    @property
    def float_items(self) -> bool:
        """A ``tuple[float, ...]``: list items given as integers become floats."""
        tuples = [m for m in _members(self.annotation) if typing.get_origin(m) is tuple]
        items = [a for m in tuples for a in typing.get_args(m) if a is not Ellipsis]
        return bool(items) and all(any(x is float for x in _members(a)) for a in items)

    def describe(self) -> str:
        """What a config may give, for error messages."""
        if self.takes_policy:
            return "a number or a policy mapping {policy: autoclip | zclip, ...}"
        if self.takes_float:
            return "a number"
        return str(self.annotation).replace("typing.", "")


@functools.cache
def hyperparameters(cls: type) -> dict[str, Hyperparameter]:
    """The configurable keyword arguments of ``cls.__init__``, in signature order."""
    hints = typing.get_type_hints(cls.__init__)
    return {
        name: Hyperparameter(name, p.default, hints.get(name, Any))
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", *_NOT_CONFIGURABLE) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _accepts_any_keyword(cls: type) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, str, float))


def _finite(value: Any, source: str, field: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise config_error(source, field, f"got {value}; allowed: a finite number")


def _value(parameter: Hyperparameter | None, value: Any, source: str, field: str) -> Any:
    """Check that ``value`` is plain config data and give it the parameter's numeric type."""
    if isinstance(value, list):
        if not all(_plain(v) for v in value):
            raise config_error(
                source, field, f"wrong type: got {short(value)}; allowed: a list of numbers or strings"
            )
        for v in value:
            _finite(v, source, field)
        if parameter is not None and parameter.float_items:
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return list(value)
    if isinstance(value, dict):
        if parameter is not None and not parameter.takes_policy:
            raise config_error(source, field, wrong_type(value, parameter.describe()))
        return _resolve_policy(value, source, field)
    if not _plain(value):
        raise config_error(
            source, field, f"wrong type: got {short(value)}; allowed: a number, string, boolean, list or null"
        )
    _finite(value, source, field)
    if parameter is not None and parameter.takes_float:
        if isinstance(value, (str, bool)):
            raise config_error(source, field, wrong_type(value, parameter.describe()))
        if isinstance(value, int):
            return float(value)
    return value


def _default(parameter: Hyperparameter) -> tuple[bool, Any]:
    """``(True, value)`` for a default configs hold (plain data, a tuple of it); else ``(False, None)``."""
    default = parameter.default
    if _plain(default):
        return True, float(default) if parameter.takes_float and type(default) is int else default
    if isinstance(default, tuple) and all(_plain(d) for d in default):
        return True, list(default)
    return False, None


def _resolve_policy(spec: dict[str, Any], source: str, field: str) -> dict[str, Any]:
    kind = spec.get("policy")
    if kind not in THRESHOLD_POLICIES:
        raise config_error(
            source, f"{field}.policy", f"got {short(kind)}; allowed: {', '.join(THRESHOLD_POLICIES)}"
        )
    cls = THRESHOLD_POLICIES[kind]
    parameters = hyperparameters(cls)
    resolved: dict[str, Any] = {"policy": kind}
    for key, value in spec.items():
        if key == "policy":
            continue
        if key not in parameters:
            raise config_error(
                source, f"{field}.{key}", f"unknown key; allowed: policy, {', '.join(parameters)}"
            )
        if isinstance(value, (list, dict)):
            raise config_error(source, f"{field}.{key}", f"wrong type: got {short(value)}; allowed: a number")
        resolved[key] = _value(parameters[key], value, source, f"{field}.{key}")
    for key, parameter in parameters.items():
        usable, default = _default(parameter)
        if key not in resolved and usable:
            resolved[key] = default
    try:
        _instantiate(resolved)
    except Exception as exc:  # noqa: BLE001  (any constructor complaint is a config error)
        raise config_error(source, field, f"{type(exc).__name__}: {exc}") from None
    return resolved


def _instantiate(value: Any) -> Any:
    """Config data to constructor arguments: policy specs to policies, lists to tuples."""
    if isinstance(value, dict) and "policy" in value:
        args = {k: v for k, v in value.items() if k != "policy"}
        return THRESHOLD_POLICIES[value["policy"]](**args)
    if isinstance(value, list):
        return tuple(value)
    return value


def build_optimizer(spec: Mapping[str, Any], params: Iterable[Any]) -> torch.optim.Optimizer:
    """Construct the optimizer a resolved spec (or an ``OptimizerConfig``) describes over ``params``."""
    spec = dict(spec.model_dump() if hasattr(spec, "model_dump") else spec)
    cls = optimizer_class(spec.pop("name"))
    wrapped = spec.pop(_WRAPPED_OPTIMIZER, None)
    kwargs = {key: _instantiate(value) for key, value in spec.items()}
    if isinstance(wrapped, dict):
        return cls(build_optimizer(wrapped, params), **kwargs)
    if wrapped is not None:
        kwargs[_WRAPPED_OPTIMIZER] = wrapped
    return cls(params, **kwargs)


def resolve_optimizer(spec: Mapping[str, Any], source: str, field: str = "optimizer") -> dict[str, Any]:
    """The resolved spec (see the module docstring); a ``ConfigError`` names the field at fault."""
    resolved = _resolve(spec, source, field)
    _check_by_construction(resolved, source, field)
    return resolved


def _resolve(spec: Mapping[str, Any], source: str, field: str) -> dict[str, Any]:
    """Keys checked against the signature, values typed, defaults filled: no construction."""
    name = spec.get("name")
    if not isinstance(name, str):
        raise config_error(source, f"{field}.name", f"wrong type: got {short(name)}; allowed: a string")
    try:
        cls = optimizer_class(name)
    except ValueError as exc:
        raise config_error(source, f"{field}.name", str(exc)) from None
    parameters = hyperparameters(cls)
    open_signature = _accepts_any_keyword(cls)
    resolved: dict[str, Any] = {"name": name}
    for key, value in spec.items():
        if key == "name":
            continue
        if not isinstance(key, str) or (key not in parameters and not open_signature):
            allowed = ", ".join(parameters)
            raise config_error(
                source, f"{field}.{key}", f"unknown hyperparameter of {name}; allowed: {allowed}"
            )
        if key == _WRAPPED_OPTIMIZER:
            if not isinstance(value, dict):
                raise config_error(
                    source,
                    f"{field}.{key}",
                    f"wrong type: got {short(value)}; allowed: a mapping with a name",
                )
            resolved[key] = _resolve(value, source, f"{field}.{key}")
            continue
        resolved[key] = _value(parameters.get(key), value, source, f"{field}.{key}")
    missing = [k for k, p in parameters.items() if p.required and k not in resolved]
    if missing:
        raise config_error(source, f"{field}.{missing[0]}", f"missing required hyperparameter of {name}")
    for key, parameter in parameters.items():
        usable, default = _default(parameter)
        if key not in resolved and usable:
            resolved[key] = default
    return resolved


def _dummy() -> list[torch.Tensor]:
    return [torch.zeros(1, requires_grad=True)]


def _check_by_construction(resolved: dict[str, Any], source: str, field: str) -> None:
    """Construct the optimizer once (the wrapped one first); on refusal, name the culprit."""
    wrapped = resolved.get(_WRAPPED_OPTIMIZER)
    if isinstance(wrapped, dict):
        _check_by_construction(wrapped, source, f"{field}.{_WRAPPED_OPTIMIZER}")
    try:
        build_optimizer(resolved, _dummy())
    except Exception as exc:  # noqa: BLE001  (any constructor complaint is a config error)
        raise config_error(source, _culprit(resolved, field), f"{type(exc).__name__}: {exc}") from None


def _culprit(resolved: Mapping[str, Any], field: str) -> str:
    """The hyperparameter whose value makes the constructor fail (else the section itself).

    Runs only after the constructor refused: the required arguments alone, then each other
    hyperparameter with them, until one fails.
    """
    name = resolved["name"]
    required = {k: resolved[k] for k, p in hyperparameters(optimizer_class(name)).items() if p.required}

    def fails(kwargs: dict[str, Any]) -> bool:
        try:
            build_optimizer({"name": name, **kwargs}, _dummy())
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
