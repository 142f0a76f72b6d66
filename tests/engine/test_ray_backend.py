"""The Ray backend: the streamed messages of a run, artifact handling, and a real local Ray
instance (2 CPUs) giving the local backend's results for the same configs."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tailclip.engine.config import parse_config
from tailclip.engine.grid import expand_sweep
from tailclip.engine.ray_backend import _apply, _drive, _Flight, execute_streaming, run_sweep_ray
from tailclip.engine.runner import checkpoint_path, run_one
from tailclip.engine.store import ResultsStore, make_owner
from tailclip.engine.sweep import SweepEvent, run_sweep_local


def sweep_config(**train):
    return parse_config(
        {
            "name": "ray-check",
            "task": {"name": "noisy-quadratic", "options": {"dim": 8, "noise": "student_t", "df": 1.5}},
            "optimizer": {"name": "clip_sgd", "lr": 0.05, "clip": "global", "max_norm": 1.0},
            "train": {"steps": 60, "eval_every": 20, "checkpoint_every": 20, **train},
            "sweep": {"grid": {"optimizer.clip": ["global", "coord"]}, "seeds": [0, 1]},
        }
    )


def comparable(store: ResultsStore) -> dict:
    """Every metric except wall-clock timings, per run."""
    return {
        run_id: {k: v for k, v in series.items() if not k.startswith("time/")}
        for run_id, series in store.metrics().items()
    }


def assert_same_metrics(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for run_id in a:
        assert sorted(a[run_id]) == sorted(b[run_id])
        for key, (steps, values) in a[run_id].items():
            np.testing.assert_array_equal(steps, b[run_id][key][0])
            np.testing.assert_array_equal(values, b[run_id][key][1])


def test_execute_streaming_yields_what_run_one_writes(tmp_path):
    config = expand_sweep(sweep_config())[0]
    reference = ResultsStore(tmp_path / "ref" / "s.sqlite")
    run_one(config, reference)
    store_path = tmp_path / "stream" / "s.sqlite"
    messages = list(execute_streaming(config.model_dump(mode="json"), config.run_id, str(store_path)))
    kinds = [m[0] for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "finished" and kinds.count("finished") == 1
    assert "progress" in kinds and kinds.count("metrics") >= 4  # step 0 eval, then 3 log boundaries (+ evals)
    assert messages[-1][2] == 60
    streamed = ResultsStore(tmp_path / "check.sqlite")
    streamed.add_runs([config])
    for message in messages:
        if message[0] == "metrics":
            streamed.log_metrics(config.run_id, message[1])
    assert_same_metrics(comparable(reference), comparable(streamed))
    assert not checkpoint_path(store_path, config.run_id).exists()  # removed at the end, as run_one does


def test_execute_streaming_reports_failures(tmp_path):
    config = expand_sweep(sweep_config())[0]
    store_path = tmp_path / "s.sqlite"
    bad = checkpoint_path(store_path, config.run_id)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    messages = list(execute_streaming(config.model_dump(mode="json"), config.run_id, str(store_path)))
    assert [m[0] for m in messages] == ["start", "failed"]
    assert "cannot load checkpoint" in messages[-1][1]
    (message,) = list(execute_streaming({"name": "x"}, "abc", str(store_path)))
    assert message[0] == "failed" and "task" in message[1]


def test_artifacts_from_another_host_are_copied_beside_the_store(tmp_path):
    store = ResultsStore(tmp_path / "driver" / "s.sqlite")
    config = expand_sweep(sweep_config())[0]
    store.add_runs([config])
    events: list[SweepEvent] = []
    remote = _Flight(config.run_id, generator=None)
    _apply(store, remote, ("start", "another-node", 60), events.append)
    message = ("artifact", "per_run/eval/loss", "/worker/disk/eval__loss.npy", b"\x93NUMPY")
    _apply(store, remote, message, events.append)
    local_file = tmp_path / "here.npy"
    local_file.write_bytes(b"local")
    local = _Flight(config.run_id, generator=None)
    _apply(store, local, ("start", socket.gethostname(), 60), events.append)
    _apply(store, local, ("artifact", "checkpoint", str(local_file), b"local"), events.append)
    copied = tmp_path / "driver" / "artifacts" / config.run_id / "eval__loss.npy"
    assert copied.read_bytes() == b"\x93NUMPY"
    assert sorted(store.artifacts()) == sorted(
        [(config.run_id, "per_run/eval/loss", str(copied)), (config.run_id, "checkpoint", str(local_file))]
    )
    assert [e.kind for e in events] == ["start", "start"] and events[0].total == 60


def test_driver_waits_for_runs_another_live_sweep_holds(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    config = expand_sweep(sweep_config())[0]
    store.add_runs([config])
    other = make_owner()  # this process: alive
    assert store.claim(other, run_ids=[config.run_id]) is not None
    events: list[SweepEvent] = []
    # Nothing is claimable, so the driver never touches Ray: it only waits.
    driver = threading.Thread(
        target=_drive, args=(None, None, store, str(store.path), [config.run_id], 2, events.append)
    )
    driver.start()
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(e.kind, e.run_id) for e in events] == [("waiting", config.run_id)]
    assert other in events[0].error and driver.is_alive()
    store.finish(config.run_id, 1.0, 60)
    driver.join(timeout=30)
    assert not driver.is_alive() and len(events) == 1


def test_invalid_workers():
    with pytest.raises(ValueError, match=r"^Invalid workers: 0; allowed: an integer >= 1 or None$"):
        run_sweep_ray([], "unused.sqlite", workers=0)


@pytest.mark.slow
def test_ray_sweep_equals_local_sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    configs = expand_sweep(sweep_config(keep_checkpoint=True))
    local = ResultsStore(tmp_path / "local" / "s.sqlite")
    assert len(run_sweep_local(configs, local.path, workers=1).finished) == 4
    ray_store = ResultsStore(tmp_path / "ray" / "s.sqlite")
    # One run cannot start: a corrupt checkpoint. It fails alone; the others finish.
    broken = configs[1].run_id
    corrupt = checkpoint_path(ray_store.path, broken)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"garbage")
    events: list[SweepEvent] = []
    result = run_sweep_ray(configs, ray_store.path, workers=2, on_event=events.append)
    assert sorted(result.finished) == sorted(c.run_id for c in configs if c.run_id != broken)
    assert list(result.failed) == [broken] and "cannot load checkpoint" in result.failed[broken]
    assert ray_store.run(broken).status == "failed"
    done = {e.run_id: e.status for e in events if e.kind == "done"}
    assert done == {c.run_id: ("failed" if c.run_id == broken else "finished") for c in configs}
    assert any(e.kind == "progress" and e.step == 60 for e in events)

    # Redo the failed run once its checkpoint is gone: this sweep runs only that one.
    corrupt.unlink()
    again = run_sweep_ray(configs, ray_store.path, workers=2, on_event=events.append)
    assert again.finished == [broken] and sorted(again.skipped) == sorted(result.finished)

    assert_same_metrics(comparable(local), comparable(ray_store))
    for a, b in zip(local.runs(), ray_store.runs(), strict=True):
        assert (a.run_id, a.steps, a.seed, a.group_key) == (b.run_id, b.steps, b.seed, b.group_key)
        assert a.status == b.status == "finished"

    def relative(store: ResultsStore) -> list[tuple[str, str, str]]:
        root = store.path.resolve().parent
        return sorted((r, k, str(Path(p).relative_to(root))) for r, k, p in store.artifacts())

    assert relative(local) == relative(ray_store) and len(relative(local)) == 4

    # Everything finished: a third sweep does nothing (and needs no Ray instance).
    third = run_sweep_ray(configs, ray_store.path, workers=2)
    assert third.finished == [] and len(third.skipped) == 4
