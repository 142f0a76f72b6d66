"""The Ray sweep backend: each run is a Ray task streaming its results to the driver, the only store writer.

``run_sweep_ray(configs, store_path, workers, address)`` follows the local backend's protocol
(:mod:`tailclip.engine.sweep`): the driver adds the configs as ``pending`` runs (``finished``
ones are skipped), puts this sweep's ``failed`` runs back to ``pending``, then keeps up to
``workers`` runs in flight, each claimed in the store (``BEGIN IMMEDIATE``, so concurrent
sweeps of either backend on one store never run a run twice) before it is submitted, and
finally waits for runs of the sweep that another live process holds.

A run executes as a Ray *streaming generator* task: it calls
:func:`tailclip.engine.runner.run_one` with an in-memory stand-in for the store, runs it on a
thread and yields what the runner writes as it writes it: metric rows (at each of the
runner's log boundaries), artifacts (the file's bytes ride along, so a worker on another node
needs no shared file system for them: the driver copies them beside the store), throttled
progress, and finally ``finished`` (wall time, steps) or ``failed`` (the error). The driver
waits on all in-flight generators with ``ray.wait`` and applies each message to the store as
it arrives; metric rows are ``INSERT OR REPLACE``, so a run redone after a crash never
duplicates a row.

Connection: ``address`` (or the ``RAY_ADDRESS`` environment variable) names an existing
cluster; without either, a local Ray instance is started with ``num_cpus = workers`` (all
CPUs when ``workers`` is None) and no dashboard, and shut down at the end. Each run asks for
``num_cpus=1`` (override with ``task_options``, e.g. ``{"num_gpus": 1}``). The nodes of a
cluster need tailclip installed, and checkpoints (``<store dir>/checkpoints``) resume a run
only on a node that sees that directory.

Ray is the ``ray`` extra: ``pip install "tailclip[ray]"``.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tailclip.engine.config import ExperimentConfig, parse_config
from tailclip.engine.lease import Heartbeat
from tailclip.engine.progress import progress_bar
from tailclip.engine.runner import artifact_dir, checkpoint_path
from tailclip.engine.store import ResultsStore, make_owner
from tailclip.engine.sweep import SweepEvent, SweepResult

__all__ = ["run_sweep_ray"]

_PROGRESS_INTERVAL = 0.5
_MAX_ARTIFACT_BYTES = 256 * 2**20
_WAIT_TIMEOUT = 1.0
_WAIT_INTERVAL = 1.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError('the ray backend needs Ray: pip install "tailclip[ray]"') from None
    return ray


class _StreamingStore:
    """What ``run_one`` writes, turned into messages on a queue (the runner's ``RunStore``)."""

    def __init__(self, path: Path, messages: queue.Queue[tuple[Any, ...]]) -> None:
        self.path = path
        self.messages = messages
        self.ended = False

    def add_runs(self, configs: list[ExperimentConfig]) -> list[str]:
        return [c.run_id for c in configs]

    def log_metrics(self, run_id: str, rows: list[tuple[int, str, float]]) -> None:
        rows = [(int(s), str(k), float(v)) for s, k, v in rows]
        if rows:
            self.messages.put(("metrics", rows))

    def add_artifact(self, run_id: str, kind: str, path: str | Path) -> None:
        file = Path(path)
        data = None
        if file.is_file() and file.stat().st_size <= _MAX_ARTIFACT_BYTES:
            data = file.read_bytes()
        self.messages.put(("artifact", kind, str(file), data))

    def finish(self, run_id: str, wall_time: float, steps: int) -> None:
        self.ended = True
        self.messages.put(("finished", float(wall_time), int(steps)))

    def fail(self, run_id: str, error: str) -> None:
        self.ended = True
        self.messages.put(("failed", str(error)))


def execute_streaming(config_data: dict[str, Any], run_id: str, store_path: str) -> Iterator[tuple[Any, ...]]:
    """Run one config without a store; yield its messages (see the module docstring) as they come.

    Messages: ``("start", host, total_steps)``, ``("metrics", rows)``, ``("artifact", kind,
    path, bytes | None)``, ``("progress", step, total)``, and last ``("finished", wall_time,
    steps)`` or ``("failed", error)``. Checkpoints and artifacts go where the local backend
    puts them (beside ``store_path``).
    """
    from tailclip.engine.runner import run_one

    messages: queue.Queue[tuple[Any, ...]] = queue.Queue()
    try:
        config = parse_config(config_data, source=f"run {run_id}")
    except Exception as exc:  # noqa: BLE001  (a stored config this version cannot read)
        yield ("failed", f"{type(exc).__name__}: {exc}")
        return
    yield ("start", socket.gethostname(), config.train.steps or 0)
    sink = _StreamingStore(Path(store_path), messages)
    last = [0.0]

    def progress(step: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_INTERVAL or step == total:
            last[0] = now
            messages.put(("progress", step, total))

    def target() -> None:
        try:
            run_one(
                config,
                sink,
                progress=progress,
                checkpoint_dir=checkpoint_path(store_path, run_id).parent,
                artifacts_dir=artifact_dir(store_path, run_id).parent,
            )
        except BaseException as exc:  # noqa: BLE001  (run_one reports its own failures through the sink)
            if not sink.ended:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                sink.fail(run_id, text.strip())
        finally:
            messages.put(("end",))

    thread = threading.Thread(target=target, name=f"tailclip-run-{run_id}", daemon=True)
    thread.start()
    while True:
        message = messages.get()
        if message[0] == "end":
            break
        yield message
    thread.join()


class _Flight:
    """One run in flight: its generator and what the driver knows of it."""

    def __init__(self, run_id: str, generator: Any) -> None:
        self.run_id = run_id
        self.generator = generator
        self.started = time.perf_counter()
        self.outcome: str | None = None
        self.host: str | None = None


def _write_artifact(
    store: ResultsStore, run_id: str, kind: str, path: str, data: bytes | None, worker_host: str | None
) -> None:
    """Record an artifact. A file written on another host is copied (its bytes came along) under
    this store's artifact directory and recorded there; on this host it is recorded where it is."""
    if data is None or (worker_host == socket.gethostname() and Path(path).is_file()):
        store.add_artifact(run_id, kind, path)
        return
    target = artifact_dir(store.path, run_id) / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    store.add_artifact(run_id, kind, str(target))


def _apply(
    store: ResultsStore, flight: _Flight, message: tuple[Any, ...], emit: Callable[[SweepEvent], None]
) -> None:
    kind = message[0]
    run_id = flight.run_id
    if kind == "start":
        flight.host = str(message[1])
        emit(SweepEvent("start", run_id, total=int(message[2])))
    elif kind == "metrics":
        store.log_metrics(run_id, message[1])
    elif kind == "artifact":
        _write_artifact(store, run_id, message[1], message[2], message[3], flight.host)
    elif kind == "progress":
        emit(SweepEvent("progress", run_id, step=int(message[1]), total=int(message[2])))
    elif kind == "finished":
        store.finish(run_id, message[1], message[2])
        flight.outcome = "finished"
        emit(SweepEvent("done", run_id, status="finished", seconds=time.perf_counter() - flight.started))
    elif kind == "failed":
        _fail(store, flight, message[1], emit)


def _fail(store: ResultsStore, flight: _Flight, error: str, emit: Callable[[SweepEvent], None]) -> None:
    store.fail(flight.run_id, error)
    flight.outcome = "failed"
    first = error.strip().splitlines()[0] if error.strip() else ""
    emit(SweepEvent("done", flight.run_id, status="failed", seconds=time.perf_counter() - flight.started,
                    error=first))


def _init_ray(ray: Any, workers: int | None, address: str | None) -> bool:
    """Connect to ``address``/``RAY_ADDRESS`` or start a local instance; True if this call started Ray."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": "WARNING", "log_to_driver": True, "configure_logging": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def run_sweep_ray(
    configs: Sequence[ExperimentConfig],
    store_path: str | Path,
    workers: int | None = None,
    address: str | None = None,
    *,
    on_event: Callable[[SweepEvent], None] | None = None,
    task_options: dict[str, Any] | None = None,
    reclaim: bool = False,
) -> SweepResult:
    """Run every config not yet finished in the store at ``store_path`` as Ray tasks.

    ``workers``: runs in flight at once (default: the cluster's CPUs); ``address``: a Ray
    cluster (default ``RAY_ADDRESS``, else a local instance); ``on_event``: receives
    :class:`~tailclip.engine.sweep.SweepEvent` s (start, progress, done) in this process, as
    the local backend's; without it a rich progress bar is shown on a terminal;
    ``task_options``: Ray resources per run (default ``{"num_cpus": 1}``); ``reclaim``: take
    the sweep's running runs over from their owners, live or not. Returns what
    happened to each run, as :func:`tailclip.engine.sweep.run_sweep_local`.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"Invalid workers: {workers!r}; allowed: an integer >= 1 or None")
    ray = _import_ray()
    store = ResultsStore(store_path)
    store_abs = str(Path(store.path).resolve())
    run_ids = list(dict.fromkeys(store.add_runs(configs)))
    result = SweepResult(run_ids=run_ids)
    result.skipped = [r.run_id for r in store.runs(status="finished", run_ids=run_ids)]
    store.requeue_failed(run_ids)
    if reclaim:
        store.expire_leases(run_ids)
    todo = len(run_ids) - len(result.skipped)
    if todo > 0:
        display = None if on_event is not None else _Display(todo)
        emit = on_event if on_event is not None else display.event  # type: ignore[union-attr]
        started_here = _init_ray(ray, workers, address)
        try:
            capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            remote = ray.remote(execute_streaming).options(
                max_retries=0, **({"num_cpus": 1} | dict(task_options or {}))
            )
            if display is not None:
                display.start()
            _drive(ray, remote, store, store_abs, run_ids, capacity, emit)
        finally:
            if display is not None:
                display.stop()
            if started_here:
                ray.shutdown()
    for record in store.runs(run_ids=run_ids):
        if record.run_id in result.skipped:
            continue
        if record.status == "finished":
            result.finished.append(record.run_id)
        elif record.status == "failed":
            lines = (record.error or "").strip().splitlines()
            result.failed[record.run_id] = lines[0] if lines else ""
        elif record.status == "running":
            result.interrupted.append(record.run_id)
    return result


def _drive(
    ray: Any,
    remote: Any,
    store: ResultsStore,
    store_abs: str,
    run_ids: list[str],
    capacity: int,
    emit: Callable[[SweepEvent], None],
) -> None:
    """Claim, submit, and apply streamed messages until every run has ended; the only store writer.

    Runs of the sweep that another live process is training are waited for (and taken over
    when their lease expires), as the local backend does; a heartbeat renews the leases of
    the runs in flight.
    """
    owner = make_owner()
    with Heartbeat(store, owner, store.lease_seconds / 4):
        _drive_claimed(ray, remote, store, store_abs, run_ids, capacity, emit, owner)


def _drive_claimed(
    ray: Any,
    remote: Any,
    store: ResultsStore,
    store_abs: str,
    run_ids: list[str],
    capacity: int,
    emit: Callable[[SweepEvent], None],
    owner: str,
) -> None:
    flights: dict[Any, _Flight] = {}
    exhausted = False
    announced: set[str] = set()
    try:
        while True:
            while not exhausted and len(flights) < capacity:
                record = store.claim(owner, run_ids=run_ids, include_failed=False)
                if record is None:
                    exhausted = True
                    break
                generator = remote.remote(record.config, record.run_id, store_abs)
                flights[generator] = _Flight(record.run_id, generator)
            if not flights:
                elsewhere = store.runs(status="running", run_ids=run_ids)
                if not elsewhere:
                    return
                for record in elsewhere:
                    if record.run_id not in announced:
                        announced.add(record.run_id)
                        emit(SweepEvent("waiting", record.run_id, error=record.holder))
                time.sleep(_WAIT_INTERVAL)
                exhausted = False
                continue
            ready, _ = ray.wait(list(flights), num_returns=1, timeout=_WAIT_TIMEOUT)
            for generator in ready:
                flight = flights[generator]
                try:
                    ref = next(generator)
                except StopIteration:
                    del flights[generator]
                    if flight.outcome is None:
                        _fail(store, flight, "the Ray task ended without a result", emit)
                    continue
                try:
                    message = ray.get(ref)
                except Exception as exc:  # noqa: BLE001  (worker crash, node loss: the run failed)
                    _fail(store, flight, f"{type(exc).__name__}: {exc}", emit)
                    del flights[generator]
                    continue
                _apply(store, flight, message, emit)
    except BaseException:
        # Interrupted driver: stop the remote work; the runs stay 'running' under this
        # process's owner id and a later sweep reclaims them (their checkpoints resume them).
        for generator in flights:
            try:
                ray.cancel(generator, force=True)
            except Exception:  # noqa: BLE001, S110  (best effort while unwinding)
                pass
        raise


class _Display:
    """Rich progress (runs done / total, steps/s of the runs in flight, ETA); silent off a terminal."""

    def __init__(self, total: int) -> None:
        self.progress = progress_bar(Console(stderr=True))
        self.total_task = self.progress.add_task("ray sweep", total=total, rate="")
        self.runs: dict[str, Any] = {}
        self.failed = 0

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def event(self, event: SweepEvent) -> None:
        if event.kind == "start":
            self.runs[event.run_id] = self.progress.add_task(
                f"  {event.run_id[:10]}", total=event.total or None, rate=""
            )
        elif event.kind == "progress" and event.run_id in self.runs:
            task = self.runs[event.run_id]
            self.progress.update(task, completed=event.step, total=event.total)
            speed = next((t.speed for t in self.progress.tasks if t.id == task), None)
            self.progress.update(task, rate=f"{speed:,.0f} steps/s" if speed else "")
        elif event.kind == "waiting" and not self.progress.disable:
            self.progress.console.print(f"waiting for {event.run_id}, {event.error}", soft_wrap=True)
        elif event.kind == "done":
            task = self.runs.pop(event.run_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.failed += event.status == "failed"
            rate = f"{self.failed} failed" if self.failed else ""
            self.progress.update(self.total_task, advance=1, rate=rate)
