"""The results store: runs, their metrics and artifacts in one SQLite file.

Schema (created on first use, parent directories too; versioned, see
:mod:`tailclip.engine._schema`)::

    runs(run_id TEXT PRIMARY KEY,    -- config_hash of the resolved run config
         name, config_json,          -- experiment name, canonical JSON of the run config
         group_key,                  -- hash of the config without train.seed
         seed, status,               -- 'pending' | 'running' | 'finished' | 'failed'
         owner, started, ended, wall_time, steps, host, error,
         lease_expires_at)           -- until when ``owner`` holds a running run
    metrics(run_id, step, key, value, PRIMARY KEY(run_id, step, key))
    artifacts(run_id, kind, path, PRIMARY KEY(run_id, kind, path))

Opening: ``ResultsStore(path)`` opens for writing: it creates a new store, or upgrades an
older one; ``ResultsStore(path, read_only=True)`` (reports, tables, exports) opens with
SQLite's ``mode=ro``: no schema, no journal-mode switch, nothing written. Both refuse a file
that is not a tailclip store (:class:`StoreError`, one line) and leave it byte-identical.

Concurrency: the database runs in WAL mode (readers never block the writer) with a busy
timeout; every write is one transaction begun with ``BEGIN IMMEDIATE``, which takes the write
lock up front, so :meth:`ResultsStore.claim`'s select-then-update cannot interleave with
another process's. Metrics are written with ``INSERT OR REPLACE``: a resumed run that logs a
step again overwrites it, so there are never duplicate rows.

Ownership is a lease (:mod:`tailclip.engine.lease`): :meth:`ResultsStore.claim` gives the
claimer the run until ``now + lease_seconds``; the owner renews it while it trains
(:meth:`ResultsStore.renew_lease`, from a :class:`~tailclip.engine.lease.Heartbeat`). A
``running`` run whose lease expired, or whose owner is provably dead (a ``kill -9`` on this
machine), is *interrupted* and can be claimed again; :meth:`ResultsStore.expire_leases`
(``--reclaim``) ends leases explicitly.

A ``ResultsStore`` is cheap to create; it opens one connection per thread and per process, so
one object may be shared by threads, and survives a fork.

Length (over ~500 lines): one idea, the results store's SQL; the schema marker and the lease
thread are already apart (``_schema.py``, ``lease.py``); what remains is one table set's queries.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from tailclip.engine._schema import SCHEMA_VERSION, StoreError, create_or_upgrade, probe_version
from tailclip.engine.lease import LEASE_SECONDS, make_owner, owner_alive, owner_dead

if TYPE_CHECKING:
    from tailclip.engine.config import ExperimentConfig

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Artifact",
    "ResultsStore",
    "RunRecord",
    "StoreError",
    "make_owner",
    "owner_alive",
]

STATUSES = ("pending", "running", "finished", "failed")

@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``; :attr:`config` is the parsed ``config_json``."""

    run_id: str
    name: str
    config_json: str
    group_key: str
    seed: int
    status: str
    owner: str | None
    started: float | None
    ended: float | None
    wall_time: float | None
    steps: int | None
    host: str | None
    error: str | None
    lease_expires_at: float | None = None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def holder(self) -> str:
        """Who holds this run, and until when: ``running in <owner> (lease until HH:MM:SS ...)``."""
        if self.lease_expires_at is None:
            return f"running in {self.owner}"
        until = time.strftime("%H:%M:%S", time.localtime(self.lease_expires_at))
        return f"running in {self.owner} (lease until {until} unless renewed; --reclaim takes it over)"


class Artifact(NamedTuple):
    """One row of ``artifacts``: a file a run produced (``kind`` says what, e.g. ``per_run/eval/loss``)."""

    run_id: str
    kind: str
    path: str


_RUN_COLUMNS = ", ".join(f.name for f in fields(RunRecord))
_V0_RUN_COLUMNS = _RUN_COLUMNS.replace("lease_expires_at", "NULL")

# A 'running' run another claimer may take (? = now).
_TAKEABLE = "(status = 'running' AND (owner_dead(owner) OR lease_expires_at < ?))"


def _ids_json(run_ids: Iterable[str] | None) -> str | None:
    return None if run_ids is None else json.dumps(list(run_ids))


