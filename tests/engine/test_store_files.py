"""Foreign and older files given as a store: refused in one line and left byte-identical, or read as is."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
import yaml
from _results import add_run, quadratic_config
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.engine._schema import APPLICATION_ID, SCHEMA_VERSION
from tailclip.engine.identity import run_config_dict
from tailclip.engine.store import ResultsStore, StoreError, make_owner

runner = CliRunner()

# The schema of the stores tailclip wrote before the version marker (version 0).
_V0_SCHEMA = (
    "CREATE TABLE runs(run_id TEXT PRIMARY KEY, name TEXT, config_json TEXT, group_key TEXT, seed INTEGER, "
    "status TEXT NOT NULL CHECK(status IN ('pending','running','finished','failed')), owner TEXT, "
    "started REAL, ended REAL, wall_time REAL, steps INTEGER, host TEXT, error TEXT)",
    "CREATE TABLE metrics(run_id TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL, "
    "PRIMARY KEY(run_id, step, key))",
    "CREATE TABLE artifacts(run_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, "
    "PRIMARY KEY(run_id, kind, path))",
)


def fingerprint(path: Path) -> tuple[str, int, int, list[str]]:
    """Content hash, size, mtime (ns) and the sibling files (journals, WAL, shm)."""
    stat = path.stat()
    siblings = sorted(p.name for p in path.parent.iterdir() if p != path and p.name.startswith(path.name))
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns, siblings


def text_file(path: Path) -> Path:
    path.write_text("run_id,step,value\nabc,1,0.5\n" * 40)
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def foreign_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts(name TEXT, email TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('ada', 'ada@example.org')")
    conn.commit()
    conn.close()
    return path


def foreign_wal_database(path: Path) -> Path:
    """Another application's database in WAL mode, closed cleanly (no -wal/-shm left)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE notes(body TEXT)")
    conn.commit()
    conn.close()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return path


def lookalike_database(path: Path) -> Path:
    """Another application's database that happens to have tables named runs/metrics/artifacts."""
    conn = sqlite3.connect(path)
    for table in ("runs", "metrics", "artifacts"):
        conn.execute(f"CREATE TABLE {table}(id INTEGER, payload BLOB)")
    conn.execute("PRAGMA application_id = 42")
    conn.commit()
    conn.close()
    return path


def v0_store(path: Path) -> tuple[Path, str]:
    """A store as tailclip wrote it before versions: one finished run with metrics, one running."""
    conn = sqlite3.connect(path)
    for statement in _V0_SCHEMA:
        conn.execute(statement)
    config = quadratic_config("old")
    running = quadratic_config("old", seed=1)
    conn.execute(
        "INSERT INTO runs VALUES (?, 'old', ?, ?, 0, 'finished', 'h:1:x', 1.0, 2.0, 1.0, 10, 'h', NULL)",
        (config.run_id, _config_json(config), config.run_id[:8]),
    )
    conn.execute(
        "INSERT INTO runs VALUES "
        "(?, 'old', ?, ?, 1, 'running', 'elsewhere:1:x', 1.0, NULL, NULL, NULL, 'h', NULL)",
        (running.run_id, _config_json(running), config.run_id[:8]),
    )
    conn.executemany(
        "INSERT INTO metrics VALUES (?, ?, 'eval/loss', ?)", [(config.run_id, s, 1.0 / s) for s in (1, 5, 10)]
    )
    conn.commit()
    conn.close()
    return path, config.run_id


def _config_json(config: object) -> str:
    return json.dumps(run_config_dict(config), sort_keys=True, separators=(",", ":"))  # type: ignore[arg-type]


HOSTILE_FILES = [
    pytest.param(text_file, "not a tailclip results store", id="text"),
    pytest.param(empty_file, "is empty", id="zero-bytes"),
    pytest.param(foreign_database, "another application (tables: contacts)", id="foreign-sqlite"),
    pytest.param(foreign_wal_database, "another application (tables: notes)", id="foreign-wal-sqlite"),
    pytest.param(lookalike_database, "another application", id="lookalike-tables"),
]


@pytest.mark.parametrize(("make", "message"), HOSTILE_FILES)
def test_report_refuses_a_foreign_file_in_one_line_and_leaves_it_untouched(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path / "data.db")  # type: ignore[operator]
    before = fingerprint(path)
    result = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid store:") and message in lines[0], lines
    assert "Traceback" not in result.output
    assert fingerprint(path) == before
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(("make", "message"), HOSTILE_FILES)
def test_opening_a_foreign_file_refuses_read_and_write_and_leaves_it_untouched(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path / "data.db")  # type: ignore[operator]
    before = fingerprint(path)
    with pytest.raises(StoreError, match="Invalid store"):
        ResultsStore(path, read_only=True)
    if message != "is empty":  # an empty file is a new store to a writer
        with pytest.raises(StoreError, match=message.split(" (")[0]):
            ResultsStore(path)
    assert fingerprint(path) == before


