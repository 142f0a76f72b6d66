"""Moment diagnostics of a gradient-noise sample (``../shared/papers.md``, section Diagnostics).

For noise samples ``xi_1..xi_n`` (scalars, or vectors with Euclidean norms):

* Running variance ``V_m`` against the sample size ``m`` (Zhang et al., NeurIPS 2020, Fig. 1d/h):
  flat for finite variance, growing like ``m^(2/alpha - 1)`` for alpha-stable noise.
* Max-to-sum ratio ``R_m(p) = max_{j<=m} ||xi_j||^p / sum_{j<=m} ||xi_j||^p``: tends to 0 iff
  ``E||xi||^p`` is finite (O'Brien 1980); about ``log m / m`` for Gaussian noise and ``p = 2``.
* Outlier ratios of the clipped-Adam repository: the fractions of noise norms above
  ``Q3 + 1.5 IQR`` and ``Q3 + 3 IQR``, divided by their Gaussian values 0.0035 and 1.2e-6.
* A Gaussian reference: norms of ``N(0, diag(v))`` vectors with the noise's per-coordinate
  variances ``v``, the light-tailed law to compare a noise-norm histogram with.
* The gradient noise scale of McCandlish et al. (2018, App. A) from two batch sizes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tailclip.noise.estimators import as_samples, sample_norms

GAUSSIAN_MILD_OUTLIER_FRACTION = 0.0035
GAUSSIAN_EXTREME_OUTLIER_FRACTION = 1.2e-6


def _log_grid(n: int, first: int, num: int | None) -> np.ndarray:
    """Sample sizes ``first..n``: all of them, or about ``num`` log-spaced ones."""
    if num is None or num >= n - first + 1:
        return np.arange(first, n + 1)
    if isinstance(num, bool) or num < 2:
        raise ValueError(f"Invalid num: {num!r}; allowed: an integer >= 2 or None")
    return np.unique(np.geomspace(first, n, num=num).round().astype(np.int64))


def running_variance(x: Any, *, center: bool = True, num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(m, V_m)``: the variance of the first ``m`` samples, for growing ``m``.

    Scalars: the sample variance; vectors: its trace ``V_m = (1/(m-1)) sum_{j<=m} ||x_j - mean_m||^2``
    (``m >= 2``). With ``center=False`` the mean is known to be zero (noise measured about the
    mean gradient): ``V_m = (1/m) sum_{j<=m} ||x_j||^2`` (``m >= 1``), which also applies to a
    sample of noise norms. ``num`` keeps about that many log-spaced ``m``.
    """
    arr = as_samples(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    n = arr.shape[0]
    if not center:
        m = _log_grid(n, 1, num)
        sums = np.cumsum(np.einsum("ij,ij->i", arr, arr))
        return m, sums[m - 1] / m
    if n < 2:
        raise ValueError(f"Invalid x: n = {n} samples; allowed: n >= 2 for a centered variance")
    shifted = arr - arr[0]  # shifting by one sample keeps the cumulative sums well conditioned
    m = _log_grid(n, 2, num)
    s1 = np.cumsum(shifted, axis=0)[m - 1]
    s2 = np.cumsum(np.einsum("ij,ij->i", shifted, shifted))[m - 1]
    return m, (s2 - np.einsum("ij,ij->i", s1, s1) / m) / (m - 1)


def _relative_powers(x: Any, p: float) -> np.ndarray:
    """``(||x_j|| / max_k ||x_k||)^p``: the ratios below do not depend on the scale, and this
    keeps the powers of huge norms finite."""
    norms = sample_norms(as_samples(x))
    peak = float(norms.max())
    return (norms / peak) ** p if peak > 0 and math.isfinite(peak) else norms**p


def max_to_sum_ratio(x: Any, p: float = 2.0, *, num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(m, R_m(p))`` with ``R_m(p) = max_{j<=m} ||x_j||^p / sum_{j<=m} ||x_j||^p`` in the given order."""
    if not p > 0:
        raise ValueError(f"Invalid p: {p}; allowed: p > 0")
    powers = _relative_powers(x, p)
    m = _log_grid(powers.shape[0], 1, num)
    with np.errstate(invalid="ignore"):
        ratio = np.maximum.accumulate(powers)[m - 1] / np.cumsum(powers)[m - 1]
    return m, np.nan_to_num(ratio, nan=1.0)


def loglog_slope(m: np.ndarray, values: np.ndarray, m_min: int = 1) -> float:
    """Least-squares slope of ``log values`` against ``log m`` over ``m >= m_min`` and positive values.

    Points are reweighted to be uniform in ``log m`` (dense grids would otherwise be dominated
    by the largest ``m``). Returns NaN with fewer than 3 usable points.
    """
    m = np.asarray(m, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = (m >= m_min) & (values > 0) & np.isfinite(values)
    if keep.sum() < 3:
        return math.nan
    log_m, log_v = np.log(m[keep]), np.log(values[keep])
    grid = np.unique(np.searchsorted(log_m, np.linspace(log_m[0], log_m[-1], 64)).clip(0, log_m.size - 1))
    if grid.size < 3:
        return math.nan
    return float(np.polyfit(log_m[grid], log_v[grid], 1)[0])


def max_to_sum_slope(
    x: Any, p: float = 2.0, *, n_perm: int = 32, seed: int = 0, m_min: int | None = None
) -> float:
    """Trend of ``R_m(p)``: the log-log slope of its geometric mean over ``n_perm`` random orders.

    The samples are independent, so every order is an equally valid path; averaging
    ``log R_m`` over permutations removes most of the path noise. About ``-1`` when the
    ``p``-th moment is finite and light (Gaussian), about ``0`` when it is infinite.
    ``m_min`` (default ``max(10, n // 100)``) skips the small-sample start.
    """
    if not p > 0:
        raise ValueError(f"Invalid p: {p}; allowed: p > 0")
    powers = _relative_powers(x, p)
    n = powers.shape[0]
    if m_min is None:
        m_min = max(10, n // 100)
    if n < m_min + 2:
        return math.nan
    rng = np.random.default_rng(seed)
    n_perm = max(1, min(n_perm, (1 << 22) // n))
    paths = powers[np.argsort(rng.random((n_perm, n)), axis=1)]
    m = _log_grid(n, 1, 128)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(
            np.maximum.accumulate(paths, axis=1)[:, m - 1] / np.cumsum(paths, axis=1)[:, m - 1]
        )
    return loglog_slope(m, np.exp(np.nanmean(log_ratio, axis=0)), m_min)


@dataclass(frozen=True)
class OutlierRatios:
    """Outlier fractions of the noise norms relative to a Gaussian (clipped-Adam repository).

    ``rho_mR = P(r > Q3 + 1.5 IQR) / 0.0035`` and ``rho_eR = P(r > Q3 + 3 IQR) / 1.2e-6``,
    ``IQR = Q3 - Q1`` of the norms ``r`` (linear-interpolation quartiles): about 1 for a
    Gaussian-shaped sample, much larger for heavy tails.
    """

    rho_mR: float
    rho_eR: float
    mild_fraction: float
    extreme_fraction: float
    q1: float
    q3: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def outlier_ratios(x: Any) -> OutlierRatios:
    """:class:`OutlierRatios` of the norms of ``x`` (scalars: ``|x_j|``; vectors: ``||x_j||``)."""
    norms = sample_norms(as_samples(x))
    q1, q3 = np.percentile(norms, [25.0, 75.0])
    iqr = q3 - q1
    mild = float(np.mean(norms > q3 + 1.5 * iqr))
    extreme = float(np.mean(norms > q3 + 3.0 * iqr))
    return OutlierRatios(
        mild / GAUSSIAN_MILD_OUTLIER_FRACTION,
        extreme / GAUSSIAN_EXTREME_OUTLIER_FRACTION,
        mild,
        extreme,
        float(q1),
        float(q3),
    )


def gaussian_reference(source: Any, n: int, seed: int = 0, *, exact_coords: int = 4096) -> np.ndarray:
    """Norms of ``n`` draws of ``z ~ N(0, diag(v))``: the Gaussian with the noise's coordinate variances.

    ``source``: per-coordinate variances ``v`` (1-D, ``v_i >= 0``) or noise vectors (2-D, one per
    row; ``v`` is their per-coordinate mean square, the noise being centred). ``||z||^2 =
    sum_i v_i z_i^2``; the ``exact_coords`` largest ``v_i`` are drawn exactly and the remaining sum
    of many small independent terms by its normal limit (mean ``sum v_i``, variance
    ``2 sum v_i^2``), so a model with millions of parameters costs ``O(n exact_coords)``.
    The reference ignores correlations between coordinates: correlated Gaussian noise with the
    same variances has the same mean squared norm but a wider norm distribution (fewer
    effective dimensions), so compare the tails' decay, not the width.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Invalid n: {n!r}; allowed: an integer >= 1")
    arr = as_samples(source, "source")
    variances = np.mean(arr * arr, axis=0) if arr.ndim == 2 else arr
    if (variances < 0).any():
        raise ValueError(
            "Invalid source: negative variances; allowed: 1-D variances >= 0 or 2-D noise vectors"
        )
    rng = np.random.default_rng(seed)
    order = np.argsort(variances)[::-1]
    top, rest = variances[order[:exact_coords]], variances[order[exact_coords:]]
    squared = np.zeros(n)
    rows = max(1, (1 << 22) // max(1, top.size))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        z = rng.standard_normal((stop - start, top.size))
        squared[start:stop] = (z * z) @ top
    if rest.size:
        squared += np.maximum(rest.sum() + math.sqrt(2.0 * np.dot(rest, rest)) * rng.standard_normal(n), 0.0)
    return np.sqrt(squared)


@dataclass(frozen=True)
class NoiseScale:
    """McCandlish et al. (2018, App. A) from squared gradient norms at batch sizes ``b_small < b_big``.

    ``g2 = |G|^2`` (true gradient), ``trace = S = tr(Sigma)`` (per-example covariance trace) and
    ``b_simple = S / |G|^2``. Unbiased for ``|G|^2`` and ``S`` separately, but a ratio is a
    measurement only inside its domain ``S >= 0``, ``|G|^2 > 0``: outside it (``|G|^2`` estimated
    at or below 0, as under infinite-variance noise, whose squared norms do not average out)
    ``b_simple`` is NaN and ``undefined`` says why (``""`` when it is defined).
    """

    g2: float
    trace: float
    b_simple: float
    b_small: int
    b_big: int
    undefined: str = ""

    def to_dict(self) -> dict[str, float | str | None]:
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()
        }

    def text(self) -> str:
        """``b_simple`` to 4 significant digits, or ``undefined (<reason>)``."""
        return f"undefined ({self.undefined})" if self.undefined else f"{self.b_simple:.4g}"


def noise_scale_from_squared_norms(sq_small: float, sq_big: float, b_small: int, b_big: int) -> NoiseScale:
    """``|G|^2 = (Bb |G_Bb|^2 - Bs |G_Bs|^2) / (Bb - Bs)``, ``S = (|G_Bs|^2 - |G_Bb|^2) / (1/Bs - 1/Bb)``.

    ``sq_small``, ``sq_big``: mean squared norms of gradient estimates at batch sizes
    ``b_small < b_big``.
    """
    if not 0 < b_small < b_big:
        raise ValueError(
            f"Invalid batch sizes: b_small={b_small}, b_big={b_big}; allowed: 0 < b_small < b_big"
        )
    g2 = float((b_big * sq_big - b_small * sq_small) / (b_big - b_small))
    trace = float((sq_small - sq_big) / (1.0 / b_small - 1.0 / b_big))
    if not (math.isfinite(g2) and math.isfinite(trace)):
        undefined = "the squared gradient norms are not finite"
    elif g2 <= 0:
        undefined = (
            f"|G|^2 estimated at {g2:.3g} <= 0: the noise swamps the mean gradient, "
            "as under infinite-variance noise"
        )
    elif trace < 0:
        undefined = f"tr(Sigma) estimated at {trace:.3g} < 0: the larger batch is the noisier"
    else:
        undefined = ""
    b_simple = math.nan if undefined else trace / g2
    return NoiseScale(g2, trace, float(b_simple), int(b_small), int(b_big), undefined)


def noise_scale(grad_small: Any, grad_big: Any, b_small: int, b_big: int) -> NoiseScale:
    """:class:`NoiseScale` from gradient estimates at two batch sizes.

    ``grad_small`` / ``grad_big``: one gradient vector (1-D) or several independent estimates
    (2-D, one per row, their squared norms averaged) at batch sizes ``b_small < b_big``.
    """
    small = as_samples(grad_small, "grad_small")
    big = as_samples(grad_big, "grad_big")
    if small.shape[-1] != big.shape[-1]:
        raise ValueError(
            f"Invalid grad_big: dimension {big.shape[-1]} differs from grad_small's {small.shape[-1]}"
        )
    sq_small = float(np.mean(np.sum(np.atleast_2d(small) ** 2, axis=1)))
    sq_big = float(np.mean(np.sum(np.atleast_2d(big) ** 2, axis=1)))
    return noise_scale_from_squared_norms(sq_small, sq_big, b_small, b_big)


def larger_batch_noise(x: Any, factor: int = 4) -> np.ndarray:
    """Noise at batch size ``factor * B`` from noise at ``B``: means of consecutive groups of ``factor``.

    For a batch-mean loss the gradient of a batch of ``factor B`` examples is the mean of the
    gradients of ``factor`` disjoint batches of ``B``, so about the same ``gbar`` its noise is the
    mean of their noises (exactly, unless BatchNorm couples the examples). Leftover samples are
    dropped.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"Invalid factor: {factor!r}; allowed: an integer >= 1")
    arr = as_samples(x)
    groups = arr.shape[0] // factor
    if groups < 1:
        raise ValueError(f"Invalid x: n = {arr.shape[0]} samples; allowed: n >= factor = {factor}")
    return arr[: groups * factor].reshape(groups, factor, *arr.shape[1:]).mean(axis=1)
