"""Config errors: :class:`ConfigError`, one line naming the file and the field; pydantic's errors so.

Every user error in a config reads ``<file>: <dotted.field>: <what is wrong>; allowed: <...>``.
:func:`from_validation_error` turns the first error of a pydantic ``ValidationError`` into
that line, using the model's own fields to say what is allowed.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "config_error", "from_validation_error", "short", "wrong_type"]

_MAX_REPR = 60


class ConfigError(ValueError):
    """A user error in a config; ``str()`` is one line naming the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters: a user's value quoted in a message."""
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def wrong_type(value: Any, allowed: str) -> str:
    """``wrong type: got <value>; allowed: <allowed>``."""
    return f"wrong type: got {short(value)}; allowed: {allowed}"


def config_error(source: str, field: str, what: str) -> ConfigError:
    """``ConfigError("<source>: <field>: <what>")``."""
    return ConfigError(f"{source}: {field}: {what}")


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


def from_validation_error(
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
        return config_error(source, field, f"unknown key; allowed: {allowed}")
    if kind == "missing":
        return config_error(source, field, "missing required key")
    holder = _model_at(model, loc[:-1])
    annotation = None
    if holder is not None and loc and isinstance(loc[-1], str) and loc[-1] in holder.model_fields:
        annotation = holder.model_fields[loc[-1]].annotation
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ops = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        limit = next(iter(ctx.values()), "?")
        return config_error(source, field, f"{short(given)} is out of range; allowed: {ops[kind]} {limit}")
    if kind == "finite_number":
        return config_error(source, field, f"got {short(given)}; allowed: a finite number")
    if kind == "literal_error":
        return config_error(source, field, f"got {short(given)}; allowed: {ctx.get('expected', '?')}")
    if kind in ("string_too_short", "too_short"):
        return config_error(source, field, f"got {short(given)}; allowed: a non-empty value")
    if kind == "value_error":
        message = str(ctx.get("error", err.get("msg", "")))
        return config_error(source, field, message)
    if (
        kind.endswith("_type")
        or kind.endswith("_parsing")
        or kind in ("int_from_float", "model_attributes_type")
    ):
        allowed = _describe_type(annotation) if annotation is not None else err.get("msg", "").lower()
        if kind in ("model_type", "dict_type", "model_attributes_type"):
            allowed = "a mapping"
        return config_error(source, field, f"wrong type: got {short(given)}; allowed: {allowed}")
    return config_error(source, field, f"{err.get('msg', kind)}; got {short(given)}")