def test_a_missing_store_is_refused_read_only_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ResultsStore(tmp_path / "nope.sqlite", read_only=True)
    with pytest.raises(StoreError, match="is not a file"):
        ResultsStore(tmp_path, read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", [text_file, foreign_database], ids=["text", "foreign-sqlite"])
def test_run_refuses_a_foreign_file_as_its_store_and_leaves_it_untouched(
    tmp_path: Path, make: object
) -> None:
    path = make(tmp_path / "data.db")  # type: ignore[operator]
    before = fingerprint(path)
    config = run_config_dict(quadratic_config())
    config["output"] = {"store": str(path)}
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(config_file)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: output.store: cannot open") and "Invalid store" in line
    assert fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "data.db"]


def test_new_stores_carry_the_marker_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert ResultsStore(path, read_only=True).version == SCHEMA_VERSION


def test_report_reads_a_store_without_writing_to_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = ResultsStore(path)
    add_run(store, quadratic_config(), {"eval/loss": ([1, 10], [1.0, 0.5])})
    store.close()
    before = fingerprint(path)[:3]
    result = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    exported = ResultsStore(path, read_only=True).export_csv(tmp_path / "m.csv")
    assert "eval/loss" in exported.read_text()
    assert fingerprint(path)[:3] == before
    with pytest.raises(StoreError, match="read-only"):
        ResultsStore(path, read_only=True).add_runs([quadratic_config(seed=3)])


def test_a_newer_store_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = fingerprint(path)[:3]  # a store is in WAL mode: a reader may add its -shm/-wal files
    result = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert f"store version {SCHEMA_VERSION + 1}, newer than this tailclip's {SCHEMA_VERSION}" in result.stderr
    with pytest.raises(StoreError, match="newer"):
        ResultsStore(path)
    assert fingerprint(path)[:3] == before


def test_a_version_0_store_is_read_as_it_is_and_says_so(tmp_path: Path) -> None:
    path, run_id = v0_store(tmp_path / "old.sqlite")
    before = fingerprint(path)
    store = ResultsStore(path, read_only=True)
    assert store.version == 0
    records = {r.run_id: r for r in store.runs()}
    assert records[run_id].status == "finished" and records[run_id].lease_expires_at is None
    steps, values = store.metrics()[run_id]["eval/loss"]
    assert steps.tolist() == [1, 5, 10] and values[-1] == pytest.approx(0.1)
    store.close()
    result = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "version-0 store (this tailclip writes version 1)" in result.stderr
    assert (tmp_path / "r.html").is_file()
    assert fingerprint(path) == before


def test_a_version_0_store_is_upgraded_on_the_next_write_open(tmp_path: Path) -> None:
    path, run_id = v0_store(tmp_path / "old.sqlite")
    store = ResultsStore(path, lease_seconds=30.0)
    assert ResultsStore(path, read_only=True).version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    records = {r.run_id: r for r in store.runs()}
    assert records[run_id].status == "finished" and records[run_id].lease_expires_at is None
    (running,) = [r for r in records.values() if r.status == "running"]
    # the old owner never renews: its run is held one lease from the upgrade, then taken
    assert running.lease_expires_at is not None and store.claim(make_owner()) is None
    conn.execute("UPDATE runs SET lease_expires_at = 0 WHERE run_id = ?", (running.run_id,))
    conn.commit()
    assert store.claim(make_owner()).run_id == running.run_id  # type: ignore[union-attr]


_SQLITE_HEADER = b"SQLite format 3\x00"


@settings(max_examples=60, deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=4096),
        st.binary(min_size=84, max_size=8192).map(lambda b: _SQLITE_HEADER + b),
        st.binary(max_size=512).map(lambda b: _real_store_bytes()[: 100 + len(b)] + b),
    )
)
def test_any_bytes_as_a_store_are_refused_with_store_error_and_left_untouched(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.db"
        path.write_bytes(content)
        before = fingerprint(path)
        for read_only in (True, False):
            try:
                ResultsStore(path, read_only=read_only).close()
            except StoreError as exc:
                assert "\n" not in str(exc)
            else:  # only an empty file may be opened, and only by a writer (as a new store)
                assert content == b"" and not read_only
                break
            assert fingerprint(path) == before


def _real_store_bytes() -> bytes:
    global _REAL_STORE
    if _REAL_STORE is None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "s.sqlite"
            store = ResultsStore(path)
            add_run(store, quadratic_config(), {"eval/loss": ([1, 10], [1.0, 0.5])})
            store.close()
            _REAL_STORE = path.read_bytes()
    return _REAL_STORE


_REAL_STORE: bytes | None = None
