"""ResultsStore: schema, claiming (threads, processes, dead owners), idempotent metrics, exports."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tailclip.engine.config import ExperimentConfig, parse_config
from tailclip.engine.identity import config_hash, group_key
from tailclip.engine.store import ResultsStore, make_owner, owner_alive


def configs(n: int, name: str = "s") -> list[ExperimentConfig]:
    return [
        parse_config(
            {
                "name": name,
                "task": {"name": "noisy-quadratic", "options": {"dim": 3}},
                "optimizer": {"name": "sgd", "lr": 0.1},
                "train": {"steps": 5, "seed": seed},
            }
        )
        for seed in range(n)
    ]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "sub" / "results.sqlite")


def test_created_with_parents_in_wal_mode(store: ResultsStore) -> None:
    assert store.path.is_file()
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "metrics", "artifacts"} <= tables
    columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert columns == [
        "run_id", "name", "config_json", "group_key", "seed", "status",
        "owner", "started", "ended", "wall_time", "steps", "host", "error", "lease_expires_at",
    ]  # fmt: skip


def test_add_runs_is_idempotent_and_keeps_status(store: ResultsStore) -> None:
    cs = configs(3)
    ids = store.add_runs(cs)
    assert ids == [config_hash(c) for c in cs]
    record = store.runs()[0]
    assert record.status == "pending" and record.group_key == group_key(cs[0]) and record.seed == 0
    assert record.config["optimizer"]["lr"] == 0.1 and record.name == "s"
    store.finish(ids[0], 1.5, 5)
    assert store.add_runs(cs) == ids
    assert [r.status for r in store.runs()] == ["finished", "pending", "pending"]
    assert len(store.runs()) == 3
    assert len({r.group_key for r in store.runs()}) == 1


def test_claim_lifecycle(store: ResultsStore) -> None:
    ids = store.add_runs(configs(3))
    owner = make_owner()
    first = store.claim(owner)
    assert first is not None and first.run_id == ids[0]
    assert first.status == "running" and first.owner == owner and first.host == socket.gethostname()
    assert store.run(ids[0]).status == "running"  # type: ignore[union-attr]
    store.fail(ids[0], "boom")
    # restricted to run_ids; failed runs are claimable unless excluded
    assert store.claim(owner, run_ids=[ids[0]], include_failed=False) is None
    again = store.claim(owner, run_ids=[ids[0]])
    assert again is not None and again.run_id == ids[0] and again.error is None
    store.finish(ids[0], 2.0, 5)
    finished = store.run(ids[0])
    assert (
        finished is not None
        and finished.status == "finished"
        and finished.wall_time == 2.0
        and finished.steps == 5
    )
    assert store.claim(owner, run_ids=[ids[0]]) is None
    assert {store.claim(owner).run_id, store.claim(owner).run_id} == set(ids[1:])  # type: ignore[union-attr]
    assert store.claim(owner) is None


def test_dead_owner_is_claimable_live_or_foreign_owner_is_not(store: ResultsStore) -> None:
    ids = store.add_runs(configs(3))
    for run_id in ids:
        store.claim(make_owner(), run_ids=[run_id])
    conn = sqlite3.connect(store.path)
    host = socket.gethostname()
    conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (f"{host}:{dead_pid()}:x", ids[1]))
    conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", ("elsewhere:1:x", ids[2]))
    conn.commit()
    assert not owner_alive(f"{host}:{dead_pid()}:x")
    assert owner_alive(make_owner()) and owner_alive("elsewhere:1:x")
    claimed = store.claim(make_owner())
    assert claimed is not None and claimed.run_id == ids[1]
    assert store.claim(make_owner()) is None


def test_interrupted_runs_are_claimed_before_pending_ones(store: ResultsStore) -> None:
    ids = store.add_runs(configs(3))
    store.claim(make_owner(), run_ids=[ids[2]])
    conn = sqlite3.connect(store.path)
    conn.execute(
        "UPDATE runs SET owner = ? WHERE run_id = ?", (f"{socket.gethostname()}:{dead_pid()}:x", ids[2])
    )
    conn.commit()
    assert [store.claim(make_owner()).run_id for _ in range(3)] == [ids[2], ids[0], ids[1]]  # type: ignore[union-attr]


def test_requeue_failed(store: ResultsStore) -> None:
    ids = store.add_runs(configs(3))
    for run_id in ids:
        store.claim(make_owner(), run_ids=[run_id])
        store.fail(run_id, "x")
    assert store.requeue_failed(ids[:2]) == 2
    assert [r.status for r in store.runs()] == ["pending", "pending", "failed"]


def test_claim_is_atomic_across_threads(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite"
    ids = ResultsStore(path).add_runs(configs(60))
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        local = ResultsStore(path)
        owner = make_owner()
        while (record := local.claim(owner)) is not None:
            with lock:
                claimed.append(record.run_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


@pytest.mark.slow
def test_claim_is_atomic_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "processes.sqlite"
    ids = ResultsStore(path).add_runs(configs(80))
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from tailclip.engine.store import ResultsStore, make_owner\n"
        "store, owner = ResultsStore(sys.argv[1]), make_owner()\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.01)\n"
        "while (r := store.claim(owner)) is not None:\n"
        "    store.log_metrics(r.run_id, [(0, 'claimed', 1.0)])\n"
        "    print(r.run_id, flush=True)\n"
        "    time.sleep(0.01)\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    go.touch()
    outputs = [p.communicate(timeout=120)[0].split() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    claimed = [run_id for out in outputs for run_id in out]
    assert sorted(claimed) == sorted(ids)
    assert sum(1 for r in ResultsStore(path).runs() if r.status == "running") == len(ids)
    assert sum(1 for out in outputs if out) >= 2  # the work was actually shared


def test_opening_a_store_again_keeps_this_processs_locks_so_no_other_process_deletes_its_wal(
    tmp_path: Path,
) -> None:
    # Closing any descriptor of a file drops all of the process's POSIX locks on it. If opening
    # the store a second time (here: a write-open and a read-only open, as a sweep's worker and a
    # report do) dropped the first connection's lock, the other process's close would think it is
    # the last connection, checkpoint and delete the -wal/-shm under it: lost rows, then "disk I/O
    # error" or "database disk image is malformed".
    path = tmp_path / "s.sqlite"
    (run_id,) = (first := ResultsStore(path)).add_runs(configs(1))
    first.log_metrics(run_id, [(0, "x", 0.0)])
    ResultsStore(path).runs()
    ResultsStore(path, read_only=True).runs()
    other = (
        "import sys\n"
        "from tailclip.engine.store import ResultsStore\n"
        "store = ResultsStore(sys.argv[1])\n"
        "store.log_metrics(sys.argv[2], [(1, 'x', 1.0)])\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", other, str(path), run_id], check=True, timeout=120)
    assert Path(f"{path}-wal").exists()  # this process's connection is still open
    first.log_metrics(run_id, [(2, "x", 2.0)])
    first.close()
    assert ResultsStore(path, read_only=True).metrics()[run_id]["x"][0].tolist() == [0, 1, 2]


def test_a_probe_that_raced_a_writer_reads_the_store_again_through_sqlites_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a -wal file the probe reads with immutable=1 (no locks); a writer that opens,
    # writes and checkpoints meanwhile breaks that promise, so the answer must not be trusted.
    path = tmp_path / "s.sqlite"
    (store := ResultsStore(path)).add_runs(configs(1))
    store.close()
    assert not Path(f"{path}-wal").exists()
    uris: list[str] = []
    connect = sqlite3.connect

    def writer_meanwhile(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        uris.append(str(database))
        if "immutable=1" in str(database):
            time.sleep(0.05)  # past the file system's mtime granularity
            writer = connect(path)
            writer.execute("UPDATE runs SET name = 'renamed'")
            writer.commit()
            writer.close()  # the last connection: checkpoints into the file, deletes the -wal
        return connect(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", writer_meanwhile)
    assert ResultsStore(path, read_only=True).version == 1
    assert ["immutable=1" in uri for uri in uris] == [True, False]


def test_log_metrics_is_idempotent_and_keeps_nan(store: ResultsStore) -> None:
    (run_id,) = store.add_runs(configs(1))
    store.log_metrics(run_id, [(1, "train/loss", 3.0), (2, "train/loss", 2.0), (1, "eval/loss", math.nan)])
    store.log_metrics(run_id, [(2, "train/loss", 1.5), (3, "train/loss", math.inf)])
    series = store.metrics()[run_id]
    steps, values = series["train/loss"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [3.0, 1.5, math.inf]
    assert series["eval/loss"][0].tolist() == [1] and math.isnan(series["eval/loss"][1][0])
    rows = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert rows == 4
    assert store.metrics(keys=["eval/loss"])[run_id].keys() == {"eval/loss"}
    assert store.metrics(run_ids=["nope"]) == {}
    assert store.metric_keys() == ["eval/loss", "train/loss"]


def test_artifacts(store: ResultsStore) -> None:
    (run_id,) = store.add_runs(configs(1))
    store.add_artifact(run_id, "per_run/eval/loss", "/x/a.npy")
    store.add_artifact(run_id, "per_run/eval/loss", "/x/a.npy")
    store.add_artifact(run_id, "checkpoint", Path("/x/c.pt"))
    assert store.artifacts() == [(run_id, "checkpoint", "/x/c.pt"), (run_id, "per_run/eval/loss", "/x/a.npy")]
    assert [a.path for a in store.artifacts(kind="checkpoint")] == ["/x/c.pt"]


def test_export_csv(store: ResultsStore, tmp_path: Path) -> None:
    ids = store.add_runs(configs(2))
    store.log_metrics(ids[0], [(1, "train/loss", 0.5), (2, "train/loss", 0.25)])
    store.log_metrics(ids[1], [(1, "train/loss", math.nan)])
    with store.export_csv(tmp_path / "out" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run_id"], r["seed"], r["step"], r["key"], r["value"]) for r in rows] == [
        (ids[0], "0", "1", "train/loss", "0.5"),
        (ids[0], "0", "2", "train/loss", "0.25"),
        (ids[1], "1", "1", "train/loss", "nan"),
    ]
    with store.export_csv(tmp_path / "runs.csv", table="runs").open() as handle:
        runs = list(csv.DictReader(handle))
    assert [r["run_id"] for r in runs] == ids
    assert runs[0]["config.optimizer.lr"] == "0.1" and runs[1]["config.train.seed"] == "1"
    assert runs[0]["status"] == "pending"
    with pytest.raises(ValueError, match="table"):
        store.export_csv(tmp_path / "x.csv", table="nope")  # type: ignore[arg-type]


def test_export_parquet_without_pyarrow_names_the_package(
    store: ResultsStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install pyarrow"):
        store.export_parquet(tmp_path / "m.parquet")


def test_export_parquet_round_trips_the_csv_table(store: ResultsStore, tmp_path: Path) -> None:
    """Parquet (real pyarrow) holds the same rows and columns as the CSV export."""
    import pyarrow.parquet as pq

    ids = store.add_runs(configs(2))
    store.log_metrics(ids[1], [(3, "eval/loss", 0.125), (4, "eval/loss", float("nan"))])
    store.export_parquet(tmp_path / "m.parquet")
    table = pq.read_table(tmp_path / "m.parquet").to_pydict()
    assert table["run_id"] == [ids[1], ids[1]] and table["step"] == [3, 4]
    assert table["key"] == ["eval/loss", "eval/loss"] and table["value"][0] == 0.125
    assert table["value"][1] is None or math.isnan(table["value"][1])
    store.export_parquet(tmp_path / "r.parquet", table="runs")
    runs = pq.read_table(tmp_path / "r.parquet").to_pydict()
    assert runs["run_id"] == ids
    assert [json.loads(json.dumps(v)) for v in runs["config.train.seed"]] == [0, 1]


def test_runs_filters(store: ResultsStore) -> None:
    a = store.add_runs(configs(2, name="a"))
    b = store.add_runs(configs(1, name="b"))
    store.claim(make_owner(), run_ids=b)
    assert [r.run_id for r in store.runs(name="a")] == a
    assert [r.run_id for r in store.runs(status="running")] == b
    assert store.run("missing") is None
    with pytest.raises(ValueError, match="status"):
        store.runs(status="done")


def test_store_survives_reopen_and_fork(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    (run_id,) = ResultsStore(path).add_runs(configs(1))
    store = ResultsStore(path)
    store.log_metrics(run_id, [(0, "k", 1.0)])
    pid = os.fork()
    if pid == 0:  # the child must open its own connection, not reuse the parent's
        try:
            store.log_metrics(run_id, [(1, "k", 2.0)])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert np.array_equal(store.metrics()[run_id]["k"][1], [1.0, 2.0])
