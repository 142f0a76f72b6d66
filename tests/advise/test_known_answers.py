"""``advise`` where the answer is known (issue 14): heavy tails, light tails, and a gap that is not noise."""

from __future__ import annotations

from tailclip.advise import Answer
from tailclip.advise.candidates import is_clipped


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
    yours = next(r for r in out["ranking"] if r["label"] == "yours")
    assert out["ranking"][0]["mean"] < yours["mean"] / 2
