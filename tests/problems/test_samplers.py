"""The torch noise samplers against scipy's distributions: Kolmogorov-Smirnov tests at fixed seeds.

Each sampler draws n = 2000 values from a seeded generator and is compared with the scipy
distribution it claims to sample (p-value above 0.01). A test per family also checks that the
KS test at this n rejects a nearby wrong distribution, so a passing test means something.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from tailclip.problems.samplers import (
    NOISE_FAMILIES,
    isotropic_stable_vectors,
    sample_noise,
    sample_pareto,
    sample_skewed,
    sample_stable,
    sample_student_t,
)

N = 2000
P_MIN = 0.01


def draws(fn, *args, seed: int = 1, **kwargs) -> np.ndarray:
    return fn((N,), *args, generator=torch.Generator().manual_seed(seed), **kwargs).numpy()


def ks_pvalue(sample: np.ndarray, cdf) -> float:
    return float(st.kstest(sample, cdf).pvalue)


@pytest.mark.parametrize(
    "alpha,beta", [(1.5, 0.0), (1.2, 0.5), (1.0, 0.0), (1.0, 0.7), (0.7, -0.3), (2.0, 0.0)]
)
def test_stable_matches_scipy_levy_stable_s1(alpha: float, beta: float) -> None:
    x = draws(sample_stable, alpha, beta)
    assert ks_pvalue(x, st.levy_stable(alpha, beta).cdf) > P_MIN


def test_stable_ks_rejects_a_wrong_tail_index() -> None:
    x = draws(sample_stable, 1.5, 0.0)
    assert ks_pvalue(x, st.levy_stable(1.1, 0.0).cdf) < P_MIN


def test_stable_alpha_two_is_gaussian_with_variance_two() -> None:
    x = draws(sample_stable, 2.0, 0.0, seed=3)
    assert ks_pvalue(x, st.norm(scale=math.sqrt(2.0)).cdf) > P_MIN


@pytest.mark.parametrize("alpha", [1.5, 1.1, 2.5])
def test_pareto_is_symmetric_with_lomax_magnitude(alpha: float) -> None:
    x = draws(sample_pareto, alpha)
    lomax = st.lomax(alpha)
    assert ks_pvalue(np.abs(x), lomax.cdf) > P_MIN
    # The symmetric law: P(X <= x) = 1/2 P(|X| >= -x) for x < 0, 1 - 1/2 P(|X| > x) otherwise.
    cdf = lambda v: np.where(v < 0, 0.5 * lomax.sf(-v), 1.0 - 0.5 * lomax.sf(v))
    assert ks_pvalue(x, cdf) > P_MIN
    assert st.binomtest(int((x > 0).sum()), N, 0.5).pvalue > P_MIN


def test_pareto_alpha_1_5_is_the_repository_density() -> None:
    """3/4 (1 + |x|)^-2.5 integrates to the CDF 1 - 1/2 (1 + x)^-1.5 for x >= 0."""
    x = draws(sample_pareto, 1.5, seed=7)
    tail = lambda v: 0.5 * (1 + np.abs(v)) ** -1.5
    cdf = lambda v: np.where(v < 0, tail(v), 1.0 - tail(v))
    assert ks_pvalue(x, cdf) > P_MIN
    assert ks_pvalue(np.abs(x), st.lomax(2.0).cdf) < P_MIN


@pytest.mark.parametrize("df", [1.5, 3.0, 10.0])
def test_student_t_matches_scipy(df: float) -> None:
    x = draws(sample_student_t, df)
    assert ks_pvalue(x, st.t(df).cdf) > P_MIN


def test_student_t_ks_rejects_a_wrong_df() -> None:
    assert ks_pvalue(draws(sample_student_t, 1.5), st.t(4.0).cdf) < P_MIN


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_skewed_is_lomax_minus_its_mean(alpha: float) -> None:
    x = draws(sample_skewed, alpha)
    assert ks_pvalue(x, st.lomax(alpha, loc=-1.0 / (alpha - 1.0)).cdf) > P_MIN
    assert ks_pvalue(-x, st.lomax(alpha, loc=-1.0 / (alpha - 1.0)).cdf) < P_MIN  # asymmetric


def test_gaussian_family_is_standard_normal() -> None:
    x = sample_noise("gaussian", (N,), generator=torch.Generator().manual_seed(1)).numpy()
    assert ks_pvalue(x, st.norm().cdf) > P_MIN


def test_sample_noise_dispatches_with_the_same_stream() -> None:
    for family, fn in [
        ("stable", lambda s, g: sample_stable(s, 1.5, 0.0, g)),
        ("pareto", lambda s, g: sample_pareto(s, 1.5, g)),
        ("student_t", lambda s, g: sample_student_t(s, 3.0, g)),
        ("skewed", lambda s, g: sample_skewed(s, 1.5, g)),
    ]:
        a = sample_noise(family, (4, 5), alpha=1.5, df=3.0, generator=torch.Generator().manual_seed(2))
        b = fn((4, 5), torch.Generator().manual_seed(2))
        assert a.shape == (4, 5) and a.dtype == torch.float64
        assert torch.equal(a, b), family
    assert set(NOISE_FAMILIES) == {"stable", "pareto", "student_t", "gaussian", "skewed"}


def test_isotropic_stable_vectors_have_unit_scale_stable_marginals_and_uniform_directions() -> None:
    x = isotropic_stable_vectors(N, 3, 1.5, generator=torch.Generator().manual_seed(1)).numpy()
    for i in range(3):
        assert ks_pvalue(x[:, i], st.levy_stable(1.5, 0.0).cdf) > P_MIN
    directions = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.abs(directions.mean(axis=0)).max() < 4 / math.sqrt(
        N
    )  # uniform on the sphere: mean 0, sd 1/sqrt(3N)
    # Coordinates share one stable scale: not independent, their norms' tail is still alpha.
    assert np.corrcoef(np.abs(x[:, 0]) ** 0.25, np.abs(x[:, 1]) ** 0.25)[0, 1] > 0.2


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: sample_stable((2,), 2.5), "alpha"),
        (lambda: sample_stable((2,), 1.5, beta=1.5), "beta"),
        (lambda: sample_pareto((2,), 0.0), "alpha"),
        (lambda: sample_student_t((2,), -1.0), "df"),
        (lambda: sample_skewed((2,), 1.0), "alpha"),
        (lambda: sample_noise("cauchy", (2,)), "noise family"),
    ],
)
def test_invalid_parameters_are_one_line_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
