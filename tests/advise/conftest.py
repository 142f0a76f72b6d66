"""Shared advice runs: each known-answer problem is advised once per session.

Seeded, and at a fixed full run length (``trial_steps``), so the plan, and with it the advice,
does not depend on how loaded the machine is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tailclip.advise import Answer, advise
from tailclip.engine.config import parse_config
from tailclip.engine.yaml_loading import load_config

BUDGET_MINUTES = 1.0


def quadratic_config(noise: str, store: Path, **options: Any) -> Any:
    """A 10-dimensional noisy quadratic (condition number 10), plain SGD at lr 0.1, batch 1, 300 steps."""
    return parse_config(
        {
            "name": f"quadratic-{noise}",
            "task": {
                "name": "noisy-quadratic",
                "options": {"dim": 10, "condition_number": 10.0, "noise": noise, **options},
            },
            "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"steps": 300, "batch_size": 1, "seed": 0},
            "output": {"store": str(store)},
        }
    )


def imbalanced_config(store: Path) -> Any:
    """The Kunstner et al. (2024) setting: SGD at lr 3 on ``imbalanced-softmax``, batch 64, 10 epochs."""
    return parse_config(
        {
            "name": "imbalanced",
            "task": {"name": "imbalanced-softmax", "options": {}},
            "optimizer": {"name": "sgd", "lr": 3.0},
            "train": {"steps": 640, "batch_size": 64, "seed": 0},
            "output": {"store": str(store)},
        }
    )


@pytest.fixture(scope="session")
def stable_answer(tmp_path_factory: pytest.TempPathFactory) -> Answer:
    store = tmp_path_factory.mktemp("advise-stable") / "runs.sqlite"
    return advise(
        quadratic_config("stable", store, alpha=1.2), budget_minutes=BUDGET_MINUTES, trial_steps=300
    )


@pytest.fixture(scope="session")
def gaussian_answer(tmp_path_factory: pytest.TempPathFactory) -> Answer:
    store = tmp_path_factory.mktemp("advise-gaussian") / "runs.sqlite"
    return advise(quadratic_config("gaussian", store), budget_minutes=BUDGET_MINUTES, trial_steps=300)


@pytest.fixture(scope="session")
def remark1_answer(tmp_path_factory: pytest.TempPathFactory) -> Answer:
    """The built-in ``synthetic-remark1`` (vectorized: advised through its model twin), full length."""
    store = tmp_path_factory.mktemp("advise-remark1") / "runs.sqlite"
    config = load_config("synthetic-remark1", [f"output.store={store}"])
    return advise(config, budget_minutes=BUDGET_MINUTES, trial_steps=100)


@pytest.fixture(scope="session")
def imbalanced_answer(tmp_path_factory: pytest.TempPathFactory) -> Answer:
    store = tmp_path_factory.mktemp("advise-imbalanced") / "runs.sqlite"
    return advise(imbalanced_config(store), budget_minutes=BUDGET_MINUTES, trial_steps=640)
