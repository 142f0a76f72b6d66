"""``advise`` where the answer is known (issue 14): heavy tails, light tails, and a gap that is not noise."""

from __future__ import annotations

import json

from tailclip.advise import Answer
from tailclip.advise.candidates import is_clipped
from tailclip.engine.yaml_loading import load_config


def test_heavy_tailed_quadratic_gets_a_clipped_method(stable_answer: Answer) -> None:
    out = stable_answer.to_dict()
    assert out["noise"]["verdict"] == "heavy-tailed"
    assert out["noise"]["alpha"]["high"] < 1.9
    assert is_clipped(out["recommendation"]["optimizer"])
    assert "heavy-tailed" in out["recommendation"]["reason"]
    clipped = [r for r in out["ranking"] if r["clipped"]]
    unclipped = [r for r in out["ranking"] if not r["clipped"]]
    assert clipped and unclipped
    assert min(r["mean"] for r in clipped) < min(r["mean"] for r in unclipped)


def test_heavy_tailed_candidates_include_clipped_adam_and_acclip(stable_answer: Answer) -> None:
    labels = {r.candidate.label for r in stable_answer.candidates}
    assert {"yours", "adamw", "gclip", "cclip", "clip-adam", "acclip"} <= labels


def test_gaussian_quadratic_is_light_tailed_and_claims_no_clipping(gaussian_answer: Answer) -> None:
    out = gaussian_answer.to_dict()
    assert out["noise"]["verdict"] == "light-tailed"
    assert out["recommendation"]["clipping_needed"] is False
    assert "does not show that clipping is needed" in out["recommendation"]["reason"]
    recommended = out["recommendation"]
    # A clipped recommendation is only allowed when it leads every finalist beyond the seed spread.
    assert not (is_clipped(recommended["optimizer"]) and recommended["tie"])


def test_gaussian_candidates_leave_out_the_heavy_tail_methods(gaussian_answer: Answer) -> None:
    labels = {r.candidate.label for r in gaussian_answer.candidates}
    assert "clip-adam" not in labels and "acclip" not in labels


def test_imbalanced_softmax_gain_is_not_explained_by_noise(imbalanced_answer: Answer) -> None:
    out = imbalanced_answer.to_dict()
    control = out["control"]
    assert control["batch_size"] == 4096  # the full batch: no gradient noise at all
    assert control["outcome"] == "holds"
    assert control["explained_by_noise"] is False
    assert "not explained by the noise" in out["recommendation"]["reason"]
    assert out["recommendation"]["optimizer"]["name"] == "adamw"
    yours = next(c for c in out["candidates"] if c["label"] == "yours")  # SGD at its best step size
    assert out["ranking"][0]["mean"] < yours["best_value"] / 2


def test_a_synthetic_config_is_advised_through_its_model_twin(remark1_answer: Answer) -> None:
    """synthetic-remark1: pareto noise with alpha 1.5 (infinite variance): heavy-tailed, clip."""
    out = remark1_answer.to_dict()
    assert out["noise"]["verdict"] == "heavy-tailed"
    assert is_clipped(out["recommendation"]["optimizer"])
    assert out["twin"]["original_task"] == "stochastic-quadratic" and out["twin"]["task"] == "noisy-quadratic"
    assert out["twin"]["left_out"] and all(line.startswith("autoclip: ") for line in out["twin"]["left_out"])
    assert "Advised on the model twin of stochastic-quadratic" in out["recommendation"]["reason"]
    # every candidate, and so the recommendation, is a spec the vectorized config runs
    labels = {c["label"]: c["optimizer"] for c in out["candidates"]}
    assert labels["adamw"] == {"name": "clip_adam", "weight_decay": 0.0}
    for spec in [c["optimizer"] for c in out["candidates"]] + [out["recommendation"]["optimizer"]]:
        overrides = [*out["recommendation"]["config_overrides"], f"optimizer={json.dumps(spec)}"]
        config = load_config("synthetic-remark1", overrides)
        assert config.task.name == "stochastic-quadratic"
