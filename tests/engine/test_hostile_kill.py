"""Fault suite: ``kill -9`` a 2-worker sweep at random moments, resume, and get the uninterrupted store.

Each seed draws its kill moments (a number of metric rows the store must hold, then up to half
a second more: during claims, training, metric flushes and checkpoint writes alike), kills the
sweep's whole process group twice, then lets a plain ``tailclip sweep`` finish. The resumed
store must hold every run ``finished`` with exactly the metrics (values and row count) of a
sweep never interrupted.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_sweep import _cli, _env, configs_of, experiment, metric_rows, table

from tailclip.engine.store import ResultsStore, StoreError
from tailclip.engine.sweep import run_sweep_local

_KILLS = 2


def _data(store: Path) -> dict:
    return experiment(store, steps=600, checkpoint_every=150, seeds=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    path = tmp_path_factory.mktemp("uninterrupted") / "ref.sqlite"
    result = run_sweep_local(configs_of(_data(path)), path, 1)
    assert result.ok and len(result.finished) == 4
    return ResultsStore(path, read_only=True)


def _rows(store: Path) -> int:
    """Metric rows in the store so far (0 while it is being created)."""
    try:
        return metric_rows(ResultsStore(store, read_only=True))
    except (StoreError, sqlite3.Error):
        return 0


def _kill_at(config_file: Path, store: Path, rows: int, delay: float) -> None:
    """Start a 2-worker ``tailclip sweep``; kill -9 its process group ``delay`` s after the store
    holds ``rows`` metric rows (or after it ended)."""
    process = subprocess.Popen(
        _cli("sweep", str(config_file), "--workers", "2", cwd=config_file.parent), cwd=config_file.parent,
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while process.poll() is None and _rows(store) < rows and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the sweep had already ended: a kill after the end
        pass
    process.wait(timeout=60)
    time.sleep(0.2)  # let the killed workers be reaped


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_kill_9s_then_resume_equal_an_uninterrupted_sweep(
    tmp_path: Path, reference: ResultsStore, seed: int
) -> None:
    path = tmp_path / "killed.sqlite"
    data = _data(path)
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data))
    rng = random.Random(seed)
    total = metric_rows(reference)
    for _ in range(_KILLS):
        _kill_at(config_file, path, rng.randrange(total), rng.uniform(0.0, 0.5))
    resumed = subprocess.run(
        _cli("sweep", str(config_file), cwd=tmp_path), cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    store = ResultsStore(path, read_only=True)
    ids = sorted(c.run_id for c in configs_of(data))
    assert sorted(r.run_id for r in store.runs(status="finished")) == ids
    assert table(store) == table(reference)
    assert metric_rows(store) == metric_rows(reference)
