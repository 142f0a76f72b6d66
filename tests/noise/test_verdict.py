"""verdict: each documented rule, on hand-made tail indices, and on generated noise end to end."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import levy_stable

from tailclip.noise import TailIndex, larger_batch_noise, max_to_sum_slope, tail_index, verdict


def ti(alpha: float, low: float, high: float) -> TailIndex:
    return TailIndex(alpha, low, high, "mohammadi", 1000, 0.95, k1=10)


HEAVY, LIGHT, MIDDLE = ti(1.5, 1.4, 1.6), ti(2.0, 1.95, 2.0), ti(1.85, 1.75, 1.98)


def test_tail_index_alone() -> None:
    assert verdict(HEAVY).label == "heavy-tailed"
    assert verdict(LIGHT).label == "light-tailed"
    assert verdict(MIDDLE).label == "inconclusive"
    assert verdict(ti(1.85, 1.8, 1.89)).label == "heavy-tailed"  # high < 1.9
    assert verdict(ti(1.95, 1.9, 2.0)).label == "light-tailed"  # low >= 1.9
    assert verdict(MIDDLE, threshold=1.7).label == "light-tailed"


def test_max_to_sum_vote() -> None:
    assert verdict(HEAVY, ratio_slope=-0.9).label == "inconclusive"  # contradicts: finite variance
    assert verdict(HEAVY, ratio_slope=-0.05).label == "heavy-tailed"
    assert verdict(HEAVY, ratio_slope=-0.35).label == "heavy-tailed"  # abstains
    assert verdict(LIGHT, ratio_slope=-0.05).label == "inconclusive"
    assert verdict(MIDDLE, ratio_slope=-0.9).label == "light-tailed"  # consistent with 2, R_m decays
    assert verdict(MIDDLE, ratio_slope=-0.35).label == "inconclusive"
    assert verdict(MIDDLE, ratio_slope=-0.9, tail_4b=ti(1.5, 1.4, 1.6)).label == "inconclusive"
    assert verdict(LIGHT, ratio_slope=float("nan")).votes == {"tail_index": "light"}
    out = verdict(HEAVY, ratio_slope=-0.05)
    assert out.votes == {"tail_index": "heavy", "max_to_sum": "heavy"} and len(out.reasons) == 2


def test_batch_size_vote() -> None:
    rising = ti(1.97, 1.9, 2.0)
    assert verdict(HEAVY, tail_4b=rising).votes["batch_size"] == "light"
    assert verdict(HEAVY, tail_4b=rising).label == "inconclusive"
    assert verdict(HEAVY, tail_4b=ti(1.45, 1.3, 1.6)).label == "heavy-tailed"
    assert verdict(HEAVY, tail_4b=ti(1.45, 1.3, 1.6)).votes["batch_size"] == "heavy"
    assert verdict(ti(1.7, 1.6, 1.8), tail_4b=ti(1.92, 1.85, 1.99)).votes["batch_size"] == "light"
    assert verdict(LIGHT, tail_4b=ti(2.0, 1.9, 2.0)).votes["batch_size"] == "abstain"
    assert verdict(HEAVY, tail_4b=ti(1.7, 1.65, 1.75)).votes["batch_size"] == "heavy"  # rises, stays heavy
    assert verdict(MIDDLE, tail_4b=ti(1.88, 1.8, 1.95)).votes["batch_size"] == "abstain"
    # a small alpha at B that rises under averaging, with R_m decaying: finite variance
    assert verdict(HEAVY, tail_4b=rising, ratio_slope=-0.8).label == "light-tailed"


def test_to_dict_and_threshold_error() -> None:
    d = verdict(HEAVY, tail_4b=ti(1.5, 1.3, 1.7), ratio_slope=0.0).to_dict()
    assert d["label"] == "heavy-tailed" and d["evidence"]["alpha_4b"] == 1.5 and len(d["reasons"]) == 3
    with pytest.raises(ValueError, match="Invalid threshold"):
        verdict(HEAVY, threshold=2.5)


def full_verdict(x: np.ndarray) -> str:
    tail = tail_index(x, center=True)
    tail_4b = tail_index(larger_batch_noise(x, 4), center=True)
    return verdict(tail, tail_4b=tail_4b, ratio_slope=max_to_sum_slope(x)).label


def test_end_to_end_on_generated_noise() -> None:
    rng = np.random.default_rng(0)
    assert full_verdict(levy_stable.rvs(1.5, 0.0, size=(4000, 16), random_state=rng)) == "heavy-tailed"
    assert full_verdict(rng.standard_normal((4000, 16)) * np.exp(rng.normal(size=16))) == "light-tailed"
    assert full_verdict(rng.standard_t(6.0, size=(4000, 16))) == "light-tailed"
