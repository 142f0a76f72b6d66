"""Hand-built results stores for the table and report tests: real configs, chosen metric values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tailclip.engine.config import ExperimentConfig, parse_config
from tailclip.engine.store import ResultsStore, make_owner

Series = Mapping[str, tuple[Sequence[int], Sequence[float]]]


def quadratic_config(name: str = "hand", seed: int = 0, **optimizer: Any) -> ExperimentConfig:
    """A valid noisy-quadratic ClipSGD config; ``optimizer`` overrides its hyperparameters."""
    data = {
        "name": name,
        "task": {"name": "noisy-quadratic", "options": {"dim": 2}},
        "optimizer": {"name": "clip_sgd", "lr": 0.1, "clip": "global", "max_norm": 1.0, **optimizer},
        "train": {"steps": 10, "seed": seed},
    }
    return parse_config(data)


def add_run(
    store: ResultsStore,
    config: ExperimentConfig,
    series: Series,
    *,
    status: str = "finished",
    wall_time: float = 1.0,
    steps: int = 10,
    error: str = "RuntimeError: boom",
) -> str:
    """Add ``config`` as a run with the metric ``series`` ({key: (steps, values)}) and ``status``."""
    run_id = store.add_runs([config])[0]
    if status == "pending":
        return run_id
    record = store.claim(make_owner(), run_ids=[run_id])
    assert record is not None and record.run_id == run_id
    store.log_metrics(
        run_id, [(s, key, v) for key, (ss, vs) in series.items() for s, v in zip(ss, vs, strict=True)]
    )
    if status == "finished":
        store.finish(run_id, wall_time, steps)
    elif status == "failed":
        store.fail(run_id, error)
    return run_id
