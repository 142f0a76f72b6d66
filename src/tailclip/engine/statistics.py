"""The numbers behind the tables and figures: per-sample statistics, best-of-run, quantile bands.

Pure functions on arrays and ``{run_id: {key: (steps, values)}}`` series already read from a
store (:mod:`tailclip.engine.consolidate` reads them, once); nothing here opens a store or
renders anything.

* :class:`Stats`: mean, sample sd (ddof = 1), median, 5%/95% quantiles and n of one sample,
  over its finite values (``n_nonfinite`` counts the inf/nan ones: a diverged run under
  heavy-tailed noise is a result, so it is counted, not hidden).
* :func:`best_direction`: whether a run's best value of a key is its minimum or its maximum.
* :func:`band_across_runs` and :func:`band_from_logged`: the high-probability view of Chezhegov
  et al., the q-quantiles of a metric against the step, across the runs (seeds) of a
  configuration, or from the quantiles a vectorized task logged over its R runs
  (``<key>/q10``, ``<key>/q50``, ...), averaged over seeds (quantile averaging).
* :func:`run_step_seconds`: the runtime per step of one run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Direction = Literal["min", "max"] | None
Series = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]

__all__ = [
    "Direction",
    "QuantileBand",
    "Stats",
    "band_across_runs",
    "band_from_logged",
    "base_key",
    "best_direction",
    "best_of_run",
    "format_float",
    "logged_quantiles",
    "median_block_means",
    "quantile_columns",
    "run_step_seconds",
]

QUANTILE_SUFFIX = re.compile(r"^(?P<base>.+)/q(?P<pct>\d+(?:\.\d+)?)$")
_LOSS_LIKE = re.compile(
    r"loss|err|error|nll|mse|mae|rmse|perplexity|ppl|regret|gap|subopt|dist|distance|residual"
)
_SCORE_LIKE = re.compile(r"acc|accuracy|f1|mcc|auc|score|precision|recall|bleu|rouge|corr|spearman|pearson")
_NO_BEST_PREFIXES = ("opt/", "time/")


def base_key(key: str) -> str:
    """``key`` without a logged-quantile or mean suffix: ``train/loss/q99`` -> ``train/loss``."""
    match = QUANTILE_SUFFIX.match(key)
    if match:
        return match.group("base")
    return key[: -len("/mean")] if key.endswith("/mean") else key


def best_direction(key: str, overrides: Mapping[str, Direction] | None = None) -> Direction:
    """Which extreme over steps is a run's ``best`` value of ``key``.

    Rule, on the last path component of ``key`` without a ``/q..`` or ``/mean`` suffix:
    ``overrides[key]`` (or ``overrides[base_key(key)]``) if given; ``None`` (no best) for
    ``opt/*`` and ``time/*`` keys; ``"max"`` if the name looks like a score (acc, accuracy,
    f1, mcc, auc, score, precision, recall, bleu, rouge, corr); otherwise ``"min"`` (loss,
    error, perplexity, distance to the optimum and unknown quantities, which in optimization
    are mostly errors).
    """
    if overrides:
        for candidate in (key, base_key(key)):
            if candidate in overrides:
                direction = overrides[candidate]
                if direction not in ("min", "max", None):
                    raise ValueError(
                        f"Invalid best[{candidate!r}]: {direction!r}; allowed: 'min', 'max' or None"
                    )
                return direction
    if key.startswith(_NO_BEST_PREFIXES):
        return None
    name = base_key(key).rsplit("/", 1)[-1].lower()
    if _LOSS_LIKE.search(name):
        return "min"
    if _SCORE_LIKE.search(name):
        return "max"
    return "min"


def format_float(value: float | None, digits: int = 4) -> str:
    """Compact human formatting: 4 significant digits, ``—`` for missing, ``inf``/``nan`` as is."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class Stats:
    """Summary of one sample: mean, sample sd (ddof = 1), median, 5%/95% quantiles, n.

    The moments and quantiles use the finite values; ``n`` counts all values and
    ``n_nonfinite`` those that were inf or nan.
    """

    n: int
    n_nonfinite: int
    mean: float
    sd: float
    median: float
    q05: float
    q95: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        """Stats of ``values`` (nan fields when no value is finite; sd nan when fewer than 2)."""
        array = np.asarray(list(values), dtype=np.float64)
        finite = array[np.isfinite(array)]
        nan = float("nan")
        if finite.size == 0:
            return cls(int(array.size), int(array.size), nan, nan, nan, nan, nan)
        q05, median, q95 = np.quantile(finite, (0.05, 0.5, 0.95))
        return cls(
            n=int(array.size),
            n_nonfinite=int(array.size - finite.size),
            mean=float(finite.mean()),
            sd=float(finite.std(ddof=1)) if finite.size > 1 else nan,
            median=float(median),
            q05=float(q05),
            q95=float(q95),
        )

    def mean_sd(self) -> str:
        """``mean ± sd`` (or ``mean`` alone with one finite value)."""
        if math.isnan(self.sd):
            return format_float(self.mean)
        return f"{format_float(self.mean)} ± {format_float(self.sd)}"

    def interval(self) -> str:
        """``[q05, q95]``."""
        return f"[{format_float(self.q05)}, {format_float(self.q95)}]"


def best_of_run(values: np.ndarray, direction: Literal["min", "max"]) -> float:
    """The minimum (``"min"``) or maximum of one run's values over steps, NaN steps ignored."""
    # nan (a diverged step) must not hide as the best value, nor poison it.
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan")
    return float(finite.min() if direction == "min" else finite.max())


def median_block_means(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """``M(n)`` for each ``n`` in ``sizes``: the median over the ``floor(R/n)`` disjoint blocks of
    ``n`` consecutive values of the block mean (the sample second moment of Zhang et al. 2020,
    Remark 1, read off R independent final errors ``f(x_K) = x_K^2 / 2``).

    For values of tail index below 1 (infinite mean) ``M(n)`` grows like ``n^(2/alpha - 1)``;
    with a finite mean it converges.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    return np.array(
        [float(np.median(values[: (values.size // n) * n].reshape(-1, n).mean(axis=1))) for n in sizes]
    )


def run_step_seconds(run: Any, series: Mapping[str, tuple[np.ndarray, np.ndarray]] | None) -> float | None:
    """Seconds per step of one run: median of ``time/step_seconds`` if logged, else wall_time / steps.

    The median discards the first-step warm-up.
    """
    if series and "time/step_seconds" in series:
        values = np.asarray(series["time/step_seconds"][1], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            return float(np.median(values))
    if run.wall_time is not None and run.steps:
        return float(run.wall_time) / float(run.steps)
    return None


def logged_quantiles(keys: Iterable[str], key: str) -> dict[float, str]:
    """Quantile levels logged for ``key`` by a vectorized task: ``{0.1: "key/q10", ...}``."""
    found = {}
    for candidate in keys:
        match = QUANTILE_SUFFIX.match(candidate)
        if match and match.group("base") == key:
            found[float(match.group("pct")) / 100.0] = candidate
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class QuantileBand:
    """Quantiles of one metric against the step, for one configuration (or one run).

    ``values[i, j]`` is the ``quantiles[j]``-quantile at ``steps[i]``. ``source`` is
    ``"runs"`` (across the runs/seeds of the configuration) or ``"vectorized"`` (quantiles the
    task logged across its R independent runs, averaged over ``n`` seeds).
    """

    id: str
    label: str
    key: str
    steps: np.ndarray
    quantiles: tuple[float, ...]
    values: np.ndarray
    n: int
    source: Literal["runs", "vectorized"]

    def at(self, quantile: float) -> np.ndarray:
        """The curve of one quantile level of the band (``values[:, j]``)."""
        for j, q in enumerate(self.quantiles):
            if math.isclose(q, quantile):
                return self.values[:, j]
        raise KeyError(quantile)


def _aligned(series: Series, run_ids: Sequence[str], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, runs x steps values) on the steps every run logged ``key``; None if some run lacks it."""
    curves = []
    for run_id in run_ids:
        data = series.get(run_id, {}).get(key)
        if data is None or len(data[0]) == 0:
            return None
        curves.append((np.asarray(data[0], dtype=np.int64), np.asarray(data[1], dtype=np.float64)))
    common = curves[0][0]
    for steps, _ in curves[1:]:
        if steps.shape != common.shape or not np.array_equal(steps, common):
            common = np.intersect1d(common, steps)
    if common.size == 0:
        return None
    rows = []
    for steps, values in curves:
        if steps.shape == common.shape and np.array_equal(steps, common):
            rows.append(values)
            continue
        order = np.argsort(steps, kind="stable")
        rows.append(values[order][np.searchsorted(steps[order], common)])
    return common, np.stack(rows)


def quantile_columns(matrix: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Quantiles of each column of ``matrix`` (runs x steps) -> (steps x quantiles), infinities allowed.

    Linear interpolation between order statistics x_(lo), x_(hi) at h = (n - 1) q (numpy's
    default method), except that an exact order statistic is returned as is and interpolating
    towards +inf (from -inf) gives +inf (-inf), where numpy's arithmetic would give NaN.
    """
    ordered = np.sort(np.asarray(matrix, dtype=np.float64), axis=0)
    n = ordered.shape[0]
    out = np.empty((ordered.shape[1], len(quantiles)))
    for j, q in enumerate(quantiles):
        h = (n - 1) * float(q)
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        frac = h - lo
        a, b = ordered[lo], ordered[hi]
        with np.errstate(invalid="ignore"):
            value = a + frac * (b - a)
        value = np.where((frac == 0.0) | (a == b), a, value)
        value = np.where(np.isposinf(b) & ~np.isneginf(a) & (frac > 0.0), np.inf, value)
        value = np.where(np.isneginf(a) & ~np.isposinf(b) & (frac < 1.0), -np.inf, value)
        out[:, j] = value
    return out


def band_across_runs(
    series: Series, run_ids: Sequence[str], key: str, quantiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, steps x quantiles)``: at each step every run logged, ``np.quantile`` over the runs.

    A NaN (diverged) value counts as the worst value: +inf, or -inf for a score-like key (as
    the runner counts it for the R runs of a vectorized task). None if a run lacks ``key``.
    """
    aligned = _aligned(series, run_ids, key)
    if aligned is None:
        return None
    steps, matrix = aligned
    worst = -np.inf if best_direction(key) == "max" else np.inf
    return steps, quantile_columns(np.where(np.isnan(matrix), worst, matrix), quantiles)


def band_from_logged(
    series: Series, run_ids: Sequence[str], columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, steps x levels)``: the logged quantile ``columns`` averaged over ``run_ids``."""
    per_level = []
    for column in columns:
        aligned = _aligned(series, run_ids, column)
        if aligned is None:
            return None
        per_level.append(aligned)
    steps_common = per_level[0][0]
    for steps, _ in per_level[1:]:
        steps_common = np.intersect1d(steps_common, steps)
    out = np.empty((steps_common.size, len(columns)))
    for j, (steps, matrix) in enumerate(per_level):
        index = np.searchsorted(steps, steps_common)
        out[:, j] = matrix[:, index].mean(axis=0)
    return steps_common, out
