"""Each experiment's headline figure, drawn as its paper draws it, and its headline metrics.

:data:`HEADLINES` declares, per built-in experiment (config name), the figure that shows its
result and the metrics of its table:

* ``synthetic-adaptive-quantiles`` (Chezhegov et al. 2025): the 99% and 50% quantiles of
  ``|x_k|^2`` over the R runs against the step, clipped vs unclipped, one panel per method
  family, log scale.
* ``synthetic-remark1`` (Zhang et al. 2020, Remark 1): the sample second moment ``M(n)``
  against the number of runs n, SGD vs GClip, log-log, with the theory slopes
  ``2/alpha - 1`` and 0.
* ``synthetic-rates`` (Zhang et al. 2020, Table 1): the error of the averaged iterate against
  the step for each alpha, log-log, with the rate's slope ``-2(alpha - 1)/alpha``.
* ``synthetic-coordinate-clipping`` (Corollary 7 / Theorem 8): the final error / d against d,
  CClip vs GClip, log-log, with the theory slopes 0 and ``2/alpha - 1``.
* ``synthetic-clipping-bias`` (Koloskova et al. 2023): the error floor against the clipping
  threshold c (one line per step size) and against the step size (one line per c).

Any other experiment gets :func:`validation_figure`: its validation metric against the step,
mean over seeds with the min-max band, one line per configuration (at most 8 per panel), or
for a vectorized task the median over its runs with the 10-90% band.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tailclip.engine.consolidate import ConfigSummary, RunSet, SummaryTable, quantile_bands
from tailclip.engine.labels import method_name
from tailclip.engine.plots import MAX_LINES, Styles, legend_outside, log_ticks, shade, thin, use_log
from tailclip.engine.statistics import base_key, logged_quantiles, median_block_means

__all__ = [
    "HEADLINES",
    "Experiment",
    "Headline",
    "builtin_description",
    "experiments",
    "headline_for",
    "tail_index_figure",
]


@dataclass
class Experiment:
    """The configurations of one experiment (config name) and what the figures read of them."""

    name: str
    configs: list[ConfigSummary]
    data: RunSet
    labels: dict[str, str]
    methods: dict[str, str]
    per_run: Callable[[str, str], np.ndarray | None]

    def config(self, summary: ConfigSummary) -> dict[str, Any]:
        """The resolved config of a configuration (its first run's)."""
        return self.data.groups[summary.group_key][0].config

    def option(self, summary: ConfigSummary, name: str, default: Any = None) -> Any:
        """``task.options[name]`` of a configuration."""
        return (self.config(summary).get("task") or {}).get("options", {}).get(name, default)

    def optimizer(self, summary: ConfigSummary) -> dict[str, Any]:
        """The optimizer spec of a configuration."""
        return self.config(summary).get("optimizer") or {}

    def final(self, summary: ConfigSummary, key: str) -> float:
        """Mean over seeds of the final value of ``key`` (NaN if not logged)."""
        metric = summary.metrics.get(key)
        return metric.final.mean if metric is not None else math.nan

    def series(self, summary: ConfigSummary, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(steps, values)`` of ``key`` of the configuration's first run."""
        return self.data.series.get(summary.run_ids[0], {}).get(key)

    @property
    def keys(self) -> set[str]:
        ids = {r for s in self.configs for r in s.run_ids}
        return {k for run_id, per_run in self.data.series.items() if run_id in ids for k in per_run}


@dataclass(frozen=True)
class Headline:
    """What an experiment shows first: ``draw(experiment, styles) -> (figure, caption) | None``
    and the metric keys of its table."""

    draw: Callable[[Experiment, Styles], tuple[Figure, str] | None]
    metrics: tuple[str, ...]


def _style(experiment: Experiment, styles: Styles, summary: ConfigSummary) -> dict[str, Any]:
    return styles(experiment.methods[summary.group_key], summary.group_key)


def _slope_line(ax: Any, x: np.ndarray, y0: float, x0: float, slope: float, color: Any, label: str) -> None:
    """The line ``y = y0 (x / x0)^slope`` over ``x``, dashed: a theory slope in a log-log plot."""
    ax.plot(x, y0 * (x / x0) ** slope, color=color, lw=1.0, ls=(0, (4, 3)), alpha=0.8, label=label)


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive panels of at most ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _alpha(experiment: Experiment) -> float:
    return float(experiment.option(experiment.configs[0], "alpha", math.nan))


# ----------------------------------------------------------------------------- Chezhegov et al.


def chezhegov_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """q99 (solid) and q50 (dotted) of ``|x_k|^2`` over the R runs against k, per method family."""
    key = "train/sq_dist"
    try:
        bands = quantile_bands(experiment.data, key, (0.5, 0.99))
    except ValueError:
        return None
    families: dict[str, list[ConfigSummary]] = {}
    for summary in experiment.configs:
        if summary.group_key in bands:
            plain = {**experiment.optimizer(summary), "clip": None, "delay": False}
            families.setdefault(method_name(plain), []).append(summary)
    if not families:
        return None
    per_panel = MAX_LINES // 2  # q99 and q50 of each configuration
    panels = [(name, chunk) for name, members in families.items() for chunk in _chunks(members, per_panel)]
    fig = Figure(figsize=(4.8 * min(len(panels), 2), 3.4 * math.ceil(len(panels) / 2)), layout="constrained")
    axes = fig.subplots(math.ceil(len(panels) / 2), min(len(panels), 2), sharey=True, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (family, members) in zip(axes, panels, strict=False):
        for summary in members:
            band, style = bands[summary.group_key], _style(experiment, styles, summary)
            steps, q99, q50 = thin(band.steps, band.at(0.99), band.at(0.5))
            ax.plot(steps, q99, color=style["color"], lw=1.6, label=experiment.labels[summary.group_key])
            ax.plot(steps, q50, color=style["color"], lw=1.0, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"{family} family", fontsize=10)
        ax.set_xlabel("step k")
        ax.grid(alpha=0.3, which="both")
        legend_outside(ax, below=True)
    for ax in axes[:: min(len(panels), 2)]:
        ax.set_ylabel("|x_k|²: quantile over runs")
    runs = experiment.option(experiment.configs[0], "runs", "R")
    caption = (f"Chezhegov et al.: 99% quantile (solid) and median (dotted) of |x_k|² over {runs} "
               "independent runs against the step; clipping lowers the upper quantile.")
    return fig, caption


# ----------------------------------------------------------------------------- Zhang et al.


def remark1_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """Sample second moment M(n) against the number of runs n, log-log, with the theory slopes."""
    alpha = _alpha(experiment)
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for summary in experiment.configs:
        errors = experiment.per_run(summary.run_ids[0], "eval/error")
        if errors is None or errors.size < 10:
            continue
        sizes = np.array([10**j for j in range(1, int(math.log10(errors.size)) + 1)], dtype=np.float64)
        moments = median_block_means(errors, [int(n) for n in sizes])
        style = _style(experiment, styles, summary)
        label = experiment.labels[summary.group_key]
        ax.plot(sizes, moments, marker="o", ms=4, lw=1.6, color=style["color"], label=label)
        clipped = experiment.optimizer(summary).get("clip") is not None
        slope = 0.0 if clipped else 2.0 / alpha - 1.0
        _slope_line(ax, sizes, moments[0], sizes[0], slope, style["color"], f"theory slope {slope:.2g}")
        drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of runs n")
    ax.set_ylabel("sample 2nd moment M(n)")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax)
    caption = (f"Zhang et al., Remark 1: median block mean of the final error f(x_K) over blocks of n runs "
               f"(alpha = {alpha:g}); SGD's keeps growing like n^(2/alpha - 1), GClip's levels off.")
    return fig, caption


def rates_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """E f(xbar_k) - f* against k for each alpha, log-log, with the rate's slope."""
    key = "train/avg_error/mean"
    chunks = _chunks(experiment.configs, MAX_LINES // 2)  # each with its slope line
    fig = Figure(figsize=(7.2, 3.4 * len(chunks)), layout="constrained")
    axes = fig.subplots(len(chunks), 1, squeeze=False)[:, 0]
    drawn = 0
    for ax, summary in ((ax, s) for ax, chunk in zip(axes, chunks, strict=True) for s in chunk):
        found = experiment.series(summary, key)
        if found is None:
            continue
        steps, values = found
        keep = (steps > 0) & np.isfinite(values) & (values > 0)
        steps, values = steps[keep].astype(np.float64), values[keep]
        if steps.size < 2:
            continue
        alpha = float(experiment.option(summary, "alpha", math.nan))
        style = _style(experiment, styles, summary)
        ax.plot(steps, values, lw=1.6, label=experiment.labels[summary.group_key], **style)
        rate = -2.0 * (alpha - 1.0) / alpha
        anchor = int(np.searchsorted(steps, steps[-1] / 100))
        tail = steps[anchor:]
        _slope_line(ax, tail, values[anchor], steps[anchor], rate, style["color"], f"slope {rate:.2f}")
        drawn += 1
    if not drawn:
        return None
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step k")
        ax.set_ylabel("E f(x̄_k) − f*  (mean over runs)")
        ax.grid(alpha=0.3, which="both")
        legend_outside(ax)
    caption = ("Zhang et al., Table 1: error of the averaged iterate against the step, per tail index alpha; "
               "dashed: the rate k^(-2(alpha-1)/alpha) from k = K/100.")
    return fig, caption


def coordinate_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """Final (f(xbar) - f*)/d against d, CClip vs GClip, log-log, with the theory slopes."""
    key = "eval/avg_error/mean"
    alpha = _alpha(experiment)
    by_method: dict[str, list[tuple[float, float, ConfigSummary]]] = {}
    for summary in experiment.configs:
        dim = float(experiment.option(summary, "dim", math.nan))
        by_method.setdefault(experiment.methods[summary.group_key], []).append(
            (dim, experiment.final(summary, key) / dim, summary)
        )
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for method, points in by_method.items():
        points.sort(key=lambda p: p[0])
        dims = np.array([p[0] for p in points])
        errors = np.array([p[1] for p in points])
        color = styles.color(method)
        ax.plot(dims, errors, marker="o", ms=5, lw=1.6, color=color, label=method)
        slope = 0.0 if method == "CClip" else 2.0 / alpha - 1.0
        _slope_line(ax, dims, errors[0], dims[0], slope, color, f"{method} theory slope {slope:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_ticks(ax, sorted({p[0] for points in by_method.values() for p in points}))
    ax.set_xlabel("dimension d")
    ax.set_ylabel("(f(x̄_K) − f*) / d")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax)
    caption = (f"Zhang et al., Corollary 7 / Theorem 8: final error per coordinate against d "
               f"(alpha = {alpha:g}), each method at its theory threshold; CClip's is flat, GClip's grows "
               "like d^(2/alpha - 1).")
    return fig, caption


# ----------------------------------------------------------------------------- Koloskova et al.


def bias_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """Error floor against the threshold c (a line per step size) and against the step size."""
    key = "eval/avg_error/mean"
    floors: dict[tuple[float, float], float] = {}
    noiseless = []
    for summary in experiment.configs:
        spec = experiment.optimizer(summary)
        value = experiment.final(summary, key)
        if experiment.option(summary, "noise") == "none":
            noiseless.append(value)
        elif "max_norm" in spec and "lr" in spec:
            floors[(float(spec["max_norm"]), float(spec["lr"]))] = value
    if not floors:
        return None
    cs = sorted({c for c, _ in floors})
    lrs = sorted({lr for _, lr in floors})
    fig = Figure(figsize=(9.6, 3.2), layout="constrained")
    by_c, by_lr = fig.subplots(1, 2, sharey=True)
    color = styles.color("GClip")
    panels = ((by_c, cs, lrs, "threshold c", "lr"), (by_lr, lrs, cs, "step size lr", "c"))
    for ax, xs, lines, name, other in panels:
        for i, line in enumerate(lines[:MAX_LINES]):
            points = [(x, floors.get((x, line) if other == "lr" else (line, x), math.nan)) for x in xs]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, lw=1.5,
                    color=shade(color, i), linestyle=("-", "--")[(i // 4) % 2], label=f"{other} {line:g}")
        for value in noiseless:
            ax.axhline(value, color="0.3", lw=1.0, ls=":", label="no noise")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks(ax, xs)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, which="both")
        legend_outside(ax)
    by_c.set_ylabel("error floor f(x̄_K) − f*")
    caption = ("Koloskova et al.: clipped SGD with skewed noise stalls at a floor set by the threshold c, "
               "which a smaller step size does not remove; without noise the floor vanishes.")
    return fig, caption


# ----------------------------------------------------------------------------- any other experiment


def _validation_key(keys: set[str]) -> str | None:
    bases = {base_key(k) for k in keys}
    for prefix in ("eval/accuracy", "eval/loss", "eval/", "train/loss", "train/"):
        found = sorted(
            k for k in bases if k.startswith(prefix) and not k.endswith(("/clipped", "clip_fraction"))
        )
        if found:
            return found[0]
    return None


def validation_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """The validation metric against the step: mean over seeds with the min-max band (the median
    with the 10-90% band over the runs of a vectorized task), one line per configuration."""
    keys = experiment.keys
    key = _validation_key(keys)
    if key is None:
        return None
    vectorized = key not in keys and bool(logged_quantiles(keys, key))
    quantiles = (0.1, 0.5, 0.9) if vectorized else (0.0, 0.5, 1.0)
    try:
        bands = quantile_bands(experiment.data, key, quantiles)
    except ValueError:
        return None
    shown = [s for s in experiment.configs if s.group_key in bands]
    if not shown:
        return None
    chunks = [shown[i : i + MAX_LINES] for i in range(0, len(shown), MAX_LINES)]
    fig = Figure(figsize=(7.2, 3.0 * len(chunks)), layout="constrained")
    axes = fig.subplots(len(chunks), 1, squeeze=False)[:, 0]
    log = use_log([bands[s.group_key].values for s in shown], key)
    for ax, chunk in zip(axes, chunks, strict=True):
        for summary in chunk:
            band, style = bands[summary.group_key], _style(experiment, styles, summary)
            if vectorized:
                middle = band.at(0.5)
            else:
                middle = _mean_curve(experiment, summary, key, band.steps)
            steps, middle, low, high = thin(band.steps, middle, band.values[:, 0], band.values[:, -1])
            ax.plot(steps, middle, lw=1.5, label=experiment.labels[summary.group_key], **style)
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, lw=0)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        legend_outside(ax)
    n = max(len(s.run_ids) for s in shown)
    what = ("median over the task's runs, 10-90% band" if vectorized
            else f"mean over seeds (n = {n}), min-max band")
    return fig, f"{key} against the step: {what}."


def _mean_curve(experiment: Experiment, summary: ConfigSummary, key: str, steps: np.ndarray) -> np.ndarray:
    rows = []
    for run_id in summary.run_ids:
        found = experiment.data.series.get(run_id, {}).get(key)
        if found is not None:
            index = np.searchsorted(found[0], steps).clip(0, len(found[0]) - 1)
            rows.append(found[1][index])
    if not rows:
        return np.full(steps.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step where every seed diverged stays NaN
        return np.nanmean(np.stack(rows), axis=0)


def tail_index_figure(experiment: Experiment, styles: Styles) -> tuple[Figure, str] | None:
    """The tail index of the gradient noise the runs measured during training (``noise/alpha``,
    its interval ``noise/alpha_low``..``noise/alpha_high``), mean over seeds, one line per
    configuration; alpha = 2 (Gaussian) drawn for reference."""
    shown = [s for s in experiment.configs if "noise/alpha" in s.metrics][:MAX_LINES]
    if not shown:
        return None
    fig = Figure(figsize=(7.2, 2.8), layout="constrained")
    ax = fig.add_subplot()
    for summary in shown:
        style = _style(experiment, styles, summary)
        curves = {}
        for key in ("noise/alpha", "noise/alpha_low", "noise/alpha_high"):
            found = [experiment.data.series.get(r, {}).get(key) for r in summary.run_ids]
            found = [f for f in found if f is not None]
            if found:
                steps = found[0][0]
                rows = [f[1] for f in found if np.array_equal(f[0], steps)]
                curves[key] = (steps, np.nanmean(np.stack(rows), axis=0))
        steps, alpha = curves["noise/alpha"]
        ax.plot(steps, alpha, marker="o", ms=3, lw=1.4, label=experiment.labels[summary.group_key], **style)
        if "noise/alpha_low" in curves and "noise/alpha_high" in curves:
            ax.fill_between(steps, curves["noise/alpha_low"][1], curves["noise/alpha_high"][1],
                            color=style["color"], alpha=0.15, lw=0)
    ax.axhline(2.0, color="0.4", lw=0.8, ls=":", label="Gaussian (alpha = 2)")
    ax.set_xlabel("step")
    ax.set_ylabel("tail index alpha of the noise")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    caption = ("Tail index of the gradient noise measured during training (mean over seeds, with its "
               "interval): below 2 the noise is heavy-tailed.")
    return fig, caption


HEADLINES: dict[str, Headline] = {
    "synthetic-adaptive-quantiles": Headline(chezhegov_figure, ("train/sq_dist/q99", "train/sq_dist/q50")),
    "synthetic-remark1": Headline(remark1_figure, ("eval/error/mean", "eval/error/q99")),
    "synthetic-rates": Headline(rates_figure, ("train/avg_error/mean", "train/avg_error/q99")),
    "synthetic-coordinate-clipping": Headline(
        coordinate_figure, ("eval/avg_error/mean", "eval/avg_error/q99")
    ),
    "synthetic-clipping-bias": Headline(bias_figure, ("eval/avg_error/mean", "eval/avg_error/q99")),
}


def _default_metrics(keys: set[str]) -> tuple[str, ...]:
    """Up to three headline keys: validation metrics first, then the training loss."""
    chosen: list[str] = []
    for prefix in ("eval/accuracy", "eval/loss", "eval/", "train/loss", "train/"):
        for key in sorted(keys):
            plain = key == base_key(key) or key.endswith(("/mean", "/q99"))
            if key.startswith(prefix) and plain and key not in chosen and "clip" not in key:
                chosen.append(key)
                break
    return tuple(chosen[:3])


def headline_for(experiment: Experiment) -> Headline:
    """The declared headline of ``experiment``, or the validation figure and default metrics."""
    declared = HEADLINES.get(experiment.name)
    if declared is not None:
        return declared
    return Headline(validation_figure, _default_metrics(experiment.keys))


def builtin_description(name: str) -> str:
    """The first comment line of the built-in config ``name`` (its one-line description), or ""."""
    from tailclip.engine.yaml_loading import builtin_configs

    path: Path | None = builtin_configs().get(name)
    if path is None:
        return ""
    first = path.read_text(encoding="utf-8").splitlines()[:1]
    return first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""


def _grouped(summaries: Sequence[ConfigSummary], methods: Mapping[str, str]) -> list[ConfigSummary]:
    """Configurations grouped by method, in first-seen order (the table and legend order)."""
    first: dict[str, int] = {}
    for i, s in enumerate(summaries):
        first.setdefault(methods[s.group_key], i)
    return sorted(summaries, key=lambda s: first[methods[s.group_key]])


def experiments(
    data: RunSet, table: SummaryTable, per_run: Callable[[str, str], np.ndarray | None]
) -> list[Experiment]:
    """One :class:`Experiment` per config name of ``table`` (in the store's order) over ``data``."""
    methods = {gk: method_name(runs[0].config.get("optimizer") or {}) for gk, runs in data.groups.items()}
    names = list(dict.fromkeys(str(r.config.get("name", r.name)) for r in data.runs))
    views = []
    for name in names:
        members = _grouped([s for s in table.configs if s.name == name], methods)
        if members:
            views.append(Experiment(
                name=name,
                configs=members,
                data=data.experiment(name),
                labels={s.group_key: s.short_label for s in members},
                methods={s.group_key: methods[s.group_key] for s in members},
                per_run=per_run,
            ))
    return views
