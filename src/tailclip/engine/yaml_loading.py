"""Config files: YAML reading, built-in configs by name, and ``--set`` overrides.

:func:`load_config` reads a YAML file (or a built-in config by name, from
:data:`BUILTIN_CONFIG_DIR`), applies ``dotted.key=value`` overrides (values parsed as YAML) and
hands the data to :func:`tailclip.engine.config.parse_config`. YAML is read with a safe loader
that reads ``1e-3`` as a float (YAML 1.2) and refuses a key given twice in one mapping (``lr``
twice, a second ``train:`` section) instead of keeping the last silently. Every problem is a
one-line :class:`~tailclip.engine.config.ConfigError`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tailclip.engine._config_errors import ConfigError, short
from tailclip.engine.config import ExperimentConfig, parse_config

__all__ = [
    "BUILTIN_CONFIG_DIR",
    "apply_overrides",
    "builtin_configs",
    "load_config",
    "load_yaml",
    "resolve_config_path",
    "set_dotted",
]

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
_SECTIONS = ("name", "task", "optimizer", "schedule", "train", "sweep", "monitor", "output")


class _Loader(yaml.SafeLoader):
    """Safe loader: ``1e-3`` is a float (YAML 1.2), not PyYAML's string; a repeated key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short(key)}; allowed: each key once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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


def load_yaml(text: str, source: str) -> Any:
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


def set_dotted(data: dict[str, Any], parts: Sequence[str], value: Any, source: str, key: str) -> None:
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
            raise ConfigError(f"{source}: {short(override)}: not key=value; allowed: dotted.key=value")
        value = load_yaml(text, f"{source} {key}")
        set_dotted(data, parts, value, source, key)
    return data


def load_config(path: str | Path, overrides: Iterable[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or a built-in one by name), apply overrides, validate and resolve it."""
    resolved_path = resolve_config_path(path)
    source = str(path)
    try:
        text = resolved_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    data = load_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: (top level): wrong type: got {short(data)}; allowed: a mapping with the sections "
            + ", ".join(_SECTIONS)
        )
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_config(data, source)
