"""The runs of a built-in experiment in a results store, as the claims' evaluations read them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailclip.engine.config import ExperimentConfig
from tailclip.engine.grid import sweep_points
from tailclip.engine.identity import config_hash
from tailclip.engine.store import ResultsStore
from tailclip.engine.sweep import run_sweep_local
from tailclip.engine.yaml_loading import load_config

__all__ = ["ExperimentRuns", "Point"]


@dataclass(frozen=True)
class Point:
    """One run of an experiment: its sweep assignment, resolved config and run id."""

    assignment: dict[str, Any]
    config: ExperimentConfig
    run_id: str


class ExperimentRuns:
    """The runs of a built-in experiment (with overrides) in a store, and their results."""

    def __init__(self, experiment: str, overrides: Sequence[str], store_path: Path) -> None:
        self.experiment = experiment
        config = load_config(experiment, list(overrides))
        self.points = [Point(p.assignment, p.config, config_hash(p.config)) for p in sweep_points(config)]
        self.store_path = store_path

    def run(self, workers: int) -> None:
        """Train every point not yet finished in the store; a failed run is an error."""
        result = run_sweep_local([p.config for p in self.points], self.store_path, workers=workers)
        if not result.ok:
            failed = {**result.failed, **{r: "interrupted" for r in result.interrupted}}
            run_id, error = next(iter(failed.items()))
            raise RuntimeError(
                f"experiment {self.experiment}: {len(failed)} of {len(self.points)} runs failed; "
                f"first: run {run_id}: {error} (store {self.store_path})"
            )

    @functools.cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.store_path)

    def series(self, point: Point, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a logged metric (e.g. ``train/avg_error/mean``)."""
        found = self.store.metrics(run_ids=[point.run_id], keys=[key]).get(point.run_id, {})
        if key not in found:
            raise KeyError(f"run {point.run_id} of {self.experiment} has no metric {key!r}")
        return found[key]

    def final(self, point: Point, key: str) -> float:
        """The last logged value of a metric."""
        return float(self.series(point, key)[1][-1])

    def per_run(self, point: Point, key: str) -> np.ndarray:
        """The final per-run values of a vectorized metric (the ``per_run/<key>`` artifact)."""
        artifacts = self.store.artifacts(run_id=point.run_id, kind=f"per_run/{key}")
        if not artifacts:
            raise KeyError(f"run {point.run_id} of {self.experiment} has no artifact per_run/{key}")
        return np.load(artifacts[0].path)
