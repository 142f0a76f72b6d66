"""Run ownership as a lease: a live owner's run is never taken; a stale lease is; --reclaim takes any."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _results import quadratic_config
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.engine.identity import run_config_dict
from tailclip.engine.lease import Heartbeat, make_owner, owner_alive
from tailclip.engine.store import ResultsStore
from tailclip.engine.sweep import SweepEvent, run_sweep_local

_HOLDER = """
import sys, time
from pathlib import Path
from tailclip.engine.lease import Heartbeat, make_owner
from tailclip.engine.store import ResultsStore
path, run_id, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
beat, stop = sys.argv[4] == "1", Path(sys.argv[5])
store, owner = ResultsStore(path, lease_seconds=lease), make_owner()
assert store.claim(owner, run_ids=[run_id]) is not None
print(owner, flush=True)
def wait():
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
if beat:
    with Heartbeat(store, owner, lease / 5):
        wait()
else:
    wait()
"""


class Holder:
    """A real second process that claims ``run_id`` and holds it (heartbeating or not) until stopped."""

    def __init__(self, store_path: Path, run_id: str, lease: float, heartbeat: bool) -> None:
        self.stop_file = store_path.parent / f"stop-{run_id}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(store_path), run_id, str(lease), str(int(heartbeat)),
             str(self.stop_file)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert self.process.stdout is not None
        self.owner = self.process.stdout.readline().strip()
        assert self.owner, "the holder process did not claim the run"

    def stop(self) -> None:
        self.stop_file.touch()
        self.process.wait(timeout=60)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    path = tmp_path / "s.sqlite"
    config = quadratic_config("lease")
    ResultsStore(path).add_runs([config])
    yield path, config


def test_owners_carry_the_boot_id_so_a_reused_pid_or_a_namesake_host_proves_nothing() -> None:
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    boot = make_owner().split(":")[1]
    assert not owner_alive(f"{host}:{boot}:{gone.pid}:x")  # this boot, pid gone: provably dead
    # pid reused after a reboot (another boot id, a pid that runs now) or a namesake host
    # (its pid is not running here): neither proves the owner alive or dead: the lease decides
    assert owner_alive(f"{host}:another-boot:{os.getpid()}:x")
    assert owner_alive(f"{host}:another-boot:{gone.pid}:x")
    assert owner_alive(make_owner())


def test_the_lease_not_the_pid_decides_for_an_owner_of_unknown_liveness(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.sqlite", lease_seconds=30.0)
    config = quadratic_config("lease")
    store.add_runs([config])
    namesake = f"{socket.gethostname()}:another-boot:1:x"
    assert store.claim(namesake) is not None
    assert store.claim(make_owner()) is None and store.takeable() == []
    conn = store._connection()
    conn.execute("UPDATE runs SET lease_expires_at = ? WHERE run_id = ?", (time.time() - 1, config.run_id))
    assert store.takeable() == [config.run_id]
    assert store.claim(make_owner()).run_id == config.run_id  # type: ignore[union-attr]


def test_renew_lease_extends_only_the_owners_running_runs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.sqlite", lease_seconds=100.0)
    configs = [quadratic_config("lease", seed=s) for s in range(3)]
    store.add_runs(configs)
    owner, other = make_owner(), make_owner()
    first = store.claim(owner)
    store.claim(other)
    assert first is not None and first.lease_expires_at is not None
    time.sleep(0.01)
    assert store.renew_lease(owner) == 1
    renewed = store.run(first.run_id)
    assert renewed is not None and renewed.lease_expires_at > first.lease_expires_at  # type: ignore[operator]
    assert store.expire_leases([first.run_id]) == 1
    taken = store.claim(other, run_ids=[first.run_id])
    assert taken is not None and taken.owner == other
    assert store.renew_lease(owner) == 0  # the run is no longer its own


def test_a_live_heartbeating_owners_run_is_never_taken(setup: tuple[Path, object]) -> None:
    path, config = setup
    run_id = config.run_id  # type: ignore[attr-defined]
    holder = Holder(path, run_id, lease=1.0, heartbeat=True)
    events: list[SweepEvent] = []
    sweep = threading.Thread(
        target=run_sweep_local, args=([config], path, 1), kwargs={"on_event": events.append}
    )
    sweep.start()
    try:
        time.sleep(3.5)  # more than three leases: only the heartbeat keeps the run
        assert sweep.is_alive()
        record = ResultsStore(path).run(run_id)
        assert record is not None and record.status == "running" and record.owner == holder.owner
        ResultsStore(path).finish(run_id, 1.0, 10)  # what the owner does when its training ends
        sweep.join(timeout=60)
        assert not sweep.is_alive()
    finally:
        holder.stop()
    assert [e.kind for e in events if e.run_id == run_id] == ["waiting"]
    assert holder.owner in events[0].error and "--reclaim" in events[0].error
    assert ResultsStore(path).run(run_id).owner == holder.owner  # type: ignore[union-attr]


def test_a_stale_lease_of_a_live_process_is_reclaimed_after_its_expiry(setup: tuple[Path, object]) -> None:
    path, config = setup
    run_id = config.run_id  # type: ignore[attr-defined]
    holder = Holder(path, run_id, lease=1.0, heartbeat=False)  # alive, but stopped renewing
    events: list[SweepEvent] = []
    try:
        result = run_sweep_local([config], path, 1, on_event=events.append)  # type: ignore[list-item]
    finally:
        holder.stop()
    assert result.finished == [run_id] and result.ok
    kinds = [e.kind for e in events if e.run_id == run_id]
    assert kinds[0] == "waiting" and "start" in kinds and kinds[-1] == "done"
    record = ResultsStore(path).run(run_id)
    assert record is not None and record.status == "finished" and record.owner != holder.owner


def test_a_frozen_owner_whose_pid_is_alive_loses_its_run_when_the_lease_ends(
    setup: tuple[Path, object],
) -> None:
    path, config = setup
    run_id = config.run_id  # type: ignore[attr-defined]
    holder = Holder(path, run_id, lease=1.0, heartbeat=True)
    os.kill(holder.process.pid, signal.SIGSTOP)  # alive to the pid check, silent to the lease
    try:
        result = run_sweep_local([config], path, 1)  # type: ignore[list-item]
    finally:
        os.kill(holder.process.pid, signal.SIGCONT)
        holder.stop()
    assert result.finished == [run_id]
    assert ResultsStore(path).run(run_id).owner != holder.owner  # type: ignore[union-attr]


def test_sweep_reclaim_takes_a_live_owners_run(setup: tuple[Path, object]) -> None:
    path, config = setup
    run_id = config.run_id  # type: ignore[attr-defined]
    holder = Holder(path, run_id, lease=60.0, heartbeat=True)
    events: list[SweepEvent] = []
    try:
        result = run_sweep_local([config], path, 1, on_event=events.append, reclaim=True)  # type: ignore[list-item]
    finally:
        holder.stop()
    assert result.finished == [run_id] and "waiting" not in [e.kind for e in events]
    assert ResultsStore(path).run(run_id).owner != holder.owner  # type: ignore[union-attr]


def test_cli_run_refuses_a_live_owners_run_in_one_line_and_reclaim_takes_it(
    setup: tuple[Path, object], tmp_path: Path
) -> None:
    path, config = setup
    run_id = config.run_id  # type: ignore[attr-defined]
    data = run_config_dict(config)  # type: ignore[arg-type]
    data["output"] = {"store": str(path)}
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(data))
    holder = Holder(path, run_id, lease=60.0, heartbeat=True)
    try:
        refused = CliRunner().invoke(app, ["run", str(config_file)])
        assert refused.exit_code == 1
        (line,) = refused.stderr.strip().splitlines()
        assert run_id in line and holder.owner in line and "--reclaim" in line
        taken = CliRunner().invoke(app, ["run", str(config_file), "--reclaim"])
        assert taken.exit_code == 0, taken.output
    finally:
        holder.stop()
    record = ResultsStore(path).run(run_id)
    assert record is not None and record.status == "finished" and record.owner != holder.owner


def test_heartbeat_renews_while_it_runs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.sqlite", lease_seconds=0.5)
    store.add_runs([quadratic_config("lease")])
    owner = make_owner()
    claimed = store.claim(owner)
    assert claimed is not None
    with Heartbeat(store, owner, 0.1):
        time.sleep(1.5)
        assert store.takeable() == []
    time.sleep(0.6)
    assert store.takeable() == [claimed.run_id]


def test_a_reclaimed_lease_is_not_renewed_by_its_owners_heartbeat(setup: tuple[Path, object]) -> None:
    # --reclaim ends the lease, then claims; a beat in between must not win the run back, or the
    # sweep waits for the live owner instead of taking its run.
    path, config = setup
    store, owner = ResultsStore(path), make_owner()
    assert store.claim(owner) is not None
    assert store.expire_leases() == 1
    assert store.renew_lease(owner) == 0
    assert store.takeable() == [config.run_id]  # type: ignore[attr-defined]
    claimed = store.claim(make_owner())
    assert claimed is not None and claimed.owner != owner
