"""Local sweeps: skip finished runs, redo failed/interrupted ones, concurrency, kill -9."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import tailclip.engine.sweep as sweep_module
from tailclip.engine.config import ExperimentConfig, parse_config
from tailclip.engine.grid import expand_sweep
from tailclip.engine.runner import checkpoint_path
from tailclip.engine.store import ResultsStore, make_owner
from tailclip.engine.sweep import SweepEvent, assignment_label, run_sweep_local


def experiment(store: Path, steps: int = 40, checkpoint_every: int = 10, seeds: int = 2) -> dict[str, Any]:
    return {
        "name": "sw",
        "task": {"name": "noisy-quadratic", "options": {"dim": 4, "df": 1.5}},
        "optimizer": {"name": "clip_sgd", "lr": 0.1},
        "train": {"steps": steps, "eval_every": 10, "checkpoint_every": checkpoint_every},
        "sweep": {"grid": {"optimizer.lr": [0.1, 0.03], "optimizer.clip": ["global", "coord"]},
                  "seeds": list(range(seeds))},
        "output": {"store": str(store)},
    }  # fmt: skip


def configs_of(data: dict[str, Any]) -> list[ExperimentConfig]:
    return expand_sweep(parse_config(data))


def table(store: ResultsStore) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """All metrics but timings, per run."""
    return {
        run_id: {k: (s.tolist(), v.tolist()) for k, (s, v) in series.items() if not k.startswith("time/")}
        for run_id, series in store.metrics().items()
    }


def metric_rows(store: ResultsStore) -> int:
    return (
        sqlite3.connect(store.path)
        .execute("SELECT COUNT(*) FROM metrics WHERE key NOT LIKE 'time/%'")
        .fetchone()[0]
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    """The uninterrupted sweep every other sweep here must reproduce."""
    path = tmp_path_factory.mktemp("reference") / "ref.sqlite"
    result = run_sweep_local(configs_of(experiment(path)), path, 1)
    assert result.ok and len(result.finished) == 8
    return ResultsStore(path)


def test_sweep_runs_all_then_skips_finished(tmp_path: Path, reference: ResultsStore) -> None:
    path = tmp_path / "s.sqlite"
    configs = configs_of(experiment(path))
    events: list[SweepEvent] = []
    result = run_sweep_local(configs, path, 1, on_event=events.append)
    ids = [c.run_id for c in configs]
    assert result.run_ids == ids and sorted(result.finished) == sorted(ids) and not result.skipped
    assert sorted(e.run_id for e in events if e.kind == "done") == sorted(ids)
    assert {(e.step, e.total) for e in events if e.kind == "progress"} >= {(40, 40)}
    store = ResultsStore(path)
    assert table(store) == table(reference)
    ended = {r.run_id: r.ended for r in store.runs()}
    rows = metric_rows(store)
    again: list[SweepEvent] = []
    second = run_sweep_local(configs, path, 1, on_event=again.append)
    assert sorted(second.skipped) == sorted(ids) and not second.finished and not again
    assert {r.run_id: r.ended for r in store.runs()} == ended
    assert metric_rows(store) == rows
    assert all(not checkpoint_path(path, i).exists() for i in ids)


def test_failed_and_interrupted_runs_are_redone(
    tmp_path: Path, reference: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sqlite"
    configs = configs_of(experiment(path))
    ids = [c.run_id for c in configs]
    store = ResultsStore(path)
    store.add_runs(configs)
    # ids[5] was being trained by a process that died (kill -9: status stays 'running')
    store.claim(make_owner(), run_ids=[ids[5]])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE runs SET owner = ? WHERE run_id = ?", (f"{socket.gethostname()}:{dead.pid}:x", ids[5])
    )
    conn.commit()
    # ids[2] crashes at step 25 in this sweep, after its checkpoint at step 20
    real_run_one = sweep_module.run_one
    calls: list[str] = []

    def crashing_run_one(config: ExperimentConfig, store: ResultsStore, *, progress: Any = None) -> str:
        calls.append(config.run_id)

        def progress_with_crash(step: int, total: int) -> None:
            if config.run_id == ids[2] and step == 25:
                raise RuntimeError("worker crashed")
            progress(step, total)

        return real_run_one(config, store, progress=progress_with_crash)

    monkeypatch.setattr(sweep_module, "run_one", crashing_run_one)
    first = run_sweep_local(configs, path, 1)
    assert first.failed == {ids[2]: "RuntimeError: worker crashed"}
    assert sorted(first.finished) == sorted(i for i in ids if i != ids[2])
    assert calls.count(ids[2]) == 1  # a run failing in a sweep is not retried in a loop
    assert calls[0] == ids[5]  # the interrupted run is resumed first
    assert checkpoint_path(path, ids[2]).exists()
    ended = {r.run_id: r.ended for r in store.runs(status="finished")}

    monkeypatch.setattr(sweep_module, "run_one", real_run_one)
    resumed: list[SweepEvent] = []
    second = run_sweep_local(configs, path, 1, on_event=resumed.append)
    assert second.finished == [ids[2]] and sorted(second.skipped) == sorted(i for i in ids if i != ids[2])
    assert min(e.step for e in resumed if e.kind == "progress") > 20  # resumed from the checkpoint
    assert {r.run_id: r.ended for r in store.runs(status="finished") if r.run_id in ended} == ended
    assert table(store) == table(reference)
    assert metric_rows(store) == metric_rows(reference)


def test_assignment_label() -> None:
    assert (
        assignment_label({"optimizer": {"name": "clip_sgd", "lr": 0.1, "clip": "coord"}})
        == "clip_sgd(lr=0.1, clip=coord)"
    )
    assert (
        assignment_label({"optimizer.lr": 0.1, "optimizer.clip": "global"})
        == "optimizer.lr=0.1, optimizer.clip=global"
    )
    assert assignment_label({}) == "base"


def test_invalid_workers() -> None:
    with pytest.raises(ValueError, match="workers"):
        run_sweep_local([], "unused.sqlite", 0)


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tmp_path: Path, reference: ResultsStore) -> None:
    path = tmp_path / "s.sqlite"
    result = run_sweep_local(configs_of(experiment(path)), path, 3)
    assert result.ok and len(result.finished) == 8
    store = ResultsStore(path)
    assert table(store) == table(reference)
    assert len({r.owner for r in store.runs()}) >= 2  # several workers took part


def _cli(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "tailclip.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_concurrent_sweeps_run_every_run_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    data = experiment(path, steps=400, checkpoint_every=100, seeds=3)
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data))
    processes = [
        subprocess.Popen(
            _cli("sweep", str(config_file), cwd=tmp_path), cwd=tmp_path, env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    ids = [c.run_id for c in configs_of(data)]
    ran = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("finished ")]
    assert sorted(ran) == sorted(ids)  # every run exactly once over both processes
    assert all(any(line.startswith("finished ") for line in out.splitlines()) for out, _ in outputs)
    store = ResultsStore(path)
    assert all(r.status == "finished" for r in store.runs()) and len(store.runs()) == len(ids)
    reference_path = tmp_path / "alone.sqlite"
    run_sweep_local(configs_of({**data, "output": {"store": str(reference_path)}}), reference_path, 1)
    assert table(store) == table(ResultsStore(reference_path))
    assert metric_rows(store) == metric_rows(ResultsStore(reference_path))


@pytest.mark.slow
def test_kill_9_midway_then_restart_matches_an_uninterrupted_sweep(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    data = experiment(path, steps=2000, checkpoint_every=400, seeds=1)
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump(data))
    ids = [c.run_id for c in configs_of(data)]
    process = subprocess.Popen(
        _cli("sweep", str(config_file), "--workers", "2", cwd=tmp_path), cwd=tmp_path, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    store = None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if store is None and path.exists():
            store = ResultsStore(path)
        if store is None:
            continue
        finished = store.runs(status="finished")
        running = store.runs(status="running")
        if finished and any(checkpoint_path(path, r.run_id).exists() for r in running):
            break
    else:
        pytest.fail("the sweep never reached a finished run and a checkpointed running one")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.2)  # let the killed workers be reaped by init
    assert store is not None
    before = {r.run_id: r for r in store.runs()}
    assert any(r.status == "running" for r in before.values())
    finished_before = {i: r.ended for i, r in before.items() if r.status == "finished"}
    assert 0 < len(finished_before) < len(ids)

    restart = subprocess.run(
        _cli("sweep", str(config_file), cwd=tmp_path), cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert restart.returncode == 0, restart.stderr
    rerun = [line.split()[1] for line in restart.stdout.splitlines() if line.startswith("finished ")]
    assert sorted(rerun) == sorted(set(ids) - set(finished_before))
    after = {r.run_id: r for r in store.runs()}
    assert all(r.status == "finished" for r in after.values())
    assert {i: after[i].ended for i in finished_before} == finished_before  # finished runs untouched
    reference_path = tmp_path / "uninterrupted.sqlite"
    run_sweep_local(configs_of({**data, "output": {"store": str(reference_path)}}), reference_path, 1)
    reference = ResultsStore(reference_path)
    assert table(store) == table(reference)
    assert metric_rows(store) == metric_rows(reference)
    finals = {i: table(store)[i]["eval/loss"][1][-1] for i in ids}
    assert all(np.isfinite(v) for v in finals.values())