class ResultsStore:
    """The SQLite results store at ``path`` (see the module docstring for schema and concurrency).

    ``read_only=True`` opens an existing store without writing to it; :attr:`version` is the
    store version found (older ones are read as they are, see :mod:`tailclip.engine._schema`).
    ``lease_seconds`` is how long a claim or a renewal holds a run.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 60.0,
        read_only: bool = False,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"Invalid lease_seconds: {lease_seconds!r}; allowed: a number > 0")
        self.path = Path(path)
        self.timeout = float(timeout)
        self.read_only = read_only
        self.lease_seconds = float(lease_seconds)
        self._local = threading.local()
        if read_only:
            if not self.path.is_file():
                problem = "is not a file" if self.path.exists() else "does not exist"
                raise StoreError(
                    f"Invalid store: {str(self.path)!r} {problem}; allowed: the path of a results store"
                )
            version = probe_version(self.path)
            if version is None:
                raise StoreError(
                    f"Invalid store: {str(self.path)!r} is empty (no tables); "
                    "allowed: a results store written by tailclip run/sweep"
                )
            self.version = version
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create_schema()
            self.version = SCHEMA_VERSION
        self._run_columns = _RUN_COLUMNS if self.version >= 1 else _V0_RUN_COLUMNS

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @property
    def version_note(self) -> str | None:
        """One line saying this store is of an older version (read as it is), else ``None``."""
        if self.version == SCHEMA_VERSION:
            return None
        return (
            f"{self.path} is a version-{self.version} store (this tailclip writes version "
            f"{SCHEMA_VERSION}): read as it is; the next run or sweep on it upgrades it"
        )

    # ------------------------------------------------------------------ connections

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if self.read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.create_function("owner_dead", 1, owner_dead)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (a later call reopens one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its start (BEGIN IMMEDIATE)."""
        if self.read_only:
            raise StoreError(f"Invalid write: {self} was opened read-only; allowed: reads")
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _create_schema(self) -> None:
        """Check the file is a tailclip store (or empty) before anything is written, then
        switch to WAL and create or upgrade the schema."""
        probe_version(self.path)
        conn = self._connection()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with self._transaction() as c:
            create_or_upgrade(c, self.path, self.lease_seconds)

    # ------------------------------------------------------------------ runs

    def add_runs(self, configs: Iterable[ExperimentConfig]) -> list[str]:
        """Insert a ``pending`` run for each config not yet in the store; return all their run ids.

        Existing runs (any status) are left untouched. Ids are returned in the order given.
        """
        from tailclip.engine.identity import config_hash, group_key, run_config_dict

        rows = []
        for config in configs:
            config_json = json.dumps(run_config_dict(config), sort_keys=True, separators=(",", ":"))
            rows.append((config_hash(config), config.name, config_json, group_key(config), config.train.seed))
        with self._transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO runs(run_id, name, config_json, group_key, seed, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                rows,
            )
        return [row[0] for row in rows]

    def claim(
        self, owner: str, *, run_ids: Sequence[str] | None = None, include_failed: bool = True
    ) -> RunRecord | None:
        """Atomically take one run to work on; ``None`` when there is none.

        Claimable: ``pending`` runs, ``failed`` ones (unless ``include_failed=False``) and
        ``running`` ones whose lease expired or whose owner is provably dead (interrupted),
        those first (they usually have a checkpoint), then in insertion order. ``run_ids``
        restricts the choice. The run becomes ``running`` with ``owner``, this host,
        ``started`` = now and a lease until now + :attr:`lease_seconds`, in one
        ``BEGIN IMMEDIATE`` transaction, so concurrent claimers never get the same run.
        """
        ids = _ids_json(run_ids)
        with self._transaction() as c:
            now = time.time()
            row = c.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE "
                f"(status = 'pending' OR (status = 'failed' AND ?) OR {_TAKEABLE}) "
                "AND (? IS NULL OR run_id IN (SELECT value FROM json_each(?))) "
                "ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'failed' THEN 1 ELSE 2 END, rowid LIMIT 1",
                (int(include_failed), now, ids, ids),
            ).fetchone()
            if row is None:
                return None
            host = socket.gethostname()
            lease = now + self.lease_seconds
            c.execute(
                "UPDATE runs SET status = 'running', owner = ?, host = ?, started = ?, "
                "ended = NULL, error = NULL, lease_expires_at = ? "
                "WHERE run_id = ?",
                (owner, host, now, lease, row[0]),
            )
        record = RunRecord(*row)
        return replace(
            record, status="running", owner=owner, host=host, started=now, ended=None, error=None,
            lease_expires_at=lease,
        )  # fmt: skip

    def renew_lease(self, owner: str) -> int:
        """Extend the lease of every ``running`` run ``owner`` holds to now + :attr:`lease_seconds`.

        Returns how many runs it renewed. A lease ended by :meth:`expire_leases` is not
        renewed: the run stays takeable until a claimer takes it, however often its owner
        beats (renewing it would make ``--reclaim`` lose to a live heartbeat that beats
        between the expiry and the claim, and wait for the owner instead).
        """
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE owner = ? AND status = 'running' "
                "AND lease_expires_at IS NOT 0",
                (time.time() + self.lease_seconds, owner),
            )
            return cursor.rowcount

    def expire_leases(self, run_ids: Sequence[str] | None = None) -> int:
        """End the lease of every ``running`` run (of ``run_ids``, or all), so that the next
        :meth:`claim` takes it over even from a live owner (``--reclaim``); return how many.

        An ended lease (``lease_expires_at = 0``) is never renewed, see :meth:`renew_lease`."""
        ids = _ids_json(run_ids)
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE runs SET lease_expires_at = 0 WHERE status = 'running' "
                "AND (? IS NULL OR run_id IN (SELECT value FROM json_each(?)))",
                (ids, ids),
            )
            return cursor.rowcount

    def takeable(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """Ids of the runs (of ``run_ids``, or all) a :meth:`claim` now could take from their
        owner: ``running`` with an expired lease or a provably dead owner."""
        ids = _ids_json(run_ids)
        rows = (
            self._connection()
            .execute(
                f"SELECT run_id FROM runs WHERE {_TAKEABLE} "
                "AND (? IS NULL OR run_id IN (SELECT value FROM json_each(?))) ORDER BY rowid",
                (time.time(), ids, ids),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    def requeue_failed(self, run_ids: Sequence[str] | None = None) -> int:
        """Set ``failed`` runs (of ``run_ids``, or all) back to ``pending``; return how many."""
        ids = _ids_json(run_ids)
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE runs SET status = 'pending' WHERE status = 'failed' "
                "AND (? IS NULL OR run_id IN (SELECT value FROM json_each(?)))",
                (ids, ids),
            )
            return cursor.rowcount

    def finish(self, run_id: str, wall_time: float, steps: int) -> None:
        """Mark a run ``finished`` after ``steps`` steps and ``wall_time`` seconds of training."""
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET status = 'finished', ended = ?, wall_time = ?, steps = ?, error = NULL "
                "WHERE run_id = ?",
                (time.time(), float(wall_time), int(steps), run_id),
            )

    def fail(self, run_id: str, error: str) -> None:
        """Mark a run ``failed`` with an error text; a later sweep redoes it (from its checkpoint)."""
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET status = 'failed', ended = ?, error = ? WHERE run_id = ?",
                (time.time(), str(error), run_id),
            )

    def runs(
        self,
        status: str | None = None,
        name: str | None = None,
        *,
        run_ids: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Runs in insertion order, optionally only those with ``status``, ``name`` or in ``run_ids``."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"Invalid status: {status!r}; allowed: {', '.join(STATUSES)} or None")
        ids = _ids_json(run_ids)
        rows = (
            self._connection()
            .execute(
                f"SELECT {self._run_columns} FROM runs "
                "WHERE (? IS NULL OR status = ?) AND (? IS NULL OR name = ?) "
                "AND (? IS NULL OR run_id IN (SELECT value FROM json_each(?))) ORDER BY rowid",
                (status, status, name, name, ids, ids),
            )
            .fetchall()
        )
        return [RunRecord(*row) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, or ``None``."""
        found = self.runs(run_ids=[run_id])
        return found[0] if found else None

    # ------------------------------------------------------------------ metrics and artifacts

    def log_metrics(self, run_id: str, rows: Iterable[tuple[int, str, float]]) -> None:
        """Write ``(step, key, value)`` rows of a run; a repeated ``(step, key)`` is overwritten.

        NaN is stored as NULL (SQLite has no NaN) and read back as NaN.
        """
        data = []
        for step, key, value in rows:
            value = float(value)
            data.append((run_id, int(step), str(key), None if math.isnan(value) else value))
        if not data:
            return
        with self._transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO metrics(run_id, step, key, value) VALUES (?, ?, ?, ?)", data
            )

    def metrics(
        self, run_ids: Sequence[str] | None = None, keys: Sequence[str] | None = None
    ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``{run_id: {key: (steps, values)}}``, steps ascending (int64), values float64.

        Runs and keys ascending; one read transaction (a consistent snapshot). Read one series
        at a time, ``(step, value)`` rows in the primary key's order straight into a numpy
        record array: no sort of the whole table, and no per-row ``run_id``/``key`` strings,
        which were most of the cost of one big ``ORDER BY run_id, key, step`` query.
        """
        conn = self._connection()
        wanted = None if keys is None else set(keys)
        own_snapshot = not conn.in_transaction
        if own_snapshot:
            conn.execute("BEGIN")
        try:
            found: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
            for run_id in _metric_run_ids(conn, run_ids):
                series = {}
                for (key,) in conn.execute(
                    "SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key", (run_id,)
                ).fetchall():
                    if wanted is None or key in wanted:
                        series[key] = _series(conn, run_id, key)
                if series:
                    found[run_id] = series
            return found
        finally:
            if own_snapshot:
                conn.execute("COMMIT")

    def metric_keys(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """The distinct metric keys (of ``run_ids``, or all runs), sorted."""
        ids = _ids_json(run_ids)
        rows = (
            self._connection()
            .execute(
                "SELECT DISTINCT key FROM metrics "
                "WHERE (? IS NULL OR run_id IN (SELECT value FROM json_each(?))) "
                "ORDER BY key",
                (ids, ids),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    def add_artifact(self, run_id: str, kind: str, path: str | Path) -> None:
        """Record a file a run produced (idempotent)."""
        with self._transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO artifacts(run_id, kind, path) VALUES (?, ?, ?)",
                (run_id, kind, str(path)),
            )

    def artifacts(self, run_id: str | None = None, kind: str | None = None) -> list[Artifact]:
        """Recorded artifacts, optionally of one run and/or one kind."""
        rows = (
            self._connection()
            .execute(
                "SELECT run_id, kind, path FROM artifacts "
                "WHERE (? IS NULL OR run_id = ?) AND (? IS NULL OR kind = ?) "
                "ORDER BY run_id, kind, path",
                (run_id, run_id, kind, kind),
            )
            .fetchall()
        )
        return [Artifact(*row) for row in rows]

    # ------------------------------------------------------------------ export

    def _table(self, table: Literal["metrics", "runs"]) -> tuple[list[str], list[tuple[Any, ...]]]:
        conn = self._connection()
        if table == "metrics":
            header = ["run_id", "name", "group_key", "seed", "status", "step", "key", "value"]
            rows = conn.execute(
                "SELECT m.run_id, r.name, r.group_key, r.seed, r.status, m.step, m.key, m.value "
                "FROM metrics m LEFT JOIN runs r USING (run_id) ORDER BY r.rowid, m.key, m.step"
            ).fetchall()
            return header, [(*row[:-1], math.nan if row[-1] is None else row[-1]) for row in rows]
        if table == "runs":
            records = self.runs()
            flat = [_flatten(r.config) for r in records]
            config_keys = sorted({k for f in flat for k in f})
            base = [f.name for f in fields(RunRecord) if f.name != "config_json"]
            header = base + [f"config.{k}" for k in config_keys]
            rows = [
                (*(getattr(r, k) for k in base), *(f.get(k) for k in config_keys))
                for r, f in zip(records, flat)
            ]
            return header, rows
        raise ValueError(f"Invalid table: {table!r}; allowed: 'metrics' or 'runs'")

    def export_csv(self, path: str | Path, table: Literal["metrics", "runs"] = "metrics") -> Path:
        """Write a table as CSV: ``metrics`` in long form (one row per run, step, key, with the
        run's name, group_key, seed, status) or ``runs`` (one row per run, config flattened to
        ``config.<dotted.key>`` columns). Returns the path."""
        header, rows = self._table(table)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    def export_parquet(self, path: str | Path, table: Literal["metrics", "runs"] = "metrics") -> Path:
        """Write a table (as :meth:`export_csv`) as Parquet; needs ``pyarrow``."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("export_parquet needs pyarrow: pip install pyarrow") from None
        header, rows = self._table(table)
        columns = {name: _column([row[i] for row in rows]) for i, name in enumerate(header)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), str(path))
        return path


_SERIES_ROW = np.dtype([("step", np.int64), ("value", np.float64)])


def _metric_run_ids(conn: sqlite3.Connection, run_ids: Sequence[str] | None) -> list[str]:
    """The run ids to read metrics of, ascending: ``run_ids``, or every run with a metric row.

    Every run is found by one primary-key seek per run (``min(run_id) > previous``) instead
    of a ``DISTINCT`` over all metric rows.
    """
    if run_ids is not None:
        return sorted(set(run_ids))
    found: list[str] = []
    row = conn.execute("SELECT min(run_id) FROM metrics").fetchone()
    while row[0] is not None:
        found.append(row[0])
        row = conn.execute("SELECT min(run_id) FROM metrics WHERE run_id > ?", (row[0],)).fetchone()
    return found


def _series(conn: sqlite3.Connection, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One metric's ``(steps, values)``; a NULL value (a logged NaN) reads as NaN."""
    rows = conn.execute(
        "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step", (run_id, key)
    ).fetchall()
    table = np.array(rows, dtype=_SERIES_ROW)
    return np.ascontiguousarray(table["step"]), np.ascontiguousarray(table["value"])


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _column(values: list[Any]) -> list[Any]:
    """One Parquet column: lists/dicts as JSON, and strings if the values mix kinds."""
    values = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
    kinds = {
        "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else type(v).__name__
        for v in values
        if v is not None
    }
    if len(kinds) > 1:
        return [None if v is None else str(v) for v in values]
    return values
