"""Sweeps: a config's grid points x seeds, each resolved into the config of one run.

See :func:`sweep_points`. Each grid point is validated once (with the first seed); its other
seeds differ only in ``train.seed``, already checked by the ``sweep`` section, so they reuse
that resolution instead of resolving (and constructing the optimizer) again.
"""

from __future__ import annotations

import copy
import itertools
import typing
from collections.abc import Mapping
from typing import Any

from tailclip.engine._config_errors import ConfigError, short
from tailclip.engine.config import ExperimentConfig, SweepConfig, parse_config
from tailclip.engine.identity import config_hash
from tailclip.engine.yaml_loading import set_dotted

__all__ = ["SweepPoint", "expand_sweep", "sweep_points"]


class SweepPoint(typing.NamedTuple):
    """One run of a sweep: its grid assignment (dotted key -> value) and its resolved config."""

    assignment: dict[str, Any]
    config: ExperimentConfig


def _describe_assignment(assignment: Mapping[str, Any], seed: int) -> str:
    parts = [f"{k}={short(v)}" for k, v in assignment.items()]
    return ", ".join([*parts, f"seed={seed}"])


def _with_seed(point: dict[str, Any], seed: int) -> dict[str, Any]:
    data = copy.deepcopy(point)
    if not isinstance(data.get("train"), dict):
        data["train"] = {}
    data["train"]["seed"] = seed
    return data


def _reseeded(config: ExperimentConfig, raw: dict[str, Any], seed: int) -> ExperimentConfig:
    """``config`` with ``train.seed = seed`` (a seed ``SweepConfig`` validated), written as ``raw``."""
    train = config.train.model_copy(update={"seed": seed})
    reseeded = config.model_copy(update={"train": train})
    reseeded._raw = raw
    reseeded._source = config.source
    return reseeded


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
            set_dotted(point, key.split("."), value, source, f"sweep.grid.{key}")
        if labels:
            point["label"] = ", ".join(str(label) for label in labels)
        try:
            first = parse_config(_with_seed(point, seeds[0]), source)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (in sweep point {_describe_assignment(assignment, seeds[0])})"
            ) from None
        for seed in seeds:
            resolved = first if seed == seeds[0] else _reseeded(first, _with_seed(point, seed), seed)
            run_id = config_hash(resolved)
            if run_id not in seen:
                seen.add(run_id)
                points.append(SweepPoint(assignment, resolved))
    return points


def expand_sweep(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One resolved config per grid point x seed (see :func:`sweep_points`)."""
    return [p.config for p in sweep_points(config)]
