"""Tail-index estimators for gradient noise: Mohammadi et al. (2015) and Hill (1975).

A random vector ``X`` has tail index ``alpha`` when ``P(||X|| > t) ~ t^-alpha``; moments of order
``p < alpha`` are finite. For alpha-stable noise (``alpha in (0, 2]``) a sum of ``K1`` independent
copies is ``K1^(1/alpha)`` times one copy in distribution, which gives the estimator of
Mohammadi, Mohammadpour and Ogata (2015, Cor. 2.4), used on gradient noise by Simsekli, Sagun and
Gurbuzbalaban (2019). With ``K = K1 K2`` samples ``X_1..X_K`` split into ``K2`` consecutive blocks
of ``K1`` and ``Y_i`` the block sums::

    1/alpha = (1 / log K1) [ (1/K2) sum_i log||Y_i|| - (1/K) sum_k log||X_k|| ]

(``|.|`` for scalars). Samples beyond ``K1 K2`` are dropped. The estimate is clipped to
``(0, 2]``: a finite-variance law behaves as ``alpha = 2`` under summation.

Vector mode (``x`` of shape ``(n, d)``) takes Euclidean norms of the vector block sums and of the
vectors, as ``../shared/papers.md`` prescribes: the noise is one vector per minibatch, and
pooling the coordinates of different scales into one scalar sample makes Gaussian noise look
heavy-tailed (a scale mixture of Gaussians is not stable under summation).

Interval: the estimate is the mean of ``K2`` independent block statistics
``c_i = (log||Y_i|| - (1/K1) sum_{k in block i} log||X_k||) / log K1``, so the bootstrap
resamples blocks with replacement (``n_boot`` resamples, one vectorized gather per chunk) and
reports the percentile interval of the clipped ``alpha``.

Hill's estimator (Hill 1975) on the norms ``r_(1) >= r_(2) >= ...`` with ``k`` upper order
statistics: ``1/alpha_k = (1/k) sum_{i<=k} log r_(i) - log r_(k+1)``. It is a second opinion:
it is exact in the Pareto tail but biased upward for stable laws with ``alpha >= 1.5``, whose
tail is reached only far out. Default ``k = ceil(sqrt(n))``; the Hill plot (``alpha_k`` against
``k`` on a log grid) shows how the choice matters. Hill is not clipped (light tails give large
values). Its interval is the asymptotic one, ``sqrt(k) (alpha_k / alpha - 1) -> N(0, 1)``
(Hall 1982), so ``1/alpha`` lies in ``(1/alpha_k)(1 +- z / sqrt(k))``.

Both estimators are scale invariant (``x -> c x`` shifts every log by ``log c``), so the
samples are first divided by a power of two near their largest magnitude: sums and squares
stay in floating-point range for any finite input (``N(0, 1) * 1e200`` gives the same
``alpha`` as ``N(0, 1)``), and the power of two makes the division exact. Degenerate samples
are refused with a ``ValueError`` rather than answered: fewer than :data:`MIN_DISTINCT`
distinct samples (a constant sample would read as ``alpha = 1`` with the interval ``[1, 1]``),
or, for Hill, equal ``k + 1`` largest norms (``1/alpha_k = 0`` to rounding: an infinite estimate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

TAIL_METHODS = ("mohammadi", "hill")
MAX_ALPHA = 2.0
MIN_DISTINCT = 3
_HILL_PLOT_POINTS = 200
_BOOTSTRAP_CHUNK = 1 << 22  # indices gathered per bootstrap chunk (32 MiB of int64)


@dataclass(frozen=True)
class TailIndex:
    """A tail-index estimate ``alpha`` with its ``ci`` interval ``[low, high]``.

    ``n`` is the number of samples given; ``k1`` the block length (Mohammadi), ``k`` the number
    of upper order statistics (Hill). ``hill_k`` / ``hill_alpha`` are the Hill plot (Hill only).
    """

    alpha: float
    low: float
    high: float
    method: str
    n: int
    ci: float
    k1: int | None = None
    k: int | None = None
    hill_k: tuple[int, ...] = ()
    hill_alpha: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite bounds become ``None``)."""
        out = asdict(self)
        for key in ("alpha", "low", "high"):
            out[key] = out[key] if math.isfinite(out[key]) else None
        out["hill_k"] = list(self.hill_k)
        out["hill_alpha"] = [a if math.isfinite(a) else None for a in self.hill_alpha]
        return out


