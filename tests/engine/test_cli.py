"""The tailclip CLI: commands, exit codes, one-line user errors that write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.engine.grid import expand_sweep
from tailclip.engine.store import ResultsStore
from tailclip.engine.yaml_loading import load_config

runner = CliRunner()


def config_data(store: Path, **train: Any) -> dict[str, Any]:
    return {
        "name": "cli",
        "task": {"name": "noisy-quadratic", "options": {"dim": 3}},
        "optimizer": {"name": "clip_sgd", "lr": 0.1},
        "train": {"steps": 30, "eval_every": 10, **train},
        "output": {"store": str(store)},
    }


def write(tmp_path: Path, data: Any, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_list_shows_tasks_optimizers_and_builtin_configs() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in ("noisy-quadratic", "clip_sgd", "clip_adam", "adamw", "demo", "quadratic-clip-grid"):
        assert name in result.stdout


def test_run_then_rerun_is_skipped(tmp_path: Path) -> None:
    store_path = tmp_path / "out" / "r.sqlite"
    path = write(tmp_path, config_data(store_path))
    result = runner.invoke(app, ["run", str(path), "--set", "optimizer.lr=0.05"])
    assert result.exit_code == 0, result.output
    assert "eval/loss" in result.stdout and "steps/s" not in result.stdout  # no progress bar off a terminal
    (record,) = ResultsStore(store_path).runs()
    assert record.status == "finished" and record.config["optimizer"]["lr"] == 0.05 and record.steps == 30
    again = runner.invoke(app, ["run", str(path), "--set", "optimizer.lr=0.05"])
    assert again.exit_code == 0 and "already finished" in again.stdout
    assert len(ResultsStore(store_path).runs()) == 1


BAD_INPUTS = [
    pytest.param("name: x\ntask: [unclosed\n", [], "invalid YAML", id="invalid-yaml"),
    pytest.param({"extra": 1}, [], "extra: unknown key", id="unknown-key"),
    pytest.param({"task": {"name": "nope"}}, [], "task.name: unknown task", id="unknown-task"),
    pytest.param(
        {"optimizer": {"name": "nope"}}, [], "optimizer.name: unknown optimizer", id="unknown-optimizer"
    ),
    pytest.param(
        {"optimizer": {"name": "sgd", "lrr": 1}}, [], "optimizer.lrr: unknown hyperparameter", id="hp"
    ),
    pytest.param({"train": {"steps": "many"}}, [], "train.steps: wrong type", id="wrong-type"),
    pytest.param({"train": {"steps": -5}}, [], "train.steps: -5 is out of range", id="out-of-range"),
    pytest.param(
        {"optimizer": {"name": "sgd", "lr": -1}}, [], "optimizer.lr: ValueError", id="optimizer-range"
    ),
    pytest.param({}, ["optimizer.momentum=2"], "optimizer.momentum: ValueError", id="bad-override-value"),
    pytest.param({}, ["optimizer"], "--set: 'optimizer': not key=value", id="bad-override-format"),
    pytest.param(
        {}, ["sweep.grid.optimizer.lr=[-1.0]"], "in sweep point optimizer.lr=-1.0", id="bad-sweep-point"
    ),
]


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize(("change", "overrides", "fragment"), BAD_INPUTS)
def test_user_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, command: str, change: Any, overrides: list[str], fragment: str
) -> None:
    store_path = tmp_path / "never" / "s.sqlite"
    data = change if isinstance(change, str) else {**config_data(store_path), **change}
    if command == "run" and "sweep point" in fragment:
        return  # run ignores the sweep section; its grid is checked by sweep
    path = write(tmp_path, data)
    args = [command, str(path)] + [a for o in overrides for a in ("--set", o)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "never").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / 'missing.yaml'}: file not found; allowed: a YAML file or ")
    assert "demo, " in line


def test_sweep_options_are_validated_before_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "never" / "s.sqlite"
    path = write(tmp_path, config_data(store_path))
    bogus = runner.invoke(app, ["sweep", str(path), "--backend", "slurm"])
    assert (
        bogus.exit_code == 2 and bogus.stderr.strip() == "error: --backend: got 'slurm'; allowed: local, ray"
    )
    zero = runner.invoke(app, ["sweep", str(path), "--workers", "0"])
    assert zero.exit_code == 2 and "--workers: got 0; allowed: an integer >= 1" in zero.stderr
    for missing in ("ray", "tailclip.engine.ray_backend"):  # as if Ray, or tailclip's Ray module, were absent
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, missing, None)
            ray = runner.invoke(app, ["sweep", str(path), "--backend", "ray"])
        assert ray.exit_code == 2 and len(ray.stderr.splitlines()) == 1
        assert "backend ray needs" in ray.stderr and "pip install 'tailclip[ray]'" in ray.stderr
    assert not (tmp_path / "never").exists()


def test_sweep_prints_runs_and_table_then_skips(tmp_path: Path) -> None:
    store_path = tmp_path / "s.sqlite"
    data = {
        **config_data(store_path),
        "sweep": {"grid": {"optimizer.clip": ["global", "coord"]}, "seeds": [0, 1]},
    }
    path = write(tmp_path, data)
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    finished = [line for line in result.stdout.splitlines() if line.startswith("finished ")]
    assert len(finished) == 4 and "[coord, seed 1]" in result.stdout
    assert "final eval/loss" in result.stdout
    again = runner.invoke(app, ["sweep", str(path)])
    assert again.exit_code == 0 and "4 runs, 4 already finished, 0 to run" in again.stdout
    assert not any(line.startswith("finished ") for line in again.stdout.splitlines())


def test_failed_run_exits_1(tmp_path: Path) -> None:
    store_path = tmp_path / "s.sqlite"
    data = config_data(store_path, stop_on_divergence=False)
    data["optimizer"] = {"name": "clip_sgd", "lr": 1.0e30, "clip": None}
    path = write(tmp_path, data)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: run ") and "FloatingPointError" in result.stderr
    swept = runner.invoke(app, ["sweep", str(path), "--set", "sweep.seeds=[0, 1]"])
    assert swept.exit_code == 1 and swept.stderr.count("failed: FloatingPointError") == 2


def test_demo_config_compares_optimizers_quickly(tmp_path: Path) -> None:
    store_path = tmp_path / "demo.sqlite"
    result = runner.invoke(app, ["sweep", "demo", "--set", f"output.store={store_path}"])
    assert result.exit_code == 0, result.output
    for label in (
        "sgd(lr=0.1)",
        "clip_sgd(lr=0.1, clip=global, max_norm=1.0)",
        "clip_sgd(lr=0.1, clip=coord, max_norm=0.5)",
        "clip_adam(lr=0.1, clip=global, max_norm=1.0)",
    ):
        assert label in result.stdout  # fmt: skip
    store = ResultsStore(store_path)
    runs = store.runs()
    assert len(runs) == 12 and all(r.status == "finished" for r in runs)
    finals: dict[str, list[float]] = {}
    series = store.metrics(keys=["eval/loss"])
    for config in expand_sweep(load_config("demo")):
        finals.setdefault(
            f"{config.optimizer.name}/{config.optimizer.hyperparameters.get('clip')}", []
        ).append(series[config.run_id]["eval/loss"][1][-1])
    sgd = np.mean(finals.pop("sgd/None"))
    assert all(np.mean(v) < sgd for v in finals.values())  # clipping wins under infinite-variance noise
    assert sum(r.wall_time or 0.0 for r in runs) < 30


def test_reproduce_rejects_unknown_claims_and_sizes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["reproduce", "--claim", "nope", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "--claim: unknown claim 'nope'; allowed:" in result.stderr
    result = runner.invoke(app, ["reproduce", "--size", "huge", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "--size" in result.stderr
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- real processes


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tailclip.cli", *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_process_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, {**config_data(tmp_path / "never.sqlite"), "train": {"steps": 0}})
    result = cli("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {bad}: train.steps: 0 is out of range; allowed: >= 1"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "never.sqlite").exists()
    missing = cli("sweep", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    good = write(tmp_path, config_data(tmp_path / "ok.sqlite"), name="good.yaml")
    ok = cli("run", str(good), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "steps/s" not in ok.stdout and "\x1b[" not in ok.stdout  # plain output off a terminal


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tailclip"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("run", "sweep", "list", "demo"))


def test_export_tensorboard_reads_back_with_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store_path = tmp_path / "s.sqlite"
    sweep = {"grid": {"optimizer.clip": ["global", "coord"]}, "seeds": [0, 1]}
    data = {**config_data(store_path), "sweep": sweep}
    assert runner.invoke(app, ["sweep", str(write(tmp_path, data))]).exit_code == 0
    out = tmp_path / "tb"
    args = ["export", str(store_path), "--tensorboard", str(out), "--csv", str(tmp_path / "m.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tensorboard: 4 runs" in result.stdout and (tmp_path / "m.csv").is_file()
    store = ResultsStore(store_path)
    series = store.metrics()
    folders = sorted(p.parent for p in out.rglob("events.out.tfevents.*"))
    assert [f.relative_to(out).as_posix() for f in folders] == [
        f"cli/{label}, seed {seed}" for label in ("CClip", "GClip") for seed in (0, 1)
    ]
    for run in store.runs():
        label = "GClip" if run.config["optimizer"]["clip"] == "global" else "CClip"
        folder = out / "cli" / f"{label}, seed {run.seed}"
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        assert set(events.Tags()["scalars"]) == set(series[run.run_id])
        for key, (steps, values) in series[run.run_id].items():
            scalars = events.Scalars(key)
            assert [s.step for s in scalars] == steps.tolist()
            assert np.allclose([s.value for s in scalars], values, rtol=1e-6, equal_nan=True)
    nothing = runner.invoke(app, ["export", str(store_path)])
    assert nothing.exit_code == 2 and "nothing to write" in nothing.stderr
    args = ["export", str(tmp_path / "nope.sqlite"), "--tensorboard", str(tmp_path / "x")]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "Invalid store" in missing.stderr and not (tmp_path / "x").exists()
