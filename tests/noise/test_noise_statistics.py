"""Moment diagnostics: running variance, max-to-sum ratio, outlier ratios, Gaussian reference, noise scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, levy_stable

from tailclip.noise import (
    gaussian_reference,
    larger_batch_noise,
    loglog_slope,
    max_to_sum_ratio,
    max_to_sum_slope,
    noise_scale,
    noise_scale_from_squared_norms,
    outlier_ratios,
    running_variance,
)


def test_running_variance_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = 1e3 + rng.standard_normal(500)  # a large mean: the shifted sums must not cancel
    m, v = running_variance(x)
    assert m[0] == 2 and m[-1] == 500
    for size in (2, 3, 17, 500):
        assert v[size - 2] == pytest.approx(np.var(x[:size], ddof=1), rel=1e-9)
    vectors = rng.standard_normal((300, 5)) * [1, 2, 3, 4, 5]
    m, v = running_variance(vectors)
    for size in (2, 50, 300):
        assert v[size - 2] == pytest.approx(np.var(vectors[:size], axis=0, ddof=1).sum(), rel=1e-9)
    m, v = running_variance(vectors, center=False)
    assert m[0] == 1
    for size in (1, 50, 300):
        assert v[size - 1] == pytest.approx(np.mean(np.sum(vectors[:size] ** 2, axis=1)), rel=1e-12)
    m, v = running_variance(vectors, num=20)
    assert len(m) <= 20 and m[0] == 2 and m[-1] == 300 and np.all(np.diff(m) > 0)


def test_running_variance_flat_for_gaussian_growing_for_stable() -> None:
    # one path jumps at every new maximum: judge the median slope over independent paths
    flat, growing = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        gauss = rng.standard_normal((10_000, 4))
        stable = levy_stable.rvs(1.2, 0.0, size=(10_000, 4), random_state=rng)
        flat.append(loglog_slope(*running_variance(gauss), m_min=100))
        growing.append(loglog_slope(*running_variance(stable), m_min=100))
    assert max(abs(s) for s in flat) < 0.1
    assert np.median(growing) > 0.3  # theory: m^(2/alpha - 1) = m^0.67


def test_max_to_sum_ratio_matches_loop() -> None:
    x = np.random.default_rng(3).standard_normal((50, 4))
    m, r = max_to_sum_ratio(x, p=3.0)
    norms = [math.sqrt(sum(c * c for c in row)) for row in x]
    for size in (1, 2, 10, 50):
        powers = [n**3 for n in norms[:size]]
        assert r[size - 1] == pytest.approx(max(powers) / sum(powers), rel=1e-12)
    assert r[0] == 1.0


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_max_to_sum_is_scale_invariant_at_extreme_scales(scale: float) -> None:
    x = np.random.default_rng(4).standard_normal((400, 3))
    _, reference = max_to_sum_ratio(x)
    _, scaled = max_to_sum_ratio(x * scale)
    np.testing.assert_allclose(scaled, reference, rtol=1e-12)
    assert max_to_sum_slope(x * scale) == pytest.approx(max_to_sum_slope(x), rel=1e-9)


def test_max_to_sum_decreases_for_gaussian_not_for_cauchy() -> None:
    rng = np.random.default_rng(4)
    gauss, cauchy = rng.standard_normal(50_000), rng.standard_cauchy(50_000)
    _, r_gauss = max_to_sum_ratio(gauss)
    _, r_cauchy = max_to_sum_ratio(cauchy)
    assert r_gauss[-1] < 1e-3 and r_gauss[-1] < r_gauss[999] < r_gauss[99]
    assert max_to_sum_slope(gauss) < -0.7
    assert max_to_sum_slope(cauchy) > -0.25
    assert max_to_sum_slope(cauchy, p=0.5) < -0.3  # the 1/2-moment of a Cauchy is finite


def test_loglog_slope_recovers_power_laws() -> None:
    m = np.arange(1, 10_001)
    assert loglog_slope(m, 3.0 * m**-0.7) == pytest.approx(-0.7)
    assert loglog_slope(m, m**0.4, m_min=100) == pytest.approx(0.4)
    assert math.isnan(loglog_slope(m[:2], m[:2]))


def test_outlier_ratios_against_hand_computation() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0, 12.0, -30.0])
    norms = sorted(abs(v) for v in x)

    def quantile(q: float) -> float:  # linear interpolation between order statistics
        pos = (len(norms) - 1) * q
        lo = math.floor(pos)
        return norms[lo] + (pos - lo) * (norms[min(lo + 1, len(norms) - 1)] - norms[lo])

    q1, q3 = quantile(0.25), quantile(0.75)
    mild = sum(r > q3 + 1.5 * (q3 - q1) for r in norms) / len(norms)
    extreme = sum(r > q3 + 3.0 * (q3 - q1) for r in norms) / len(norms)
    out = outlier_ratios(x)
    assert (out.q1, out.q3) == pytest.approx((q1, q3))
    assert out.mild_fraction == pytest.approx(mild) and out.extreme_fraction == pytest.approx(extreme)
    assert out.rho_mR == pytest.approx(mild / 0.0035) and out.rho_eR == pytest.approx(extreme / 1.2e-6)
    assert mild == 2 / 12 and extreme == 2 / 12


def test_outlier_ratio_is_about_one_for_gaussian_large_for_stable() -> None:
    # norms of high-dimensional Gaussian vectors are close to normal: rho_mR near 1
    gauss = np.random.default_rng(5).standard_normal((40_000, 100))
    rho_gauss = outlier_ratios(gauss).rho_mR
    assert 0.3 < rho_gauss < 3.0
    stable = levy_stable.rvs(1.5, 0.0, size=(20_000, 100), random_state=np.random.default_rng(6))
    assert outlier_ratios(stable).rho_mR > 10 * rho_gauss


def test_gaussian_reference_matches_its_law() -> None:
    variances = np.exp(np.random.default_rng(7).normal(0.0, 1.0, size=6000))
    exact = gaussian_reference(variances, 4000, seed=1, exact_coords=10_000)
    split = gaussian_reference(variances, 4000, seed=2, exact_coords=500)
    assert np.mean(exact**2) == pytest.approx(variances.sum(), rel=0.01)
    assert np.var(exact**2) == pytest.approx(2 * np.sum(variances**2), rel=0.1)
    assert ks_2samp(exact, split).pvalue > 0.01
    assert np.array_equal(
        gaussian_reference(variances, 10, seed=3), gaussian_reference(variances, 10, seed=3)
    )


def test_gaussian_reference_from_noise_vectors() -> None:
    rng = np.random.default_rng(8)
    scales = np.array([0.1, 1.0, 10.0])
    noise = rng.standard_normal((20_000, 3)) * scales
    ref = gaussian_reference(torch.from_numpy(noise), 20_000, seed=0)
    assert ks_2samp(ref, np.linalg.norm(noise, axis=1)).pvalue > 0.01


def test_noise_scale_recovers_known_values() -> None:
    rng = np.random.default_rng(9)
    d, g = 20, np.linspace(-1.0, 1.0, 20)  # |G|^2 = sum g^2
    sigma = np.linspace(0.5, 3.0, d)  # per-example covariance diag(sigma^2): S = sum sigma^2
    b_small, b_big, reps = 4, 64, 20_000
    small = g + rng.standard_normal((reps, d)) * sigma / math.sqrt(b_small)
    big = g + rng.standard_normal((reps, d)) * sigma / math.sqrt(b_big)
    est = noise_scale(small, big, b_small, b_big)
    assert est.g2 == pytest.approx(np.sum(g**2), rel=0.05)
    assert est.trace == pytest.approx(np.sum(sigma**2), rel=0.02)
    assert est.b_simple == pytest.approx(np.sum(sigma**2) / np.sum(g**2), rel=0.07)
    single = noise_scale(small[0], big[0], b_small, b_big)  # 1-D: one estimate each
    assert single.g2 == pytest.approx(
        noise_scale_from_squared_norms(float(small[0] @ small[0]), float(big[0] @ big[0]), b_small, b_big).g2,
        rel=1e-12,
    )


def test_noise_scale_formula() -> None:
    est = noise_scale_from_squared_norms(5.0, 2.0, 2, 8)
    assert est.g2 == pytest.approx((8 * 2.0 - 2 * 5.0) / 6)
    assert est.trace == pytest.approx((5.0 - 2.0) / (1 / 2 - 1 / 8))
    assert est.b_simple == pytest.approx(est.trace / est.g2)
    with pytest.raises(ValueError, match="b_small=8, b_big=8"):
        noise_scale_from_squared_norms(1.0, 1.0, 8, 8)
    with pytest.raises(ValueError, match="dimension 3 differs"):
        noise_scale(np.ones(4), np.ones(3), 1, 2)


def test_larger_batch_noise_is_the_group_mean() -> None:
    x = np.arange(22.0).reshape(11, 2)
    out = larger_batch_noise(x, 4)
    assert out.shape == (2, 2)
    assert np.array_equal(out[1], x[4:8].mean(axis=0))
    with pytest.raises(ValueError, match="factor = 4"):
        larger_batch_noise(np.ones(3), 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: max_to_sum_ratio(np.ones(5), p=0.0), "Invalid p"),
        (lambda: max_to_sum_slope(np.ones(50), p=-1.0), "Invalid p"),
        (lambda: running_variance(np.ones(1)), "n >= 2"),
        (lambda: running_variance(np.ones(10), num=1), "Invalid num"),
        (lambda: gaussian_reference(np.ones(3), 0), "Invalid n"),
        (lambda: gaussian_reference(-np.ones(3), 5), "negative variances"),
        (lambda: outlier_ratios(np.array([np.nan, 1.0])), "NaN or Inf"),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