def as_samples(x: Any, name: str = "x") -> np.ndarray:
    """``x`` (tensor, array or nested list) as a finite float64 array of shape ``(n,)`` or ``(n, d)``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"Invalid {name}: shape {arr.shape}; allowed: (n,) scalars or (n, d) vectors")
    if arr.shape[0] == 0 or (arr.ndim == 2 and arr.shape[1] == 0):
        raise ValueError(f"Invalid {name}: shape {arr.shape} is empty; allowed: n >= 1 and d >= 1")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"Invalid {name}: {bad} NaN or Inf entries; allowed: finite values only")
    return arr


def unit_scaled(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``(x / 2^e, e)`` with ``2^e`` the power of two just above ``max |x|`` (``e = 0`` for zeros).

    The division is exact; afterwards ``|x| < 1``, so squares and sums of the samples cannot
    overflow (and those of tiny samples do not underflow to zero).
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x, 0
    exponent = int(np.frexp(peak)[1])
    return np.ldexp(x, -exponent), exponent


def sample_norms(x: np.ndarray) -> np.ndarray:
    """``|x_j|`` for scalars, ``||x_j||`` (row norms) for vectors, squared after scaling (no overflow)."""
    if x.ndim == 1:
        return np.abs(x)
    scaled, exponent = unit_scaled(x)
    return np.ldexp(np.sqrt(np.einsum("ij,ij->i", scaled, scaled)), exponent)


def check_spread(x: np.ndarray, name: str = "x") -> None:
    """Raise ``ValueError`` when ``x`` has fewer than :data:`MIN_DISTINCT` distinct samples."""
    distinct = int(np.unique(x, axis=0).shape[0])
    if distinct < MIN_DISTINCT:
        raise ValueError(
            f"Invalid {name}: degenerate sample, {distinct} distinct value(s) among {x.shape[0]} "
            f"samples (no spread to estimate a tail from); allowed: at least {MIN_DISTINCT} distinct samples"
        )


def _positive_logs(norms: np.ndarray, what: str) -> np.ndarray:
    zeros = int((norms <= 0).sum())
    if zeros:
        raise ValueError(
            f"Invalid x: {zeros} {what} are exactly zero; the log-based estimators need nonzero samples"
        )
    return np.log(norms)


def _clip_alpha(inverse: np.ndarray | float) -> np.ndarray:
    """``alpha = 1 / (1/alpha)`` clipped to ``(0, 2]``: ``1/alpha <= 1/2`` (or negative) gives 2."""
    return 1.0 / np.maximum(np.asarray(inverse, dtype=np.float64), 1.0 / MAX_ALPHA)


def mohammadi_block_statistics(x: np.ndarray, k1: int) -> np.ndarray:
    """The ``K2`` block statistics ``c_i``; ``1/alpha`` is their mean (see the module docstring)."""
    k2 = x.shape[0] // k1
    kept = x[: k1 * k2]
    if x.ndim == 1:
        blocks = kept.reshape(k2, k1)
        log_y = _positive_logs(np.abs(blocks.sum(axis=1)), "block sums")
        log_x = _positive_logs(np.abs(blocks), "samples")
    else:
        blocks = kept.reshape(k2, k1, x.shape[1])
        log_y = _positive_logs(np.linalg.norm(blocks.sum(axis=1), axis=1), "block-sum norms")
        log_x = _positive_logs(np.sqrt(np.einsum("bkd,bkd->bk", blocks, blocks)), "sample norms")
    return (log_y - log_x.mean(axis=1)) / math.log(k1)


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``, gathered in chunks."""
    rng = np.random.default_rng(seed)
    m = values.shape[0]
    per_chunk = max(1, _BOOTSTRAP_CHUNK // m)
    means = np.empty(n_boot)
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        index = rng.integers(0, m, size=(stop - start, m))
        means[start:stop] = values[index].mean(axis=1)
    return means


def _check_common(method: str, k1: int, ci: float, n_boot: int) -> None:
    if method not in TAIL_METHODS:
        raise ValueError(f"Invalid method: {method!r}; allowed: 'mohammadi' or 'hill'")
    if isinstance(k1, bool) or not isinstance(k1, (int, np.integer)) or k1 < 2:
        raise ValueError(f"Invalid k1: {k1!r}; allowed: an integer >= 2")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"Invalid ci: {ci}; allowed: 0 < ci < 1")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"Invalid n_boot: {n_boot!r}; allowed: an integer >= 1")


