"""Which bake-off candidates become finalists."""

from __future__ import annotations

import math

from _advice_fakes import finalist

from tailclip.advise.bakeoff import CandidateResult, finalists


def result(label: str, *values: float) -> CandidateResult:
    out = CandidateResult(finalist(label, (1.0,)).candidate)
    out.trials = [
        {"lr": 0.1 * (i + 1), "state": "COMPLETE", "value": v, "run_id": None} for i, v in enumerate(values)
    ]
    return out


def test_best_three_with_the_best_clipped_and_unclipped_always_in() -> None:
    results = [result("a", 1.0), result("b", 2.0), result("c", 3.0), result("clip-x", 9.0), result("d", 0.5)]
    chosen = [r.candidate.label for r in finalists(results)]
    assert chosen == ["d", "a", "clip-x"]


def test_candidates_that_only_diverged_are_left_out() -> None:
    results = [result("a", math.inf, math.inf), result("clip-x", 2.0, math.inf), result("b", 4.0)]
    chosen = finalists(results)
    assert [r.candidate.label for r in chosen] == ["clip-x", "b"]
    assert chosen[0].best is not None and chosen[0].best["lr"] == 0.1
