"""The results store's schema, how a tailclip store is recognised, and its version upgrades.

A tailclip store is an SQLite file whose header carries ``PRAGMA application_id`` =
:data:`APPLICATION_ID` and ``PRAGMA user_version`` = its schema version. Versions:

* 0: stores written before the marker existed: no application id, but tailclip's three
  tables (``runs``, ``metrics``, ``artifacts``). Readable as they are (a run's lease reads as
  NULL); the next write-open upgrades them.
* 1: adds ``runs.lease_expires_at`` (run ownership is a lease, see :mod:`tailclip.engine.lease`)
  and the header marker.

Anything else (not SQLite, another application's database, a store of a newer tailclip) is
refused with a :class:`StoreError` before a byte of it is written.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "StoreError",
    "create_or_upgrade",
    "found_version",
    "probe_version",
]

APPLICATION_ID = 0x74436C70  # "tClp"
SCHEMA_VERSION = 1

_TABLES = (
    """CREATE TABLE runs(
        run_id TEXT PRIMARY KEY,
        name TEXT,
        config_json TEXT,
        group_key TEXT,
        seed INTEGER,
        status TEXT NOT NULL CHECK(status IN ('pending','running','finished','failed')),
        owner TEXT,
        started REAL,
        ended REAL,
        wall_time REAL,
        steps INTEGER,
        host TEXT,
        error TEXT,
        lease_expires_at REAL)""",
    """CREATE TABLE metrics(
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        key TEXT NOT NULL,
        value REAL,
        PRIMARY KEY(run_id, step, key))""",
    """CREATE TABLE artifacts(
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY(run_id, kind, path))""",
    "CREATE INDEX runs_status ON runs(status)",
    "CREATE INDEX runs_group ON runs(group_key)",
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100  # SQLite's database header
_V0_RUN_COLUMNS = {
    "run_id", "name", "config_json", "group_key", "seed", "status", "owner",
    "started", "ended", "wall_time", "steps", "host", "error",
}  # fmt: skip


class StoreError(ValueError):
    """A file that is not a results store this tailclip can open (the message is one line)."""


def found_version(conn: sqlite3.Connection, path: object) -> int | None:
    """The schema version of the database behind ``conn``: ``None`` when it is empty (new).

    Only reads. Raises :class:`StoreError` for a file that is not SQLite, another
    application's database, or a store newer than :data:`SCHEMA_VERSION`.
    """
    allowed = "allowed: a results store written by tailclip run/sweep"
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        run_columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"Invalid store: {str(path)!r} is not a tailclip results store ({exc}); {allowed}"
        ) from None
    if application_id == 0 and version == 0 and not tables:
        return None
    ours = application_id == APPLICATION_ID or (application_id == 0 and version == 0)
    if not ours or not {"runs", "metrics", "artifacts"} <= tables or not _V0_RUN_COLUMNS <= run_columns:
        raise StoreError(
            f"Invalid store: {str(path)!r} is an SQLite database of another application "
            f"(tables: {', '.join(sorted(tables)) or 'none'}); {allowed}"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"Invalid store: {str(path)!r} has store version {version}, newer than this tailclip's "
            f"{SCHEMA_VERSION}; allowed: versions 0 to {SCHEMA_VERSION} (upgrade tailclip to open it)"
        )
    return version


def _header(path: Path) -> bytes | None:
    """The first 100 bytes of the file at ``path`` (fewer for a shorter file; ``None``: missing).

    Read through a descriptor this process already has on the file when there is one, never
    opening and closing a new one beside it: closing *any* descriptor of a file drops every
    POSIX lock the process holds on it, including those of its open SQLite connections. A WAL
    connection that lost its lock lets another process's connection believe it is the last one
    and delete the ``-wal``/``-shm`` files under it: lost writes, then ``database disk image is
    malformed`` (SQLite's "How To Corrupt An SQLite Database File", section 2.2). Without such a
    descriptor the process holds no lock on the file (SQLite keeps a file open while it holds
    locks on it), so a fresh one is safe to close.
    """
    try:
        target = path.stat()
    except FileNotFoundError:
        return None
    for fd in _open_descriptors():
        try:
            found = os.fstat(fd)
            if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                return os.pread(fd, _HEADER_SIZE, 0)
        except OSError:
            continue
    try:
        with path.open("rb") as handle:
            return handle.read(_HEADER_SIZE)
    except FileNotFoundError:
        return None


def _open_descriptors() -> list[int]:
    """This process's open file descriptors (none where the platform does not list them)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(listing)]
        except (OSError, ValueError):
            continue
    return []


def probe_version(path: Path) -> int | None:
    """:func:`found_version` of the file at ``path`` (``None``: missing or empty), touching nothing.

    A file without SQLite's magic header is refused before SQLite sees it. Without a ``-wal``
    file beside it, the file is first read as the whole database with ``immutable=1``: no
    locks, and no ``-shm``/``-wal`` files created beside another application's database
    (``mode=ro`` creates them for a WAL-mode one). ``immutable=1`` promises SQLite that nobody
    writes the file, which another process running on a store may break at any moment (it
    creates the ``-wal``, writes, checkpoints into the file): that read's answer counts only if
    the file is unchanged after it (same size, mtime, inode, still no ``-wal``); otherwise, and
    whenever a ``-wal`` exists, the file is read with ``mode=ro`` through SQLite's locks.
    """
    head = _header(path)
    if not head:
        return None
    if head[: len(_SQLITE_MAGIC)] != _SQLITE_MAGIC:
        raise StoreError(
            f"Invalid store: {str(path)!r} is not a tailclip results store (not an SQLite database); "
            "allowed: a results store written by tailclip run/sweep"
        )
    wal = Path(f"{path}-wal")
    if not wal.exists():
        before = _stamp(path)
        try:
            version = _read_version(path, immutable=True)
        except StoreError:
            if not wal.exists() and _stamp(path) == before:
                raise
        else:
            if not wal.exists() and _stamp(path) == before:
                return version
    return _read_version(path, immutable=False)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is written or replaced (``os.stat`` opens no descriptor)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _read_version(path: Path, *, immutable: bool) -> int | None:
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True)
    try:
        return found_version(conn, path)
    finally:
        conn.close()


def create_or_upgrade(conn: sqlite3.Connection, path: object, lease_seconds: float) -> None:
    """Create the schema in an empty database, or upgrade an older store to :data:`SCHEMA_VERSION`.

    Runs inside the caller's write transaction. The upgrade from version 0 gives every
    ``running`` run a lease of ``lease_seconds`` from now: an owner from before leases existed
    never renews it, so its run becomes claimable when the lease ends.
    """
    version = found_version(conn, path)
    if version is None:
        for statement in _TABLES:
            conn.execute(statement)
    elif version == 0:
        conn.execute("ALTER TABLE runs ADD COLUMN lease_expires_at REAL")
        conn.execute(
            "UPDATE runs SET lease_expires_at = ? WHERE status = 'running'", (time.time() + lease_seconds,)
        )
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
