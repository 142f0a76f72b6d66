"""Names of configurations: what differs between the configurations of a store.

A configuration (the runs of one ``group_key``, seeds pooled) is named by the dotted config
keys whose value differs between the configurations shown together (``train.seed`` aside):
``optimizer.lr=0.01``, or ``clip_sgd(clip=coord, max_norm=0.5)`` when whole optimizers are
swapped (a named section's keys are compared only among configurations with the same name).
:func:`short_labels` gives the readable names of the report: the method names people use
("GClip", "CClip", "Clip-AdaGrad-Norm (delayed)") with the hyperparameter that varies.
:func:`resolve_baseline` finds the configuration a user names by label, group key, experiment
name or ``key=value`` pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tailclip.engine.statistics import format_float

__all__ = [
    "MAX_LABEL",
    "abbreviate",
    "config_labels",
    "flatten_config",
    "method_name",
    "param_order",
    "resolve_baseline",
    "short_labels",
]


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    if isinstance(value, list | tuple):
        return {prefix: json.dumps(value, sort_keys=True, default=str)}
    return {prefix: value}


def _owner(key: str) -> str:
    """The section a dotted key belongs to: ``optimizer.lr`` -> ``optimizer``; a ``.name`` key
    belongs to the section above the one it names (``optimizer.name`` -> ``""``)."""
    parts = key.split(".")
    if parts[-1] == "name":
        parts = parts[:-1]
    return ".".join(parts[:-1])


def _named_owner(key: str, keys: set[str]) -> str | None:
    """The deepest section above ``key`` with a ``name`` (``task``, ``optimizer``, a wrapped optimizer)."""
    owner = _owner(key)
    while owner:
        if f"{owner}.name" in keys:
            return owner
        owner = owner.rpartition(".")[0]
    return None


def _same(values: Iterable[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) <= 1


def _pool_tag(flat: Mapping[str, Any], owner: str | None) -> str:
    return "" if owner is None else json.dumps(flat.get(f"{owner}.name"), default=str)


PoolKeys = dict[tuple[str | None, str], set[str]]


def _varying_keys(configs: Sequence[Mapping[str, Any]]) -> tuple[list[str], PoolKeys]:
    """Dotted keys whose value differs between ``configs`` (``train.seed`` aside), and per
    (named section, name) the keys that differ among the configs with that name.

    A key of a named section (``optimizer.lr``) is compared only among configs whose section
    has the same name, so swapping whole optimizers does not make every default of every
    optimizer "vary". ``X.name`` keys come first, so configurations sort by name.
    """
    flats = [flatten_config(c) for c in configs]
    keys = {k for flat in flats for k in flat} - {"train.seed", "label"}
    varying: list[str] = []
    per_pool: PoolKeys = {}
    for key in sorted(keys, key=lambda k: (k.rpartition(".")[0] if k.endswith(".name") else k, k)):
        owner = _named_owner(key, keys)
        pools: dict[str, list[Any]] = {}
        for flat in flats:
            pools.setdefault(_pool_tag(flat, owner), []).append(flat.get(key))
        for tag, values in pools.items():
            if not _same(values):
                per_pool.setdefault((owner, tag), set()).add(key)
                if key not in varying:
                    varying.append(key)
    # Hyperparameters read best first; `name` only when it is all that differs.
    return [k for k in varying if k != "name"] or [k for k in varying if k == "name"], per_pool


def _label(flat: Mapping[str, Any], varying: Sequence[str], per_pool: PoolKeys) -> str:
    """``key=value, ...``; a section whose name varies reads ``name(key=value, ...)`` with the
    keys that vary among the configurations of that name."""
    keys = set(flat) | set(varying)
    sections = {k[: -len(".name")] for k in varying if k.endswith(".name")}
    out: list[str] = []
    done: set[str] = set()
    for key in varying:
        named = key.endswith(".name") and key[: -len(".name")] in sections
        section = key[: -len(".name")] if named else _named_owner(key, keys)
        if section in sections:
            if section in done:
                continue
            done.add(section)
            local = per_pool.get((section, _pool_tag(flat, section)), set())
            shown = [k for k in varying if k in local and k in flat]
            inner = ", ".join(f"{k[len(section) + 1:]}={_format_param(flat[k])}" for k in shown)
            head = str(flat.get(f"{section}.name"))
            text = f"{head}({inner})" if inner else head
            out.append(text if "." not in section else f"{section.split('.', 1)[1]}={text}")
        else:
            out.append(f"{key}={_format_param(flat.get(key))}")
    return ", ".join(out)


def _format_param(value: Any) -> str:
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def config_labels(
    configs: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]], list[str]]:
    """``(labels, params, varying)`` of configurations ``{group_key: config}`` shown together.

    ``varying``: the dotted keys that differ (see ``_varying_keys``); ``params[gk]``: the
    configuration's values of those keys; ``labels[gk]``: its name from them (the experiment
    name when nothing varies).
    """
    varying, per_pool = _varying_keys(list(configs.values()))
    labels, params = {}, {}
    for gk, config in configs.items():
        flat = flatten_config(config)
        params[gk] = {k: flat.get(k) for k in varying}
        if varying:
            labels[gk] = _label(flat, varying, per_pool)
        else:
            labels[gk] = str(config.get("name") or gk[:8])
    return labels, params, varying


def param_order(params: Mapping[str, Any], varying: Sequence[str], label: str) -> tuple[Any, ...]:
    """Sort key: configurations ordered by their varying parameters (numbers numerically)."""
    parts: list[tuple[int, Any]] = []
    for key in varying:
        value = params.get(key)
        if value is None:
            parts.append((0, 0))
        elif isinstance(value, bool):
            parts.append((1, int(value)))
        elif isinstance(value, int | float):
            parts.append((2, float(value)))
        else:
            parts.append((3, str(value)))
    return (*parts, label)


def resolve_baseline(
    baseline: str,
    labels: Mapping[str, str],
    configs: Mapping[str, Mapping[str, Any]],
    short: Mapping[str, str] | None = None,
) -> str:
    """The group_key that ``baseline`` names.

    ``baseline`` may be a group_key or a unique prefix of one (>= 4 characters), a label
    exactly as shown in the tables (the store-wide label, or the short label of ``short``),
    a unique config ``name``, or ``key=value[,key=value...]`` over dotted config keys
    (``optimizer.name=adamw,optimizer.lr=1e-3``).
    """
    if baseline in labels:
        return baseline
    matches = [gk for gk, label in labels.items() if label == baseline]
    if not matches and short:
        matches = [gk for gk, label in short.items() if label == baseline]
    if not matches and len(baseline) >= 4:
        matches = [gk for gk in labels if gk.startswith(baseline)]
    if not matches:
        matches = [gk for gk, c in configs.items() if c.get("name") == baseline]
    if not matches and "=" in baseline:
        wanted = {}
        for part in baseline.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"Invalid baseline: {baseline!r}; allowed: key=value[,key=value...]")
            wanted[key.strip()] = value.strip()
        matches = [
            gk for gk, c in configs.items()
            if all(_same_value(flatten_config(c).get(k, _MISSING), v) for k, v in wanted.items())
        ]
    if len(matches) != 1:
        names = sorted(labels.values())
        choices = "; ".join(names[:10]) + ("; ..." if len(names) > 10 else "")
        what = "matches no configuration" if not matches else f"matches {len(matches)} configurations"
        raise ValueError(f"Invalid baseline: {baseline!r} {what}; allowed: a group key, a label ({choices}) "
                         f"or key=value pairs")
    return matches[0]


_MISSING = object()


def _same_value(actual: Any, wanted: str) -> bool:
    if actual is _MISSING:
        return False
    if str(actual) == wanted or (actual is None and wanted.lower() in ("none", "null")):
        return True
    if isinstance(actual, bool):
        return wanted.lower() == str(actual).lower()
    if isinstance(actual, int | float):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-12, abs_tol=0.0)
        except ValueError:
            return False
    return False


# ----------------------------------------------------------------------------- short labels

MAX_LABEL = 40
_PLAIN_NAMES = {
    "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adagrad": "AdaGrad", "rmsprop": "RMSprop",
    "acclip": "ACClip", "delta_gclip": "δ-GClip", "lamb": "LAMB", "lion": "Lion",
}
_CLIPPED_SGD = {None: "SGD", "global": "GClip", "coord": "CClip", "layer": "LClip"}
_ADAPTIVE = {"clip_adam": "Adam", "clip_adagrad": "AdaGrad"}
# Keys the method name already says (name, clip mode, norm and delayed variants).
_NAMED_KEYS = {"optimizer.name", "optimizer.clip", "optimizer.norm", "optimizer.delay", "label"}
_SHORT_KEYS = {"dim": "d", "max_norm": "c", "weight_decay": "wd", "momentum": "mom"}


def method_name(optimizer: Mapping[str, Any]) -> str:
    """The name papers use for an optimizer spec (``{name: clip_sgd, clip: global, ...}``).

    ClipSGD is "SGD", "GClip", "CClip" or "LClip" by clip mode (Zhang et al. 2020); ClipAdam and
    ClipAdaGrad are "Adam", "Adam-Norm", "Clip-Adam-Norm", ... with " (delayed)" for the
    delayed step size (Chezhegov et al. 2025); a noise-injection wrapper is "AGNI (<base>)";
    torch baselines keep their usual capitalisation; anything else its registered name.
    """
    name = str(optimizer.get("name"))
    clip = optimizer.get("clip")
    if name == "clip_sgd":
        return _CLIPPED_SGD.get(clip, f"Clip-SGD ({clip})")
    if name in _ADAPTIVE:
        text = _ADAPTIVE[name] + ("-Norm" if optimizer.get("norm") else "")
        if clip is not None:
            text = "Clip-" + text + ("" if clip == "global" else f" ({clip})")
        return text + (" (delayed)" if optimizer.get("delay") else "")
    if name == "noise_injection":
        base = optimizer.get("base_optimizer")
        return f"AGNI ({method_name(base)})" if isinstance(base, Mapping) else "AGNI"
    return _PLAIN_NAMES.get(name, name)


def _key_name(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return _SHORT_KEYS.get(last, last)


def abbreviate(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,") + "…"


def short_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Readable names (<= 40 characters) of configurations ``{group_key: config}`` shown together.

    A config's explicit ``label`` wins. Otherwise: the method name (:func:`method_name`), then
    the hyperparameters that differ among the configurations of the same method, then the
    other keys that differ between all of them (``GClip, lr 0.3``; ``GClip, alpha 1.3``;
    ``CClip, d 100``). Keys the method name says are not repeated. Longer names are cut
    (:func:`abbreviate`); the full configuration belongs in a tooltip.
    """
    flats = {gk: flatten_config(config) for gk, config in configs.items()}
    methods = {gk: method_name(config.get("optimizer") or {}) for gk, config in configs.items()}
    everywhere, _ = _varying_keys(list(configs.values()))
    outside = [k for k in everywhere if not k.startswith("optimizer.") and k not in _NAMED_KEYS]
    labels = {}
    for gk, flat in flats.items():
        explicit = configs[gk].get("label")
        if explicit:
            labels[gk] = abbreviate(str(explicit))
            continue
        peers = [configs[other] for other in configs if methods[other] == methods[gk]]
        within, _ = _varying_keys(peers)
        keys = [k for k in within if k.startswith("optimizer.") and k not in _NAMED_KEYS] + outside
        parts = [methods[gk]] + [f"{_key_name(k)} {_format_param(flat.get(k))}" for k in keys if k in flat]
        labels[gk] = abbreviate(", ".join(parts))
    return labels
