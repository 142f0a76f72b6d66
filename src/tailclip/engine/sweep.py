"""The local sweep backend: worker processes that claim runs from the store until none is left.

``run_sweep_local(configs, store_path, workers)``:

1. adds every config as a ``pending`` run (existing runs are kept: ``finished`` ones are
   skipped), and puts this sweep's ``failed`` runs back to ``pending`` (they are redone once);
2. starts ``workers`` processes (``spawn``; with ``workers=1`` the loop runs in this process),
   each repeating ``claim() -> run_one()`` until ``claim`` finds nothing, while a
   :class:`~tailclip.engine.lease.Heartbeat` renews the leases of the runs it holds.
   ``claim`` takes a pending run, or a ``running`` one whose lease expired or whose owner
   process provably died (interrupted: it resumes from its checkpoint), inside a
   ``BEGIN IMMEDIATE`` transaction, so any number of workers, from any number of concurrent
   ``tailclip sweep`` processes on one store, run every run exactly once. A run that fails in
   this sweep stays ``failed`` (it is not retried in a loop);
3. waits for runs of the sweep that another live process is training, taking over any whose
   lease expires, so that the sweep returns when every one of its runs has ended: a wait
   lasts at most one lease past the owner's last heartbeat. ``reclaim=True`` (``--reclaim``)
   ends the leases of the sweep's running runs first, taking them over from any owner.

Workers exit when their parent process disappears (checked between steps), leaving their run
``failed`` and resumable. Progress reaches the caller as :class:`SweepEvent` s.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailclip.engine.config import ExperimentConfig, parse_config
from tailclip.engine.lease import Heartbeat
from tailclip.engine.runner import run_one
from tailclip.engine.store import ResultsStore, make_owner

__all__ = ["SweepEvent", "SweepResult", "assignment_label", "run_sweep_local"]

_PROGRESS_INTERVAL = 0.2
_WAIT_INTERVAL = 0.5


@dataclass(frozen=True)
class SweepEvent:
    """Something a worker reports: ``kind`` is ``"start"``, ``"progress"``, ``"done"`` or ``"waiting"``.

    ``step``/``total`` come with ``start`` and ``progress``; ``status`` (``finished`` or
    ``failed``), ``seconds`` and ``error`` (its first line) with ``done``. ``waiting`` says that
    the sweep waits for a run another live process is training (``error`` names the owner).
    """

    kind: str
    run_id: str
    step: int = 0
    total: int = 0
    status: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class SweepResult:
    """What a sweep did: the run ids it covered, and how each ended."""

    run_ids: list[str]
    skipped: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


class _ParentGone(BaseException):
    """Raised in a worker whose sweep process has died (not an ``Exception``: nothing catches it)."""


def assignment_label(assignment: Mapping[str, Any]) -> str:
    """A short label of a grid point: ``key=value, ...``; a whole optimizer as ``name(k=v, ...)``."""
    parts = []
    for key, value in assignment.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
            text = f"{value.get('name', '')}({inner})" if "name" in value else "{" + inner + "}"
        else:
            text = str(value)
        parts.append(text if len(assignment) == 1 else f"{key}={text}")
    return ", ".join(parts) or "base"


def _work(
    store_path: str,
    run_ids: list[str],
    emit: Callable[[SweepEvent], None],
    parent_pid: int | None = None,
) -> None:
    """One worker: claim a run of ``run_ids``, run it, report, repeat until none is claimable."""
    store = ResultsStore(store_path)
    owner = make_owner()

    def check_parent() -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            raise _ParentGone(f"sweep process {parent_pid} is gone")

    with Heartbeat(store, owner, store.lease_seconds / 4):
        _claim_and_run(store, owner, run_ids, emit, check_parent)


def _claim_and_run(
    store: ResultsStore,
    owner: str,
    run_ids: list[str],
    emit: Callable[[SweepEvent], None],
    check_parent: Callable[[], None],
) -> None:
    last = [0.0]
    while True:
        check_parent()
        record = store.claim(owner, run_ids=run_ids, include_failed=False)
        if record is None:
            return
        run_id = record.run_id
        started = time.perf_counter()

        def progress(step: int, total: int, run_id: str = run_id) -> None:
            now = time.perf_counter()
            if now - last[0] >= _PROGRESS_INTERVAL or step == total:
                last[0] = now
                check_parent()
                emit(SweepEvent("progress", run_id, step=step, total=total))

        try:
            config = parse_config(record.config, source=f"run {run_id}")
        except Exception as exc:  # noqa: BLE001  (a stored config this version cannot read)
            store.fail(run_id, f"{type(exc).__name__}: {exc}")
            emit(SweepEvent("done", run_id, status="failed", error=f"{type(exc).__name__}: {exc}"))
            continue
        emit(SweepEvent("start", run_id, total=config.train.steps or 0))
        try:
            run_one(config, store, progress=progress)
        except Exception as exc:  # noqa: BLE001  (run_one recorded it; the sweep goes on)
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            emit(
                SweepEvent(
                    "done", run_id, status="failed", seconds=time.perf_counter() - started, error=error
                )
            )
        else:
            emit(SweepEvent("done", run_id, status="finished", seconds=time.perf_counter() - started))


def _worker_main(store_path: str, run_ids: list[str], events: Any, parent_pid: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        _work(store_path, run_ids, events.put, parent_pid)
    except _ParentGone:
        return


def run_sweep_local(
    configs: Sequence[ExperimentConfig],
    store_path: str | Path,
    workers: int = 1,
    *,
    on_event: Callable[[SweepEvent], None] | None = None,
    reclaim: bool = False,
) -> SweepResult:
    """Run every config not yet finished in the store at ``store_path`` with ``workers`` processes.

    ``on_event`` receives the workers' :class:`SweepEvent` s in this process (for progress
    display); ``reclaim`` takes the sweep's running runs over from their owners, live or not.
    Returns what happened to each run; see the module docstring for the protocol.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Invalid workers: {workers!r}; allowed: an integer >= 1")
    store = ResultsStore(store_path)
    run_ids = list(dict.fromkeys(store.add_runs(configs)))
    result = SweepResult(run_ids=run_ids)
    result.skipped = [r.run_id for r in store.runs(status="finished", run_ids=run_ids)]
    store.requeue_failed(run_ids)
    if reclaim:
        store.expire_leases(run_ids)
    emit = on_event if on_event is not None else (lambda event: None)
    announced: set[str] = set()
    while True:
        records = store.runs(run_ids=run_ids)
        claimable = [r.run_id for r in records if r.status == "pending"] or store.takeable(run_ids)
        if claimable:
            count = max(1, min(workers, len(claimable)))
            if count == 1:
                _work(str(store.path), run_ids, emit)
            else:
                _run_processes(str(store.path), run_ids, count, emit)
            continue
        elsewhere = [r for r in records if r.status == "running"]
        if not elsewhere:
            break
        for record in elsewhere:
            if record.run_id not in announced:
                announced.add(record.run_id)
                emit(SweepEvent("waiting", record.run_id, error=record.holder))
        time.sleep(_WAIT_INTERVAL)
    for record in store.runs(run_ids=run_ids):
        if record.run_id in result.skipped:
            continue
        if record.status == "finished":
            result.finished.append(record.run_id)
        elif record.status == "failed":
            result.failed[record.run_id] = (record.error or "").splitlines()[0] if record.error else ""
        elif record.status == "running":
            result.interrupted.append(record.run_id)
    return result


def _run_processes(
    store_path: str, run_ids: list[str], workers: int, emit: Callable[[SweepEvent], None]
) -> None:
    context = mp.get_context("spawn")
    events = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(target=_worker_main, args=(store_path, run_ids, events, os.getpid(), threads))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        while True:
            try:
                emit(events.get(timeout=0.1))
                continue
            except queue.Empty:
                pass
            if not any(p.is_alive() for p in processes):
                break
        while True:
            try:
                emit(events.get_nowait())
            except queue.Empty:
                break
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        events.close()
