"""tail_index: Mohammadi (scalar and vector mode) and Hill, against known laws and plain-loop math."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable

from tailclip.noise import TailIndex, hill_curve, tail_index

ALPHAS = (1.2, 1.5, 1.8)


@pytest.fixture(scope="module")
def stable_scalars() -> dict[float, np.ndarray]:
    return {
        a: levy_stable.rvs(a, 0.0, size=100_000, random_state=np.random.default_rng(11 + i))
        for i, a in enumerate(ALPHAS)
    }


@pytest.fixture(scope="module")
def stable_vectors() -> dict[float, np.ndarray]:
    return {
        a: levy_stable.rvs(a, 0.0, size=(20_000, 16), random_state=np.random.default_rng(21 + i))
        for i, a in enumerate(ALPHAS)
    }


def mohammadi_reference(x: np.ndarray, k1: int) -> float:
    """Cor. 2.4 of Mohammadi et al. (2015) written as plain loops in float64."""
    k2 = len(x) // k1

    def norm(v: object) -> float:
        return math.sqrt(sum(float(c) ** 2 for c in np.atleast_1d(v)))

    sum_log_y = 0.0
    for i in range(k2):
        block = x[i * k1]
        for j in range(1, k1):
            block = block + x[i * k1 + j]
        sum_log_y += math.log(norm(block))
    sum_log_x = sum(math.log(norm(x[k])) for k in range(k1 * k2))
    inverse = (sum_log_y / k2 - sum_log_x / (k1 * k2)) / math.log(k1)
    return min(2.0, 1.0 / inverse) if inverse > 0 else 2.0


@pytest.mark.parametrize("alpha", ALPHAS)
def test_stable_scalars_within_0_06(stable_scalars: dict[float, np.ndarray], alpha: float) -> None:
    est = tail_index(stable_scalars[alpha])
    assert abs(est.alpha - alpha) <= 0.06
    assert est.low <= est.alpha <= est.high
    assert est.high - est.low < 0.15
    assert (est.method, est.n, est.k1, est.ci) == ("mohammadi", 100_000, 10, 0.95)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_stable_vectors_within_0_1(stable_vectors: dict[float, np.ndarray], alpha: float) -> None:
    est = tail_index(stable_vectors[alpha])
    assert abs(est.alpha - alpha) <= 0.1
    assert est.low <= est.alpha <= est.high


def test_gaussian_vectors_with_spread_scales_are_light() -> None:
    rng = np.random.default_rng(3)
    scales = np.exp(rng.normal(0.0, 1.5, size=64))
    x = rng.standard_normal((20_000, 64)) * scales
    assert tail_index(x).alpha >= 1.85
    # the pitfall papers.md warns about: pooling coordinates of different scales looks heavy
    assert tail_index(x.reshape(-1)[:200_000]).alpha < 1.5


def test_matches_plain_loop_reference() -> None:
    rng = np.random.default_rng(5)
    scalars = rng.standard_t(1.5, size=57)  # 57 = 5 * 11 + 2: the remainder is dropped
    vectors = rng.standard_t(1.5, size=(57, 3))
    for x in (scalars, vectors):
        for k1 in (2, 5, 10):
            assert tail_index(x, k1=k1, n_boot=10).alpha == pytest.approx(
                mohammadi_reference(x, k1), rel=1e-12
            )


def test_alpha_is_clipped_to_two() -> None:
    rng = np.random.default_rng(0)
    # alternating signs make block sums tiny: 1/alpha < 1/2 before clipping
    x = np.abs(rng.standard_normal(1000)) * np.resize([1.0, -1.0], 1000)
    est = tail_index(x)
    assert est.alpha == 2.0 and est.high == 2.0
    assert 0.0 < tail_index(rng.standard_cauchy(10_000) ** 3).alpha < 0.5


def test_center_removes_a_common_offset() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5000, 8))
    offset = x + 0.3  # a shared offset: block sums drift by k1 * 0.3
    assert tail_index(offset).alpha < 1.9
    assert tail_index(offset, center=True).alpha >= 1.95


def test_bootstrap_is_seeded_and_torch_input_agrees() -> None:
    x = np.random.default_rng(1).standard_t(2.5, size=(3000, 4))
    a, b, c = tail_index(x, seed=0), tail_index(x, seed=0), tail_index(x, seed=1)
    assert a == b and (a.low, a.high) != (c.low, c.high) and a.alpha == c.alpha
    assert tail_index(torch.from_numpy(x).float()).alpha == pytest.approx(a.alpha, abs=1e-5)
    narrow = tail_index(x, ci=0.5)
    assert a.low <= narrow.low <= narrow.high <= a.high


def test_hill_on_pareto() -> None:
    rng = np.random.default_rng(9)
    for alpha in (1.5, 3.0):
        x = (rng.pareto(alpha, size=100_000) + 1.0) * rng.choice([-1.0, 1.0], size=100_000)
        est = tail_index(x, method="hill", k=10_000)
        assert abs(est.alpha - alpha) <= 0.05 * alpha
        assert est.low < alpha < est.high
        default = tail_index(x, method="hill")
        assert default.k == math.ceil(math.sqrt(100_000)) and abs(default.alpha - alpha) <= 0.2 * alpha


def test_hill_formula_and_plot_data() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 3))
    norms = sorted((math.sqrt(sum(c * c for c in row)) for row in x), reverse=True)
    est = tail_index(x, method="hill", k=7)
    reference = 1.0 / (sum(math.log(r) for r in norms[:7]) / 7 - math.log(norms[7]))
    assert est.alpha == pytest.approx(reference, rel=1e-12)
    k, alpha = hill_curve(np.array(norms))
    assert list(k) == list(range(1, 40))
    assert dict(zip(est.hill_k, est.hill_alpha)) == pytest.approx(
        {int(i): float(alpha[i - 1]) for i in est.hill_k}
    )
    assert est.hill_k[0] == 1 and est.hill_k[-1] == 39 and len(est.hill_k) <= 200
    half = 1.959963984540054 / math.sqrt(7)
    assert (est.low, est.high) == pytest.approx((est.alpha / (1 + half), est.alpha / (1 - half)))


def test_to_dict_is_plain_data() -> None:
    est = tail_index(np.random.default_rng(0).standard_normal(200), method="hill", k=2)
    d = est.to_dict()
    assert d["method"] == "hill" and isinstance(d["hill_k"], list)
    assert d["high"] is None  # z / sqrt(2) > 1: no finite upper bound
    assert (
        TailIndex(
            **{**d, "high": math.inf, "hill_k": tuple(d["hill_k"]), "hill_alpha": tuple(d["hill_alpha"])}
        )
        == est
    )


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.ones(19), {}, "n = 19 samples; allowed: n >= 2 \\* k1 = 20"),
        (np.ones(50), {"k1": 30}, "n >= 2 \\* k1 = 60"),
        (np.array([1.0, np.nan] * 20), {}, "NaN or Inf"),
        (np.array([1.0, np.inf] * 20), {}, "NaN or Inf"),
        (np.ones((4, 5, 6)), {}, "shape \\(4, 5, 6\\)"),
        (np.ones((40, 0)), {}, "empty"),
        (np.ones(40), {"method": "pickands"}, "Invalid method: 'pickands'"),
        (np.ones(40), {"k1": 1}, "Invalid k1"),
        (np.ones(40), {"ci": 1.0}, "Invalid ci"),
        (np.ones(40), {"n_boot": 0}, "Invalid n_boot"),
        (np.arange(1.0, 41.0), {"method": "hill", "k": 40}, "Invalid k: 40"),
        (np.array([0.0, 1.0, 2.0] * 14), {}, "exactly zero"),
        (np.zeros(40), {}, "degenerate sample, 1 distinct value"),
    ],
)
def test_errors(x: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tail_index(x, **kwargs)


@pytest.mark.parametrize("method", ["mohammadi", "hill"])
@pytest.mark.parametrize(
    "x",
    [
        pytest.param(torch.ones(200), id="constant"),
        pytest.param(torch.ones(200, 3), id="constant-vectors"),
        pytest.param(torch.tensor([1.0, 2.0] * 100), id="two-valued"),
        pytest.param(torch.tensor([[1.0, -1.0], [3.0, 0.5]] * 50), id="two-valued-vectors"),
    ],
)
def test_degenerate_samples_are_refused_not_answered(x: torch.Tensor, method: str) -> None:
    with pytest.raises(ValueError, match="degenerate sample, [12] distinct value"):
        tail_index(x, method)


def test_hill_refuses_a_tail_of_equal_norms() -> None:
    x = np.concatenate([np.linspace(0.1, 1.0, 180), np.full(20, 5.0)])
    with pytest.raises(ValueError, match="the k \\+ 1 = 16 largest norms are equal"):
        tail_index(x, "hill")
    assert math.isfinite(tail_index(x, "hill", k=25).alpha)


@pytest.mark.parametrize("method", ["mohammadi", "hill"])
@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("scale", [1e200, 1e-200, 2.0**1000, 1e300])
def test_estimates_are_scale_invariant_for_any_finite_scale(method: str, vector: bool, scale: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 8) if vector else 2000)
    reference = tail_index(x, method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning
        scaled = tail_index(x * scale, method)
    assert math.isfinite(scaled.alpha)
    assert scaled.alpha == pytest.approx(reference.alpha, rel=1e-9)
    assert (scaled.low, scaled.high) == pytest.approx((reference.low, reference.high), rel=1e-9)
