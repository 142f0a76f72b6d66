"""How each claim's figure is computed from its experiments' runs.

Each ``evaluate_*`` gets the :class:`~tailclip.claims.experiments.ExperimentRuns` of its claim
and returns ``(values, measured text, passed)``. Every percentile is taken over *independent*
runs (the R runs of a vectorized task), never over running means of one run (a defect of the
reference code, ``../shared/papers.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tailclip.claims.experiments import ExperimentRuns
from tailclip.engine.statistics import median_block_means

__all__ = [
    "evaluate_adaptive",
    "evaluate_bias",
    "evaluate_coordinates",
    "evaluate_rates",
    "evaluate_remark1",
    "method_label",
    "power_law_exponent",
]


def power_law_exponent(x: Iterable[float], y: Iterable[float]) -> float:
    """The exponent ``b`` of the least-squares fit ``log y = log a + b log x`` over all points.

    Unweighted ordinary least squares on the log-log points, as the papers read a slope off a
    log-log figure (few points: sample sizes, dimensions, log-spaced steps). NaN with fewer
    than 2 points or any non-positive or non-finite value. (Not
    :func:`tailclip.noise.loglog_slope`, which reweights a dense grid to be uniform in
    ``log m`` and drops the unusable points.)
    """
    x, y = np.asarray(list(x), dtype=np.float64), np.asarray(list(y), dtype=np.float64)
    if len(x) < 2 or not (np.all(x > 0) and np.all(y > 0) and np.all(np.isfinite(y))):
        return math.nan
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _log_spaced(steps: np.ndarray, low: float, high: float, count: int = 40) -> np.ndarray:
    """Indices of ``steps`` nearest to ``count`` log-spaced points in ``[low, high]`` (unique)."""
    targets = np.geomspace(low, high, count)
    index = np.abs(steps[None, :] - targets[:, None]).argmin(axis=1)
    return np.unique(index)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ----------------------------------------------------------------------------- claim 1


def evaluate_remark1(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Block second moments of the final error against the number of runs, SGD vs GClip.

    For ``n = 10, 100, ..., R`` the ``R`` final errors ``f(x_K)`` are cut into ``R/n`` disjoint
    blocks of ``n`` runs; ``M(n)`` is the median over blocks of the block mean. For a variable
    of tail index ``alpha/2 < 1`` (SGD: ``f = x^2/2`` with ``x`` of tail index ``alpha``)
    ``M(n)`` grows like ``n^(2/alpha - 1)``; with a finite mean (GClip) it converges.
    """
    (runs,) = experiments
    values: dict[str, float] = {}
    alpha = float(runs.points[0].config.task.options["alpha"])
    for point in runs.points:
        label = "sgd" if point.config.optimizer.hyperparameters.get("clip") is None else "gclip"
        errors = runs.per_run(point, "eval/error")
        sizes = [10**j for j in range(1, int(math.log10(len(errors))) + 1)]
        moments = list(median_block_means(errors, sizes))
        values[f"{label}_slope"] = power_law_exponent(sizes, moments)
        values[f"{label}_moment_small"], values[f"{label}_moment_large"] = moments[0], moments[-1]
    predicted = 2.0 / alpha - 1.0
    values["predicted_sgd_slope"] = predicted
    passed = values["sgd_slope"] >= predicted / 2 and abs(values["gclip_slope"]) <= 0.05
    measured = (
        f"slope of the sample 2nd moment vs runs: SGD {_fmt(values['sgd_slope'])}, "
        f"GClip {_fmt(values['gclip_slope'])} (theory {_fmt(predicted)}, 0)"
    )
    return values, measured, passed


# ----------------------------------------------------------------------------- claim 2


