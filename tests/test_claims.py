"""The claims registry: every claim passes at demo size, the checks can fail, the demo runs.

Full size (`tailclip reproduce`, minutes per claim) is measured and documented in
docs/benchmarks.md and on the issue, not run by the test suite.

The demo-size runs share one store (module fixture): :func:`run_demo` trains experiments 1, 3
and 5, and the per-claim tests reuse those finished runs (same config, same run id).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from tailclip.claims import (
    CLAIMS,
    DEMO_CLAIMS,
    ClaimResult,
    ExperimentRuns,
    claims_markdown,
    method_label,
    power_law_exponent,
    print_claims,
    reproduce,
    run_claims,
    run_demo,
)
from tailclip.engine.yaml_loading import builtin_configs, load_config

EXPERIMENTS = {
    "synthetic-remark1",
    "synthetic-rates",
    "synthetic-adaptive-quantiles",
    "synthetic-clipping-bias",
    "synthetic-coordinate-clipping",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ClaimResult], str]:
    out = tmp_path_factory.mktemp("demo")
    console = Console(record=True, width=200)
    results = run_demo(out, workers=1, console=console)
    return out, results, console.export_text()


def test_demo_runs_experiments_1_3_5_and_writes_report_and_table(demo) -> None:
    out, results, text = demo
    assert [r.name for r in results] == list(DEMO_CLAIMS)
    assert all(r.passed for r in results), [r.measured for r in results if not r.passed]
    assert {r.experiment for r in results} == {
        "synthetic-remark1",
        "synthetic-adaptive-quantiles",
        "synthetic-coordinate-clipping",
    }
    assert (out / "report.html").stat().st_size > 10_000
    report = (out / "report.html").read_text(encoding="utf-8")
    for experiment in ("synthetic-remark1", "synthetic-adaptive-quantiles", "synthetic-coordinate-clipping"):
        assert f'alt="headline figure of {experiment}"' in report
    assert "Chezhegov et al.: 99% quantile" in report and "sq_dist/q99" in report
    saved = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in saved] == list(DEMO_CLAIMS) and all(s["passed"] for s in saved)
    assert "| adaptive-clipping-quantiles |" in (out / "claims.md").read_text(encoding="utf-8")
    assert "3/3 claims pass" in text and "PASS" in text


@pytest.mark.parametrize("name", list(CLAIMS))
def test_claim_passes_at_demo_size(name: str, demo) -> None:
    out, _, _ = demo
    (result,) = run_claims([name], "demo", out_dir=out, workers=1)
    assert result.passed, result.measured
    assert result.size == "demo" and result.experiment in EXPERIMENTS and result.values
    assert all(np.isfinite(v) for v in result.values.values())


def test_every_experiment_is_a_builtin_config_of_the_vectorized_task() -> None:
    configs = builtin_configs()
    assert EXPERIMENTS <= set(configs)
    for claim in CLAIMS.values():
        assert claim.experiment in EXPERIMENTS
        assert set(claim.runs) == {"full", "demo"}
        for runs in claim.runs.values():
            for experiment, overrides in runs:
                config = load_config(experiment, list(overrides))
                assert config.task.name == "stochastic-quadratic"
    rows = sum(
        len(ExperimentRuns(e, o, Path("unused")).points)
        for e, o in CLAIMS["clipping-bias-floor"].runs["full"]
    )
    assert rows == 4 * 3 + 1
    full = load_config("synthetic-adaptive-quantiles")
    assert full.task.options["runs"] >= 1000 and full.train.steps == 10_000


def test_power_law_exponent_recovers_a_power_law() -> None:
    x = np.array([10.0, 100.0, 1000.0])
    assert power_law_exponent(x, 3.0 * x**-0.75) == pytest.approx(-0.75, abs=1e-12)
    assert np.isnan(power_law_exponent([1.0, 2.0], [1.0, 0.0]))


def test_method_labels_follow_the_paper() -> None:
    assert (
        method_label({"norm": True, "delay": True, "clip": "global"}, "clip_adagrad") == "Clip-AdaGradD-Norm"
    )
    assert method_label({"norm": True, "delay": False, "clip": None}, "clip_adam") == "Adam-Norm"


class FakeRuns:
    """Stand-in for ExperimentRuns: real resolved points, given final values."""

    def __init__(self, experiment: str, finals: dict[str, float], overrides: tuple[str, ...] = ()) -> None:
        self.points = ExperimentRuns(experiment, overrides, Path("unused")).points
        self._finals = finals

    def final(self, point: Any, key: str) -> float:
        return self._finals[method_label(point.config.optimizer.hyperparameters, point.config.optimizer.name)]


def test_quantile_check_fails_when_a_clipped_method_is_not_lower() -> None:
    evaluate = CLAIMS["adaptive-clipping-quantiles"].evaluate
    good = {
        "AdaGrad-Norm": 1.0,
        "AdaGradD-Norm": 9.0,
        "Clip-AdaGrad-Norm": 0.1,
        "Clip-AdaGradD-Norm": 0.1,
        "Adam-Norm": 5.0,
        "AdamD-Norm": 5.0,
        "Clip-Adam-Norm": 0.5,
        "Clip-AdamD-Norm": 0.5,
    }
    assert evaluate([FakeRuns("synthetic-adaptive-quantiles", good)])[2]
    tie = {**good, "Clip-AdamD-Norm": 5.0}
    values, measured, passed = evaluate([FakeRuns("synthetic-adaptive-quantiles", tie)])
    assert not passed and values["ratio[Clip-AdamD-Norm]"] == 1.0 and "Clip-AdamD-Norm 5 vs 5" in measured


def test_rates_claim_fails_with_a_constant_threshold(tmp_path: Path) -> None:
    """With tau fixed, the clipped noise has finite variance and the rate is k^-1 for every alpha."""
    claim = CLAIMS["table1-rates"]
    overrides = (
        *claim.runs["demo"][0][1],
        "task.options.threshold=constant",
        "sweep.grid.task.options.alpha=[1.3]",
    )
    wrong = dataclasses.replace(claim, runs={"demo": (("synthetic-rates", overrides),)})
    result = wrong.run("demo", tmp_path / "claims.sqlite", workers=1)
    assert not result.passed
    assert result.values["slope_alpha_1.3"] < result.values["target_alpha_1.3"] - 0.2


def test_unknown_claim_or_size_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Invalid claim: 'nope'; allowed: remark1-second-moment"):
        run_claims(["nope"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="Invalid size"):
        run_claims(None, "huge", out_dir=tmp_path)  # type: ignore[arg-type]


def test_table_and_markdown_show_each_verdict() -> None:
    results = [
        ClaimResult("a", "Paper A", "synthetic-rates", "s", "m1", "t1", True, "demo"),
        ClaimResult("b", "Paper B", "synthetic-remark1", "s", "m|2", "t2", False, "demo"),
    ]
    console = Console(record=True, width=200)
    print_claims(results, console)
    text = console.export_text()
    assert "PASS" in text and "FAIL" in text and "1/2 claims pass" in text
    markdown = claims_markdown(results)
    assert "| b | Paper B | synthetic-remark1 (demo) | m\\|2 | t2 | FAIL |" in markdown


def test_reproduce_one_claim_prints_and_saves(demo) -> None:
    out, _, _ = demo
    console = Console(record=True, width=200)
    results = reproduce("remark1-second-moment", size="demo", out_dir=out, workers=1, console=console)
    assert [r.name for r in results] == ["remark1-second-moment"] and results[0].passed
    assert "remark1-second-moment" in console.export_text()
    assert json.loads((out / "claims.json").read_text(encoding="utf-8"))[0]["name"] == "remark1-second-moment"
