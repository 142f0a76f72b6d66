"""Shared by the real-task tests: run a config through the engine (runner + store) and read it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailclip.engine.config import ExperimentConfig, parse_config, task_context
from tailclip.engine.grid import sweep_points
from tailclip.engine.runner import run_one
from tailclip.engine.store import ResultsStore
from tailclip.engine.yaml_loading import load_config
from tailclip.problems import TASKS, ModelTask


def config(task: str, options: dict[str, Any], optimizer: dict[str, Any], **train: Any) -> ExperimentConfig:
    """A resolved config of ``task`` with a constant schedule."""
    return parse_config(
        {
            "name": f"test-{task}",
            "task": {"name": task, "options": options},
            "optimizer": optimizer,
            "train": {"checkpoint_every": None, **train},
        }
    )


def make_task(cfg: ExperimentConfig) -> ModelTask:
    """The task of ``cfg``, built as the runner builds it (global RNG seeded with ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    cls = TASKS[cfg.task.name]
    task = cls(cls.Options.model_validate(cfg.task.options), task_context(cfg, torch.device("cpu")))
    assert isinstance(task, ModelTask)
    return task


def run(cfg: ExperimentConfig, tmp_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train ``cfg`` with :func:`run_one` into a fresh store; check the run finished; its metrics."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(tmp_path / "store.sqlite")
    run_id = run_one(cfg, store)
    record = store.run(run_id)
    assert record is not None and record.status == "finished", record
    assert record.steps == cfg.train.steps
    metrics = store.metrics([run_id])[run_id]
    store.close()
    return metrics


def assert_finite_and_improving(
    metrics: dict[str, tuple[np.ndarray, np.ndarray]], eval_keys: list[str], train_loss: bool = True
) -> None:
    """Every logged value is finite; eval/loss at the end is below step 0; with ``train_loss``,
    the mean train loss of the last quarter of the steps is below that of the first quarter."""
    for key, (_, values) in metrics.items():
        assert np.isfinite(values).all(), key
    for key in eval_keys:
        assert f"eval/{key}" in metrics, sorted(metrics)
    steps, loss = metrics["eval/loss"]
    assert steps[0] == 0 and loss[-1] < loss[0], loss
    _, train = metrics["train/loss"]
    if not train_loss:
        return
    k = max(1, len(train) // 4)
    assert train[-k:].mean() < train[:k].mean(), train


def builtin(name: str, overrides: list[str]) -> list[ExperimentConfig]:
    """Every sweep point of the built-in config ``name`` with ``overrides`` applied."""
    return [p.config for p in sweep_points(load_config(name, overrides))]
