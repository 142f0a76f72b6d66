"""Hostile configs (issue 11): duplicate keys, inf and NaN, missing devices, store folders, random input.

The promise: a user's mistake in a config is one line naming the field and what is allowed,
exit code 2, and nothing written (no store); ``load_config`` raises nothing but ConfigError.
"""

from __future__ import annotations

import copy
import math
import string
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.engine.config import STORE_FILE_NAME, ConfigError, parse_config
from tailclip.engine.yaml_loading import load_config

runner = CliRunner()

TEXT = """\
name: t
task: {name: noisy-quadratic, options: {dim: 3}}
optimizer:
  name: sgd
  lr: 0.1
train: {steps: 3}
"""


def write(tmp_path: Path, text: str, store: str | None = None) -> Path:
    path = tmp_path / "exp.yaml"
    store = store if store is not None else str(tmp_path / "runs" / "store.sqlite")
    path.write_text(text + f"output: {{store: {store!r}}}\n" if "output:" not in text else text)
    return path


def assert_user_error(result: Any, tmp_path: Path, fragment: str) -> None:
    """Exit 2, one ``error:`` line containing ``fragment``, no traceback, no store written."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        pytest.param(TEXT.replace("  lr: 0.1\n", "  lr: 0.1\n  lr: 5.0\n"), "lr", 6, id="lr-twice"),
        pytest.param(TEXT + "train: {steps: 7}\n", "train", 7, id="second-train-section"),
        pytest.param(TEXT.replace("{dim: 3}", "{dim: 3, dim: 4}"), "dim", 2, id="flow-mapping"),
    ],
)
def test_a_duplicate_key_is_an_error_naming_it_and_its_line(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"invalid YAML: line {line}, column \d+: duplicate key '{key}'"):
        load_config(path)
    assert_user_error(runner.invoke(app, ["run", str(path)]), tmp_path, f"duplicate key '{key}'")


def test_a_duplicate_key_in_an_override_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"duplicate key 'lr'"):
        load_config(write(tmp_path, TEXT), ["optimizer={name: sgd, lr: 0.1, lr: 5.0}"])


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    text = TEXT.replace("{dim: 3}", "{<<: {dim: 3, dtype: float64}, dim: 4}")
    assert load_config(write(tmp_path, text)).task.options["dim"] == 4


# ----------------------------------------------------------------------------- inf and nan

NON_FINITE = [
    pytest.param("optimizer.lr=1e400", "optimizer.lr", id="lr-1e400"),
    pytest.param("optimizer.lr=.nan", "optimizer.lr", id="lr-nan"),
    pytest.param("task.options.scale=.inf", "task.options.scale", id="scale-inf"),
    pytest.param("task.options.condition_number=1e400", "task.options.condition_number", id="kappa"),
    pytest.param("schedule.gamma=-.inf", "schedule.gamma", id="schedule"),
    pytest.param("optimizer.betas=[0.9, .nan]", "optimizer.betas", id="list-item"),
    pytest.param(
        "optimizer={name: clip_sgd, lr: 0.1, max_norm: {policy: zclip, z_thresh: .inf}}",
        "optimizer.max_norm.z_thresh",
        id="policy",
    ),
    pytest.param(
        "optimizer={name: noise_injection, base_optimizer: {name: adamw, lr: 1e400}}",
        "optimizer.base_optimizer.lr",
        id="wrapped",
    ),
    pytest.param("optimizer.momentum=.nan", "optimizer.momentum", id="torch-kwarg"),
]


@pytest.mark.parametrize(("override", "field"), NON_FINITE)
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_inf_and_nan_are_refused_at_load_time(
    tmp_path: Path, command: str, override: str, field: str
) -> None:
    path = write(tmp_path, TEXT.replace("name: sgd", "name: adamw") if "betas" in override else TEXT)
    with pytest.raises(
        ConfigError, match=rf"^{path}: {field}: got (-?inf|nan|\[.*\]); allowed: a finite number"
    ):
        load_config(path, [override])
    result = runner.invoke(app, [command, str(path), "--set", override])
    assert_user_error(result, tmp_path, f"{field}: got ")


def test_a_non_finite_grid_value_fails_the_sweep_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, TEXT + "sweep: {grid: {optimizer.lr: [0.1, 1e400]}}\n")
    result = runner.invoke(app, ["sweep", str(path)])
    assert_user_error(result, tmp_path, "optimizer.lr: got inf; allowed: a finite number (in sweep point")


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("cuda", "train.device: 'cuda' is not available on this machine"),
        ("cuda:1", "train.device: 'cuda:1' is not available on this machine"),
        ("mps", "train.device: 'mps' is not available on this machine"),
        ("gpu", "train.device: got 'gpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
        ("cuda:x", "train.device: got 'cuda:x'; allowed"),
        ("cuda:-1", "train.device: got 'cuda:-1'; allowed"),
    ],
)
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_device_this_host_lacks_is_refused_at_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, device: str, fragment: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    path = write(tmp_path, TEXT)
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        load_config(path, [f"train.device={device}"])
    assert_user_error(
        runner.invoke(app, [command, str(path), "--set", f"train.device={device}"]), tmp_path, fragment
    )


def test_auto_resolves_to_the_cpu_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_config(write(tmp_path, TEXT), ["train.device=auto"]).train.device == "auto"


# ----------------------------------------------------------------------------- store folders


@pytest.mark.parametrize("spelling", ["runs/", "runs/nested/"])
def test_a_store_path_ending_in_a_separator_is_a_folder(tmp_path: Path, spelling: str) -> None:
    folder = tmp_path / spelling
    path = write(tmp_path, TEXT, store=str(tmp_path) + "/" + spelling)
    config = load_config(path)
    assert Path(config.output.store) == folder / STORE_FILE_NAME
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert folder.is_dir() and (folder / STORE_FILE_NAME).is_file()


def test_a_store_path_naming_an_existing_folder_is_that_folder(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    config = load_config(write(tmp_path, TEXT, store=str(tmp_path / "runs")))
    assert Path(config.output.store) == tmp_path / "runs" / STORE_FILE_NAME


def test_a_store_file_path_is_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TEXT))
    assert config.output.store == str(tmp_path / "runs" / "store.sqlite")


# ----------------------------------------------------------------------------- random hostile configs

VALID: dict[str, Any] = yaml.safe_load(TEXT)
# (dotted path, values that are always wrong there)
WRONG_VALUES: list[tuple[str, list[Any]]] = [
    ("name", [5, [], {}, True, ""]),
    ("task.name", ["nope", 3, None]),
    ("task.options.dim", ["3", 1.5, -1, 0, math.inf]),
    ("task.options.scale", ["big", -1.0, math.nan, -math.inf]),
    ("optimizer.name", ["sgdd", 1, None]),
    ("optimizer.lr", ["fast", -0.1, math.inf, math.nan, [0.1], {"a": 1}]),
    ("optimizer.momentum", [-1.0, math.nan, "x"]),
    ("train.steps", [0, -5, 1.5, "10", math.inf, True]),
    ("train.batch_size", [0, -1, "one", math.nan]),
    ("train.seed", [-1, 2**32, 0.5]),
    ("train.device", ["gpu", "cuda:x", 3]),
    ("schedule.kind", ["bogus", 1]),
    ("schedule.gamma", [0.0, -1.0, math.inf]),
    ("monitor.every", [0, -3, "x"]),
    ("output.store", ["", 7]),
]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


@pytest.mark.parametrize(
    ("path", "value"), [(path, value) for path, values in WRONG_VALUES for value in values], ids=repr
)
def test_every_wrong_value_of_the_table_is_a_config_error_naming_its_field(path: str, value: Any) -> None:
    data = copy.deepcopy(VALID)
    _set(data, path, value)
    with pytest.raises(ConfigError, match=rf"^<dict>: {path}: "):
        parse_config(data)


@st.composite
def hostile_configs(draw: st.DrawFn) -> tuple[str, bool]:
    """``(YAML text, is_valid)``: the valid config, or one with a mutation that makes it invalid."""
    data = copy.deepcopy(VALID)
    kind = draw(st.sampled_from(["valid", "wrong", "unknown", "duplicate", "garbage"]))
    if kind == "valid":
        return yaml.safe_dump(data), True
    if kind == "wrong":
        path, values = draw(st.sampled_from(WRONG_VALUES))
        _set(data, path, draw(st.sampled_from(values)))
        return yaml.safe_dump(data), False
    if kind == "unknown":
        section = draw(st.sampled_from(["", "task.", "task.options.", "optimizer.", "train.", "schedule."]))
        key = "zz_" + draw(st.text(string.ascii_lowercase, min_size=1, max_size=6))
        _set(data, section + key, draw(st.integers() | st.floats() | st.text(max_size=5)))
        return yaml.safe_dump(data), False
    if kind == "duplicate":
        lines = yaml.safe_dump(data, default_flow_style=False).splitlines()
        keyed = [i for i, line in enumerate(lines) if ":" in line and not line.strip().startswith("-")]
        i = draw(st.sampled_from(keyed))
        return "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]) + "\n", False
    return draw(
        st.text(max_size=80) | st.sampled_from(["{", "- a\n- b", "name: [", ":::", "\t", "null"])
    ), False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_configs())
def test_load_config_raises_only_one_line_config_errors(tmp_path: Path, case: tuple[str, bool]) -> None:
    text, valid = case
    path = tmp_path / "random.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert not valid, exc
        assert "\n" not in str(exc)
    else:
        assert valid, text


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_configs().filter(lambda case: not case[1]))
def test_the_cli_answers_bad_configs_with_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str, bool]
) -> None:
    text, _ = case
    monkeypatch.chdir(tmp_path)  # the default store, runs/tailclip.sqlite, would land here
    path = tmp_path / "random.yaml"
    path.write_text(text, encoding="utf-8")
    for command in ("run", "sweep"):
        result = runner.invoke(app, [command, str(path)])
        assert result.exit_code == 2, (text, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (text, result.exception)
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "runs").exists()