def tail_index(
    x: Any,
    method: str = "mohammadi",
    k1: int = 10,
    ci: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
    k: int | None = None,
    center: bool = False,
) -> TailIndex:
    """Estimate the tail index ``alpha`` of the samples ``x`` with an interval.

    ``x``: shape ``(n,)`` (scalars) or ``(n, d)`` (vectors, one per row), a tensor or an array,
    independent samples in random order (Mohammadi's blocks are consecutive). ``method``:
    ``"mohammadi"`` (block sums, ``k1`` per block, bootstrap over blocks with ``n_boot``
    resamples and ``seed``; clipped to ``(0, 2]``) or ``"hill"`` (on the norms, ``k`` upper order
    statistics, default ``ceil(sqrt(n))``; asymptotic interval). Needs ``n >= 2 k1`` for either.
    ``center=True`` first subtracts the sample mean: Cor. 2.4 holds for strictly stable (centred)
    laws, and a common offset ``e`` adds ``K1 e`` to every block sum but only ``e`` to each sample,
    which reads as a heavier tail (gradient noise measured about an estimated mean gradient has
    such an offset: the error of ``gbar``).
    """
    _check_common(method, k1, ci, n_boot)
    arr, _ = unit_scaled(as_samples(x))
    n = arr.shape[0]
    if n < 2 * k1:
        raise ValueError(f"Invalid x: n = {n} samples; allowed: n >= 2 * k1 = {2 * k1}")
    check_spread(arr)
    if center:
        arr, _ = unit_scaled(arr - arr.mean(axis=0))
    if method == "hill":
        return _hill(sample_norms(arr), ci, k)
    blocks = mohammadi_block_statistics(arr, int(k1))
    alpha = float(_clip_alpha(blocks.mean()))
    boot = _clip_alpha(_bootstrap_means(blocks, int(n_boot), seed))
    low, high = np.quantile(boot, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return TailIndex(alpha, float(low), float(high), "mohammadi", n, ci, k1=int(k1))


def hill_curve(norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hill estimates for every ``k = 1..n-1``: returns ``(k, alpha_k)`` (``inf`` where ``1/alpha_k = 0``)."""
    logs = _positive_logs(norms, "norms")
    logs = -np.sort(-logs)
    k = np.arange(1, logs.shape[0])
    inverse = np.cumsum(logs)[:-1] / k - logs[1:]
    with np.errstate(divide="ignore"):
        return k, np.where(inverse > 0, 1.0 / np.maximum(inverse, 1e-300), np.inf)


def _hill(norms: np.ndarray, ci: float, k: int | None) -> TailIndex:
    n = norms.shape[0]
    if k is None:
        k = math.ceil(math.sqrt(n))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"Invalid k: {k!r}; allowed: an integer in [1, n - 1] = [1, {n - 1}]")
    ks, alphas = hill_curve(norms)
    alpha = float(alphas[k - 1])
    if not math.isfinite(alpha):
        raise ValueError(
            f"Invalid x: degenerate tail, the k + 1 = {k + 1} largest norms are equal (to rounding), so "
            "Hill's estimate is infinite; allowed: samples whose largest norms differ"
        )
    z = NormalDist().inv_cdf((1.0 + ci) / 2.0)
    half = z / math.sqrt(k)
    low = alpha / (1.0 + half)
    high = alpha / (1.0 - half) if half < 1.0 else math.inf
    grid = np.unique(np.geomspace(1, n - 1, num=min(_HILL_PLOT_POINTS, n - 1)).astype(np.int64))
    return TailIndex(
        alpha,
        low,
        high,
        "hill",
        n,
        ci,
        k=int(k),
        hill_k=tuple(int(g) for g in grid),
        hill_alpha=tuple(float(a) for a in alphas[grid - 1]),
    )
