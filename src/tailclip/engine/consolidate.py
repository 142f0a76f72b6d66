"""Consolidated results of a store: runs grouped by configuration, summarised over seeds.

Everything is computed from one read of the store (:func:`load_runs` -> :class:`RunSet`):
:func:`consolidate` and :func:`quantile_bands` accept a store or a ``RunSet``, so the report
reads each series once however many tables and figures it draws.

Consolidation groups the runs by configuration: runs whose resolved configs differ only in
``train.seed`` share a ``group_key``. For every metric key and every configuration it
summarises, over the n runs (seeds) of that configuration (:class:`~.statistics.Stats`):

* ``final``: the value logged at the largest step of each run;
* ``best``: the minimum over steps for loss-like keys, the maximum for score-like keys
  (see ``best_direction``; ``best={key: "min" | "max" | None}`` overrides the rule);

Runtime per step of a run is the median of its ``time/step_seconds`` values when it logged
them, else ``wall_time / steps``. A configuration's runtime is the median over its runs, and
its overhead against a named baseline configuration is the ratio of the two medians (the
runtime comparison of the AGNI repository, ``seeds/001_*`` in ``../shared/papers.md``).

The high-probability view (:func:`quantile_bands`) follows Chezhegov et al.: per
configuration, the q-quantiles of a metric against the step, across the runs (seeds) of the
configuration or from the quantiles a vectorized task logged (averaged over seeds).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tailclip.engine.labels import config_labels, param_order, resolve_baseline, short_labels
from tailclip.engine.statistics import (
    QUANTILE_SUFFIX,
    Direction,
    QuantileBand,
    Stats,
    band_across_runs,
    band_from_logged,
    base_key,
    best_direction,
    best_of_run,
    logged_quantiles,
    run_step_seconds,
)
from tailclip.engine.store import STATUSES, ResultsStore, RunRecord

__all__ = [
    "ConfigSummary",
    "MetricSummary",
    "RunSet",
    "SummaryTable",
    "consolidate",
    "load_runs",
    "quantile_bands",
]



@dataclass
class RunSet:
    """Runs of a store and the metric series of those with a selected status, read once.

    ``runs``: every run of the selection (any status, to count failures); ``groups``: the
    selected runs (status in ``statuses``) per ``group_key``, seeds ascending; ``series``:
    ``{run_id: {key: (steps, values)}}`` of the selected runs.
    """

    store: ResultsStore
    runs: list[RunRecord]
    statuses: tuple[str, ...]
    groups: dict[str, list[RunRecord]]
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]

    @property
    def keys(self) -> set[str]:
        """Every metric key logged by a selected run."""
        return {k for per_run in self.series.values() for k in per_run}

    def experiment(self, name: str) -> RunSet:
        """The runs of experiment (config name) ``name`` only (no new read of the store)."""
        runs = [r for r in self.runs if r.name == name]
        groups = {gk: rs for gk, rs in self.groups.items() if rs[0].name == name}
        ids = {r.run_id for rs in groups.values() for r in rs}
        series = {run_id: data for run_id, data in self.series.items() if run_id in ids}
        return RunSet(self.store, runs, self.statuses, groups, series)

    def select(self, statuses: Sequence[str]) -> RunSet:
        """The same runs with only those of ``statuses`` selected (no new read of the store)."""
        groups = {gk: [r for r in runs if r.status in statuses] for gk, runs in self.groups.items()}
        groups = {gk: runs for gk, runs in groups.items() if runs}
        ids = {r.run_id for runs in groups.values() for r in runs}
        series = {run_id: data for run_id, data in self.series.items() if run_id in ids}
        return RunSet(self.store, self.runs, tuple(statuses), groups, series)


def load_runs(
    store: ResultsStore | str | Path,
    *,
    name: str | None = None,
    run_ids: Sequence[str] | None = None,
    statuses: Sequence[str] = ("finished",),
    keys: Sequence[str] | None = None,
) -> RunSet:
    """Read the runs of ``store`` (only experiment ``name`` / only ``run_ids`` if given) and the
    series (only ``keys`` if given) of those whose status is in ``statuses``."""
    for status in statuses:
        if status not in STATUSES:
            raise ValueError(f"Invalid status: {status!r}; allowed: {', '.join(STATUSES)}")
    store = store if isinstance(store, ResultsStore) else ResultsStore(store, read_only=True)
    runs = store.runs(name=name, run_ids=run_ids)
    selected = [r for r in runs if r.status in statuses]
    groups: dict[str, list[RunRecord]] = {}
    for run in sorted(selected, key=lambda r: (r.group_key, r.seed if r.seed is not None else 0, r.run_id)):
        groups.setdefault(run.group_key, []).append(run)
    ids = [r.run_id for r in selected]
    series = store.metrics(run_ids=ids, keys=keys) if ids else {}
    return RunSet(store, runs, tuple(statuses), groups, series)


def _run_set(
    source: ResultsStore | str | Path | RunSet, name: str | None, statuses: Sequence[str]
) -> RunSet:
    if isinstance(source, RunSet):
        return source
    return load_runs(source, name=name, statuses=statuses)


@dataclass(frozen=True)
class MetricSummary:
    """``final`` and ``best`` statistics of one metric key over the runs of one configuration."""

    key: str
    direction: Direction
    final: Stats
    best: Stats | None


@dataclass
class ConfigSummary:
    """One configuration (``group_key``): its runs, metric summaries and runtime.

    ``label`` names it by what differs across the whole store (``key=value``, for tables and
    ``--baseline``); ``short_label`` by what differs within its experiment, in method names
    (``GClip, lr 0.3``; at most 40 characters; see :func:`~tailclip.engine.labels.short_labels`).
    """

    group_key: str
    name: str
    label: str
    params: dict[str, Any]
    run_ids: list[str]
    seeds: list[int]
    n_failed: int
    n_unfinished: int
    metrics: dict[str, MetricSummary]
    step_seconds: Stats | None
    overhead: float | None = None
    short_label: str = ""

    @property
    def n_runs(self) -> int:
        """Number of runs consolidated (those with the selected statuses)."""
        return len(self.run_ids)


_CSV_COLUMNS = (
    "group_key", "name", "label", "n_runs", "n_failed", "key", "which", "direction",
    "n", "n_nonfinite", "mean", "sd", "median", "q05", "q95",
    "step_seconds_median", "overhead",
)


@dataclass
class SummaryTable:
    """Result of ``consolidate``: one ``ConfigSummary`` per configuration.

    ``rows()`` is the long ("tidy") form: one dict per configuration x key x which
    (``final``/``best``), with the configuration's runtime repeated on each row; ``to_csv``
    writes exactly those rows (:func:`tailclip.engine.tables.summary_markdown` renders them
    for reading).
    """

    configs: list[ConfigSummary]
    keys: list[str]
    varying: list[str]
    baseline: str | None = None

    def config(self, group_key: str) -> ConfigSummary:
        """The summary of the configuration ``group_key``."""
        for summary in self.configs:
            if summary.group_key == group_key:
                return summary
        raise KeyError(group_key)

    def rows(self) -> list[dict[str, Any]]:
        """Long-form rows: configuration x key x which, with stats and runtime columns."""
        rows: list[dict[str, Any]] = []
        for summary in self.configs:
            runtime = summary.step_seconds.median if summary.step_seconds else None
            for key in self.keys:
                metric = summary.metrics.get(key)
                if metric is None:
                    continue
                for which, stats in (("final", metric.final), ("best", metric.best)):
                    if stats is None:
                        continue
                    rows.append(
                        {
                            "group_key": summary.group_key,
                            "name": summary.name,
                            "label": summary.label,
                            "n_runs": summary.n_runs,
                            "n_failed": summary.n_failed,
                            "key": key,
                            "which": which,
                            "direction": metric.direction or "",
                            "n": stats.n,
                            "n_nonfinite": stats.n_nonfinite,
                            "mean": stats.mean,
                            "sd": stats.sd,
                            "median": stats.median,
                            "q05": stats.q05,
                            "q95": stats.q95,
                            "step_seconds_median": runtime,
                            "overhead": summary.overhead,
                        }
                    )
        return rows

    def to_csv(self, path: str | Path | None = None) -> str:
        """The ``rows()`` as CSV text (full float precision); also written to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        text = buffer.getvalue()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def runtime_rows(self) -> list[dict[str, Any]]:
        """One row per configuration: runs, failures, runtime per step and overhead."""
        rows = []
        for summary in self.configs:
            stats = summary.step_seconds
            rows.append(
                {
                    "group_key": summary.group_key,
                    "label": summary.label,
                    "n_runs": summary.n_runs,
                    "n_failed": summary.n_failed,
                    "n_unfinished": summary.n_unfinished,
                    "step_seconds_median": stats.median if stats else None,
                    "step_seconds_mean": stats.mean if stats else None,
                    "step_seconds_sd": stats.sd if stats else None,
                    "overhead": summary.overhead,
                    "baseline": summary.group_key == self.baseline,
                }
            )
        return rows