def evaluate_rates(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Slope of the mean error of the averaged iterate against k, per alpha."""
    (runs,) = experiments
    values: dict[str, float] = {}
    parts = []
    passed = True
    for point in runs.points:
        alpha = float(point.config.task.options["alpha"])
        steps, means = runs.series(point, "train/avg_error/mean")
        total = int(steps[-1])
        index = _log_spaced(steps, total / 100, total)
        slope = power_law_exponent(steps[index], means[index])
        target = -2.0 * (alpha - 1.0) / alpha
        values[f"slope_alpha_{alpha:g}"], values[f"target_alpha_{alpha:g}"] = slope, target
        passed = passed and abs(slope - target) <= 0.1
        parts.append(f"alpha {alpha:g}: {_fmt(slope)} (target {_fmt(target)})")
    return values, "slope of E f(xbar_k) vs k: " + ", ".join(parts), passed


# ----------------------------------------------------------------------------- claim 3


def method_label(hyperparameters: dict[str, Any], name: str) -> str:
    """The paper's name of an AdaGrad/Adam variant: ``Clip-AdaGradD-Norm`` and so on."""
    base = {"clip_adagrad": "AdaGrad", "clip_adam": "Adam"}.get(name, name)
    delayed = "D" if hyperparameters.get("delay") else ""
    norm = "-Norm" if hyperparameters.get("norm") else ""
    clipped = "Clip-" if hyperparameters.get("clip") is not None else ""
    return f"{clipped}{base}{delayed}{norm}"


def evaluate_adaptive(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """99% quantile over runs of |x_K|^2 at the last step, each clipped method vs its unclipped twin."""
    (runs,) = experiments
    q99: dict[str, float] = {}
    for point in runs.points:
        label = method_label(point.config.optimizer.hyperparameters, point.config.optimizer.name)
        q99[label] = runs.final(point, "train/sq_dist/q99")
    values = {f"q99[{k}]": v for k, v in q99.items()}
    parts = []
    passed = True
    pairs = [(k, "Clip-" + k) for k in q99 if not k.startswith("Clip-") and "Clip-" + k in q99]
    for unclipped, clipped in pairs:
        ratio = q99[clipped] / q99[unclipped]
        values[f"ratio[{clipped}]"] = ratio
        passed = passed and q99[clipped] < q99[unclipped]
        parts.append(f"{clipped} {_fmt(q99[clipped])} vs {_fmt(q99[unclipped])}")
    passed = passed and len(pairs) > 0
    return values, "q99 of |x_K|^2: " + "; ".join(parts), passed


# ----------------------------------------------------------------------------- claim 4


def evaluate_bias(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Error floors of clipped SGD over (c, lr) with skewed noise, and the noiseless run."""
    noisy, noiseless = experiments
    floors: dict[tuple[float, float], float] = {}
    for point in noisy.points:
        hp = point.config.optimizer.hyperparameters
        floors[(float(hp["max_norm"]), float(hp["lr"]))] = noisy.final(point, "eval/avg_error/mean")
    thresholds = sorted({c for c, _ in floors})
    lrs = sorted({lr for _, lr in floors})
    values = {f"floor[c={c:g},lr={lr:g}]": v for (c, lr), v in floors.items()}
    small_lr, large_lr = lrs[0], lrs[-1]
    by_c = floors[(thresholds[0], small_lr)] / floors[(thresholds[-1], small_lr)]
    by_lr = min(floors[(c, small_lr)] / floors[(c, large_lr)] for c in thresholds)
    clean = noiseless.final(noiseless.points[0], "eval/avg_error/mean")
    relative_clean = clean / min(floors[(c, small_lr)] for c in thresholds)
    values.update(
        floor_ratio_c=by_c, floor_ratio_lr=by_lr, noiseless_floor=clean, noiseless_relative=relative_clean
    )
    passed = by_c >= 2.0 and by_lr >= 0.5 and relative_clean < 1e-3
    measured = (
        f"floor(c={thresholds[0]:g})/floor(c={thresholds[-1]:g}) = {_fmt(by_c)}; "
        f"min over c of floor(lr={small_lr:g})/floor(lr={large_lr:g}) = {_fmt(by_lr)}; "
        f"noiseless {_fmt(clean)} ({_fmt(relative_clean)} of the noisy floor)"
    )
    return values, measured, passed


# ----------------------------------------------------------------------------- claim 5


def evaluate_coordinates(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Per-coordinate error of the averaged iterate against d, CClip vs GClip."""
    (runs,) = experiments
    alpha = float(runs.points[0].config.task.options["alpha"])
    errors: dict[str, dict[int, float]] = {}
    for point in runs.points:
        dim = int(point.config.task.options["dim"])
        label = "cclip" if point.config.optimizer.hyperparameters["clip"] == "coord" else "gclip"
        errors.setdefault(label, {})[dim] = runs.final(point, "eval/avg_error/mean") / dim
    values: dict[str, float] = {}
    for label, by_dim in errors.items():
        dims = sorted(by_dim)
        values[f"{label}_slope"] = power_law_exponent(dims, [by_dim[d] for d in dims])
        values.update({f"{label}_error[d={d}]": by_dim[d] for d in dims})
    predicted = 2.0 / alpha - 1.0
    values["predicted_gclip_slope"] = predicted
    passed = abs(values["cclip_slope"]) <= 0.1 and values["gclip_slope"] >= predicted / 2
    measured = (
        f"slope of (f(xbar)-f*)/d vs d: CClip {_fmt(values['cclip_slope'])}, "
        f"GClip {_fmt(values['gclip_slope'])} (theory 0, {_fmt(predicted)})"
    )
    return values, measured, passed
