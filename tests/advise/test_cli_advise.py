"""``tailclip advise``: user errors exit 2 with one line and write nothing; the command end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.engine.store import ResultsStore

runner = CliRunner()


def write_config(tmp_path: Path, optimizer: str = "sgd", **task: Any) -> Path:
    data = {
        "name": "cli-advise",
        "task": task or {"name": "noisy-quadratic", "options": {"dim": 5, "noise": "gaussian"}},
        "optimizer": {"name": optimizer, "lr": 0.1},
        "train": {"steps": 60, "batch_size": 1},
        "output": {"store": str(tmp_path / "runs" / "store.sqlite")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-minutes", "0"], "--budget-minutes: got 0.0; allowed: a number > 0"),
        (["--seeds", "1"], "--seeds: got 1; allowed: an integer >= 2"),
        (["--steps", "0"], "--steps: got 0; allowed: an integer >= 1"),
        (["--noise-batches", "10"], "--noise-batches: got 10; allowed: an integer >= 20"),
        (["--json", "/nonexistent/dir/a.json"], "--json: directory /nonexistent/dir does not exist"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["advise", str(write_config(tmp_path)), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_vectorized_task_without_noise_is_a_user_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "clip_sgd", name="stochastic-quadratic", options={"noise": "none"})
    result = runner.invoke(app, ["advise", str(config)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert (
        "task.options.noise: 'none' has no gradient noise to advise on; "
        "allowed: stable, pareto, student_t, gaussian, skewed"
    ) in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_config_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["advise", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "file not found" in result.stderr


@pytest.mark.slow
def test_advise_end_to_end_writes_json_and_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "advice.json"
    first = runner.invoke(app, ["advise", str(config), "--budget-minutes", "0.5", "--json", str(out)])
    assert first.exit_code == 0, first.output
    assert "Paste into your config" in first.stdout and "optimizer:" in first.stdout
    advice = json.loads(out.read_text())
    store_path = Path(advice["store"])
    with ResultsStore(store_path) as store:
        runs = {r.run_id: r.status for r in store.runs()}
    assert set(advice["ranking"][0]["run_ids"]) <= {k for k, v in runs.items() if v == "finished"}
    second = runner.invoke(app, ["advise", str(config), "--budget-minutes", "0.5", "--json", str(out)])
    assert second.exit_code == 0, second.output
    with ResultsStore(store_path) as store:
        assert {r.run_id: r.status for r in store.runs()} == runs  # resumed: nothing retrained
    again = json.loads(out.read_text())
    assert again["ranking"] == advice["ranking"]
    assert again["recommendation"]["optimizer"] == advice["recommendation"]["optimizer"]
