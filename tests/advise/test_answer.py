"""The decision rules of ``tailclip.advise.answer``: leads, ties, and what a tie recommends."""

from __future__ import annotations

import math

from _advice_fakes import finalist

from tailclip.advise.answer import decide, leads


def test_lead_must_exceed_the_seed_spread() -> None:
    a = finalist("a", (1.0, 1.1, 0.9))  # mean 1.0, sd 0.1
    assert leads(a, finalist("b", (1.2, 1.2, 1.2)))
    assert not leads(a, finalist("b", (1.0, 1.05, 1.1)))
    assert not leads(finalist("b", (1.2, 1.2, 1.2)), a)


def test_lead_under_one_percent_is_a_tie_even_without_spread() -> None:
    a = finalist("a", (1.000, 1.000, 1.000))
    assert not leads(a, finalist("b", (1.005, 1.005, 1.005)))
    assert leads(a, finalist("b", (1.02, 1.02, 1.02)))


def test_single_seed_never_leads() -> None:
    assert not leads(finalist("a", (1.0,)), finalist("b", (5.0,)))


def test_diverged_finalist_is_led_by_any_finite_one() -> None:
    assert leads(finalist("a", (9.0, 9.0)), finalist("b", (math.inf, 1.0)))
    assert not leads(finalist("b", (math.inf, 1.0)), finalist("a", (9.0, 9.0)))


def test_clear_winner_is_recommended_whatever_the_noise() -> None:
    ranking = [finalist("yours", (2.0, 2.1, 1.9)), finalist("gclip", (1.0, 1.05, 0.95))]
    for verdict in ("light-tailed", "heavy-tailed"):
        decision = decide(ranking, verdict)
        assert decision.recommended.candidate.label == "gclip"
        assert decision.tied == [decision.recommended]
        assert decision.rival is not None and decision.rival.candidate.label == "yours"
    assert decide(ranking, "heavy-tailed").clipping_needed
    assert not decide(ranking, "light-tailed").clipping_needed


def test_tie_goes_to_clipping_only_under_heavy_tails() -> None:
    ranking = [
        finalist("gclip", (1.0, 1.2, 0.8)),
        finalist("yours", (1.05, 1.25, 0.85)),
        finalist("adamw", (3.0, 3.0)),
    ]
    heavy = decide(ranking, "heavy-tailed")
    assert heavy.recommended.candidate.label == "gclip"
    assert not heavy.clipping_needed  # tied with the unclipped baseline: not shown to be needed
    light = decide(ranking, "light-tailed")
    assert light.recommended.candidate.label == "yours"
    assert "no clipping is needed" in light.reason
    assert light.rival is not None and light.rival.candidate.clipped


def test_a_tie_of_clipped_finalists_under_light_tails_does_not_claim_an_unclipped_pick() -> None:
    """synthetic-rates' advice: clipped Adam and the config's GClip tied, AdamW behind, noise
    inconclusive: the best tied finalist is recommended, and the reason says why."""
    ranking = [
        finalist("clip-adam", (0.0010, 0.0020, 0.0030)),
        finalist("gclip", (0.0010, 0.0060, 0.0130)),
        finalist("adamw", (0.0050, 0.0060, 0.0070), {"name": "adamw"}),
    ]
    decision = decide(ranking, "inconclusive")
    assert decision.recommended.candidate.label == "clip-adam"
    assert [f.candidate.label for f in decision.tied] == ["clip-adam", "gclip"]
    assert "every tied finalist clips, so the best of them" in decision.reason
    assert "unclipped" not in decision.reason