def consolidate(
    store: ResultsStore | str | Path | RunSet,
    *,
    keys: Sequence[str] | None = None,
    baseline: str | None = None,
    best: Mapping[str, Direction] | None = None,
    name: str | None = None,
    statuses: Sequence[str] = ("finished",),
) -> SummaryTable:
    """Consolidate the runs of ``store`` per configuration across seeds (see the module docstring).

    ``keys``: metric keys to summarise (default: every logged key except ``time/*``);
    ``baseline``: the configuration the overhead is relative to (see ``resolve_baseline``);
    ``best``: per-key overrides of ``best_direction``; ``name``: only runs of this experiment
    name; ``statuses``: the run statuses consolidated (others are counted as failed/unfinished).
    A ``RunSet`` is used as loaded (its own name and statuses).
    """
    data = _run_set(store, name, statuses)
    groups, series = data.groups, data.series
    if keys is None:
        keys = _order_keys(k for k in data.keys if not k.startswith("time/"))
    else:
        keys = list(keys)
    configs = {gk: runs[0].config for gk, runs in groups.items()}
    labels, params, varying = config_labels(configs)
    short: dict[str, str] = {}
    for experiment in {str(c.get("name")) for c in configs.values()}:
        short.update(short_labels({gk: c for gk, c in configs.items() if str(c.get("name")) == experiment}))
    summaries = []
    for gk, runs in groups.items():
        metrics: dict[str, MetricSummary] = {}
        for key in keys:
            direction = best_direction(key, best)
            finals, bests = [], []
            for run in runs:
                found = series.get(run.run_id, {}).get(key)
                if found is None or len(found[0]) == 0:
                    continue
                steps, values = found
                finals.append(float(values[int(np.argmax(steps))]))
                if direction is not None:
                    bests.append(best_of_run(values, direction))
            if finals:
                metrics[key] = MetricSummary(
                    key, direction, Stats.of(finals), Stats.of(bests) if direction is not None else None
                )
        times = [run_step_seconds(r, series.get(r.run_id)) for r in runs]
        times = [t for t in times if t is not None]
        others = [r for r in data.runs if r.group_key == gk and r.status not in data.statuses]
        summaries.append(
            ConfigSummary(
                group_key=gk,
                name=str(runs[0].config.get("name", runs[0].name)),
                label=labels[gk],
                params=params[gk],
                run_ids=[r.run_id for r in runs],
                seeds=[r.seed for r in runs],
                n_failed=sum(r.status == "failed" for r in others),
                n_unfinished=sum(r.status in ("pending", "running") for r in others),
                metrics=metrics,
                step_seconds=Stats.of(times) if times else None,
                short_label=short[gk],
            )
        )
    summaries.sort(key=lambda s: param_order(s.params, varying, s.label))
    baseline_key = None
    if baseline is not None:
        baseline_key = resolve_baseline(baseline, labels, configs, short)
        reference = next(s for s in summaries if s.group_key == baseline_key).step_seconds
        if reference is None or not reference.median > 0:
            raise ValueError(
                f"Invalid baseline: {baseline!r} has no runtime; allowed: a configuration with "
                "time/step_seconds or wall_time"
            )
        for summary in summaries:
            if summary.step_seconds is not None:
                summary.overhead = summary.step_seconds.median / reference.median
    return SummaryTable(configs=summaries, keys=list(keys), varying=varying, baseline=baseline_key)


