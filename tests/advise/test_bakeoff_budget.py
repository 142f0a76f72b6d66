"""The bake-off's studies take turns, and under a budget no trial starts after the deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

import tailclip.advise.bakeoff as bakeoff
from tailclip.advise.bakeoff import CandidateResult, bake_off
from tailclip.advise.candidates import Candidate
from tailclip.advise.plan import make_plan
from tailclip.engine.config import parse_config
from tailclip.engine.store import ResultsStore

CANDIDATES = [
    Candidate("sgd", {"name": "sgd"}, 0.01, 0.3, "test"),
    Candidate("gclip", {"name": "clip_sgd", "clip": "global", "max_norm": 1.0}, 0.01, 0.3, "test", True),
]


class TrialClock:
    """A ``time`` stand-in whose ``perf_counter`` is the number of trials run so far."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def perf_counter(self) -> float:
        return float(len(self.order))


def run(tmp_path: Path, clock: TrialClock, deadline: float | None) -> list[CandidateResult]:
    """The two candidates' bake-off on a tiny quadratic (5 step sizes, 9 steps a run)."""
    config = parse_config(
        {
            "name": "turns",
            "task": {"name": "noisy-quadratic", "options": {"dim": 3, "noise": "gaussian"}},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"steps": 9, "batch_size": 1},
            "output": {"store": str(tmp_path / "runs.sqlite")},
        }
    )
    plan = make_plan(60.0, 9, 1e-4, 2, 1, None, trial_steps=9)
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        return bake_off(
            config,
            CANDIDATES,
            plan,
            store,
            tmp_path / "optuna.sqlite",
            9,
            deadline=deadline,
            on_trial=clock.order.append,
        )


def test_studies_take_turns_one_trial_each(tmp_path: Path) -> None:
    clock = TrialClock()
    results = run(tmp_path, clock, None)
    assert clock.order == ["sgd", "gclip"] * 5
    assert [len(r.trials) for r in results] == [5, 5] and [r.skipped for r in results] == [0, 0]


def test_no_trial_starts_after_the_deadline_and_a_resumed_bake_off_runs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = TrialClock()
    monkeypatch.setattr(bakeoff, "time", clock)
    results = run(tmp_path, clock, 2.5)  # the clock passes 2.5 when the third trial ends
    assert clock.order == ["sgd", "gclip", "sgd"]
    assert [len(r.trials) for r in results] == [2, 1] and [r.skipped for r in results] == [3, 4]
    tried = [t["lr"] for t in results[0].trials]
    assert tried == sorted(CANDIDATES[0].lr_grid(5))[:2]  # each study's own order is kept
    resumed = run(tmp_path, TrialClock(), None)
    assert [len(r.trials) for r in resumed] == [5, 5] and [r.skipped for r in resumed] == [0, 0]
