"""The ``--json`` contract of ``tailclip advise``, and that the recommended spec runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from tailclip.advise import Answer
from tailclip.advise.answer import to_json
from tailclip.cli import app
from tailclip.engine.config import parse_config
from tailclip.engine.store import ResultsStore


def test_json_has_the_contract_fields(gaussian_answer: Answer) -> None:
    out = json.loads(to_json(gaussian_answer.to_dict()))
    assert out["noise"]["verdict"] in ("heavy-tailed", "light-tailed", "inconclusive")
    alpha = out["noise"]["alpha"]
    assert 0 < alpha["low"] <= alpha["value"] <= alpha["high"] <= 2
    assert len(out["ranking"]) >= 2
    for row in out["ranking"]:
        assert {"label", "optimizer", "mean", "sd", "seeds"} <= set(row)
        assert len(row["seeds"]) == 3 == len(row["values"])
        assert math.isclose(row["mean"], sum(row["values"]) / 3)
    assert [r["mean"] for r in out["ranking"]] == sorted(r["mean"] for r in out["ranking"])
    rec = out["recommendation"]
    assert rec["optimizer"] in [r["optimizer"] for r in out["ranking"]]
    assert isinstance(rec["reason"], str) and rec["reason"]
    assert {"outcome", "explained_by_noise", "batch_size", "large_batch", "message"} <= set(out["control"])
    assert out["what_would_change"]


def test_json_is_strict(gaussian_answer: Answer) -> None:
    text = to_json(gaussian_answer.to_dict())
    json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def test_recommended_optimizer_loads_back_through_the_config_loader(gaussian_answer: Answer) -> None:
    out = json.loads(to_json(gaussian_answer.to_dict()))
    config = parse_config(
        {
            "name": "pasted",
            "task": {"name": "noisy-quadratic", "options": {"dim": 10}},
            "optimizer": out["recommendation"]["optimizer"],
            "train": {"steps": 3},
        }
    )
    assert config.optimizer.name == out["recommendation"]["optimizer"]["name"]


def test_recommended_yaml_runs_with_tailclip_run(stable_answer: Answer, tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "pasted.yaml"
    config.write_text(
        "name: pasted\ntask: {name: noisy-quadratic, options: {dim: 10, noise: stable, alpha: 1.2}}\n"
        f"train: {{steps: 5}}\noutput: {{store: {tmp_path / 'runs.sqlite'}}}\n"
        + stable_answer.recommended_yaml
    )
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output


def test_answer_is_saved_as_json_and_recorded_in_the_results_store(gaussian_answer: Answer) -> None:
    reports = Path(gaussian_answer.store).parent / "advise" / gaussian_answer.config_name
    saved = json.loads((reports / "advice.json").read_text())
    assert saved["recommendation"] == json.loads(to_json(gaussian_answer.to_dict()))["recommendation"]
    # an ``advice/json`` artifact of every finalist's runs, by its path relative to the store's folder
    with ResultsStore(gaussian_answer.store, read_only=True) as store:
        recorded = store.artifacts(kind="advice/json")
    finalists = {run_id for row in saved["ranking"] for run_id in row["run_ids"]}
    assert {a.run_id for a in recorded} == finalists
    assert {a.path for a in recorded} == {f"advise/{gaussian_answer.config_name}/advice.json"}
    assert not (reports / "advice_section.html").exists()  # the report renders it from the JSON