def quantile_bands(
    store: ResultsStore | str | Path | RunSet,
    key: str,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9, 0.99),
    by: Literal["group", "run"] = "group",
    *,
    name: str | None = None,
    statuses: Sequence[str] = ("finished",),
) -> dict[str, QuantileBand]:
    """Per configuration (``by="group"``) or per run (``by="run"``), quantiles of ``key`` against step.

    If the runs logged ``key`` itself, the band at step t is ``np.quantile`` over the runs of
    the configuration of their value at t (linear interpolation), on the steps all those runs
    logged; a NaN counts as the worst value (+inf, -inf for score-like keys), as the runner
    counts it for the R runs of a vectorized task. If they logged ``key/q<pct>`` (vectorized
    tasks: quantiles across R independent runs in one tensor), each requested quantile must
    be among the logged levels; over several seeds the logged quantile curves are averaged
    (quantile averaging). ``by="run"`` needs logged quantiles (one run alone has no spread).
    """
    if by not in ("group", "run"):
        raise ValueError(f"Invalid by: {by!r}; allowed: 'group', 'run'")
    qs = tuple(float(q) for q in quantiles)
    if not qs or any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"Invalid quantiles: {quantiles!r}; allowed: values in [0, 1]")
    data = _run_set(store, name, statuses)
    available = data.keys
    levels = logged_quantiles(available, key)
    if key not in available and not levels:
        known = ", ".join(sorted({base_key(k) for k in available})) or "none"
        raise ValueError(f"Invalid key: {key!r} was not logged; allowed: {known}")
    vectorized = key not in available
    columns: list[str] = []
    if vectorized:
        missing = [q for q in qs if not any(math.isclose(q, level) for level in levels)]
        if missing:
            raise ValueError(
                f"Invalid quantiles: {missing} not logged for {key!r}; allowed: {sorted(levels)}"
            )
        columns = [levels[next(level for level in levels if math.isclose(q, level))] for q in qs]
    elif by == "run":
        raise ValueError(f"Invalid by: 'run' needs logged quantiles ({key}/q50, ...); allowed: 'group'")
    labels, _, _ = config_labels({gk: runs[0].config for gk, runs in data.groups.items()})
    bands: dict[str, QuantileBand] = {}
    for gk, runs in data.groups.items():
        members = [[r] for r in runs] if by == "run" else [runs]
        for subset in members:
            band_id = subset[0].run_id if by == "run" else gk
            label = labels[gk] + (f" (seed {subset[0].seed})" if by == "run" else "")
            ids = [r.run_id for r in subset]
            if vectorized:
                band = band_from_logged(data.series, ids, columns)
            else:
                band = band_across_runs(data.series, ids, key, qs)
            if band is None:
                continue
            source: Literal["runs", "vectorized"] = "vectorized" if vectorized else "runs"
            bands[band_id] = QuantileBand(band_id, label, key, band[0], qs, band[1], len(subset), source)
    return bands


def _order_keys(keys: Iterable[str]) -> list[str]:
    """train/*, eval/*, then other keys, then opt/*; alphabetical within each, quantiles in order."""

    def rank(key: str) -> tuple[int, str, float, str]:
        prefix = key.split("/", 1)[0]
        order = {"train": 0, "eval": 1, "opt": 3}.get(prefix, 2)
        match = QUANTILE_SUFFIX.match(key)
        if match:
            return order, match.group("base"), float(match.group("pct")), key
        if key.endswith("/mean"):
            return order, base_key(key), -1.0, key
        return order, key, -2.0, key

    return sorted(keys, key=rank)
