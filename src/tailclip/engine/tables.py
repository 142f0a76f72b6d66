"""Consolidated tables and quantile bands from a results store.

Consolidation (``consolidate``) groups the runs of a store by configuration: runs whose
resolved configs differ only in ``train.seed`` share a ``group_key``. For every metric key and
every configuration it summarises, over the n runs (seeds) of that configuration:

* ``final``: the value logged at the largest step of each run;
* ``best``: the minimum over steps for loss-like keys, the maximum for score-like keys
  (see ``best_direction``; ``best={key: "min" | "max" | None}`` overrides the rule);

each as mean +- sd (sample sd, ddof = 1), median, the 5% and 95% quantiles and n. Statistics
use the finite values only; ``n_nonfinite`` counts runs that ended at inf or nan (a diverged
run under heavy-tailed noise is a result, so it is counted, not hidden).

Runtime per step of a run is the median of its ``time/step_seconds`` values when it logged
them (the median discards the first-step warm-up), else ``wall_time / steps``. A configuration's
runtime is the median over its runs, and its overhead against a named baseline configuration
is the ratio of the two medians (the runtime comparison of the AGNI repository, ``seeds/001_*``
in ``../shared/papers.md``).

The high-probability view (``quantile_bands``) follows Chezhegov et al.: per configuration, the
q-quantiles of a metric against the step, either across the runs (seeds) of the configuration
or, for vectorized synthetic tasks that log ``<key>/q10``, ``<key>/q50``, ... themselves,
from those logged quantiles (averaged over seeds when there are several: quantile averaging).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tailclip.engine.store import ResultsStore

Direction = Literal["min", "max"] | None

__all__ = [
    "ConfigSummary",
    "MetricSummary",
    "QuantileBand",
    "Stats",
    "SummaryTable",
    "best_direction",
    "consolidate",
    "format_float",
    "quantile_bands",
    "run_step_seconds",
]

_QUANTILE_SUFFIX = re.compile(r"^(?P<base>.+)/q(?P<pct>\d+(?:\.\d+)?)$")
_LOSS_LIKE = re.compile(
    r"loss|err|error|nll|mse|mae|rmse|perplexity|ppl|regret|gap|subopt|dist|distance|residual"
)
_SCORE_LIKE = re.compile(r"acc|accuracy|f1|mcc|auc|score|precision|recall|bleu|rouge|corr|spearman|pearson")
_NO_BEST_PREFIXES = ("opt/", "time/")


def _open(store: ResultsStore | str | Path) -> ResultsStore:
    return store if isinstance(store, ResultsStore) else ResultsStore(store, read_only=True)


def base_key(key: str) -> str:
    """``key`` without a logged-quantile or mean suffix: ``train/loss/q99`` -> ``train/loss``."""
    match = _QUANTILE_SUFFIX.match(key)
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


@dataclass(frozen=True)
class MetricSummary:
    """``final`` and ``best`` statistics of one metric key over the runs of one configuration."""

    key: str
    direction: Direction
    final: Stats
    best: Stats | None


@dataclass
class ConfigSummary:
    """One configuration (``group_key``): its runs, metric summaries and runtime."""

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
    writes exactly those rows and ``to_markdown`` renders them for reading.
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

    def to_markdown(self, keys: Sequence[str] | None = None) -> str:
        """Markdown: a runtime table, then one table of final/best statistics per configuration x key."""
        keys = list(self.keys if keys is None else keys)
        lines = ["| configuration | runs | failed | ms / step (median) | overhead |", "|---|---|---|---|---|"]
        for row in self.runtime_rows():
            ms = None if row["step_seconds_median"] is None else 1e3 * row["step_seconds_median"]
            overhead = "baseline" if row["baseline"] else (
                "—" if row["overhead"] is None else f"{row['overhead']:.3f}x"
            )
            cells = [_md(row["label"]), str(row["n_runs"]), str(row["n_failed"]), format_float(ms), overhead]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "| configuration | metric | n | final mean ± sd | final median | final [5%, 95%] "
            "| best mean ± sd | best median | best [5%, 95%] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for summary in self.configs:
            for key in keys:
                metric = summary.metrics.get(key)
                if metric is None:
                    continue
                final, best = metric.final, metric.best
                n = f"{final.n}" + (f" ({final.n_nonfinite} non-finite)" if final.n_nonfinite else "")
                best_cells = (
                    [best.mean_sd(), format_float(best.median), best.interval()]
                    if best is not None
                    else ["—", "—", "—"]
                )
                cells = [_md(summary.label), _md(key), n, final.mean_sd(), format_float(final.median),
                         final.interval(), *best_cells]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    if isinstance(value, list | tuple):
        return {prefix: json.dumps(value, sort_keys=True, default=str)}
    return {prefix: value}


def _owner(key: str) -> str:
    """The section a dotted key belongs to: ``optimizer.lr`` -> ``optimizer``; a ``.name`` key
    belongs to the section above the one it names (``optimizer.name`` -> ``""``)."""
    parts = key.split(".")
    if parts[-1] == "name":
        parts = parts[:-1]
    return ".".join(parts[:-1])


def _named_owner(key: str, keys: set[str]) -> str | None:
    """The deepest section above ``key`` with a ``name`` (``task``, ``optimizer``, a wrapped optimizer)."""
    owner = _owner(key)
    while owner:
        if f"{owner}.name" in keys:
            return owner
        owner = owner.rpartition(".")[0]
    return None


def _same(values: Iterable[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) <= 1


def _pool_tag(flat: Mapping[str, Any], owner: str | None) -> str:
    return "" if owner is None else json.dumps(flat.get(f"{owner}.name"), default=str)


PoolKeys = dict[tuple[str | None, str], set[str]]


def _varying_keys(configs: Sequence[Mapping[str, Any]]) -> tuple[list[str], PoolKeys]:
    """Dotted keys whose value differs between ``configs`` (``train.seed`` aside), and per
    (named section, name) the keys that differ among the configs with that name.

    A key of a named section (``optimizer.lr``) is compared only among configs whose section
    has the same name, so swapping whole optimizers does not make every default of every
    optimizer "vary". ``X.name`` keys come first, so configurations sort by name.
    """
    flats = [_flatten(c) for c in configs]
    keys = {k for flat in flats for k in flat} - {"train.seed"}
    varying: list[str] = []
    per_pool: PoolKeys = {}
    for key in sorted(keys, key=lambda k: (k.rpartition(".")[0] if k.endswith(".name") else k, k)):
        owner = _named_owner(key, keys)
        pools: dict[str, list[Any]] = {}
        for flat in flats:
            pools.setdefault(_pool_tag(flat, owner), []).append(flat.get(key))
        for tag, values in pools.items():
            if not _same(values):
                per_pool.setdefault((owner, tag), set()).add(key)
                if key not in varying:
                    varying.append(key)
    # Hyperparameters read best first; `name` only when it is all that differs.
    return [k for k in varying if k != "name"] or [k for k in varying if k == "name"], per_pool


def _label(flat: Mapping[str, Any], varying: Sequence[str], per_pool: PoolKeys) -> str:
    """``key=value, ...``; a section whose name varies reads ``name(key=value, ...)`` with the
    keys that vary among the configurations of that name."""
    keys = set(flat) | set(varying)
    sections = {k[: -len(".name")] for k in varying if k.endswith(".name")}
    out: list[str] = []
    done: set[str] = set()
    for key in varying:
        named = key.endswith(".name") and key[: -len(".name")] in sections
        section = key[: -len(".name")] if named else _named_owner(key, keys)
        if section in sections:
            if section in done:
                continue
            done.add(section)
            local = per_pool.get((section, _pool_tag(flat, section)), set())
            shown = [k for k in varying if k in local and k in flat]
            inner = ", ".join(f"{k[len(section) + 1:]}={_format_param(flat[k])}" for k in shown)
            head = str(flat.get(f"{section}.name"))
            text = f"{head}({inner})" if inner else head
            out.append(text if "." not in section else f"{section.split('.', 1)[1]}={text}")
        else:
            out.append(f"{key}={_format_param(flat.get(key))}")
    return ", ".join(out)


def _format_param(value: Any) -> str:
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def _select_runs(store: ResultsStore, name: str | None, statuses: Sequence[str] | None) -> list[Any]:
    runs = store.runs(name=name)
    if statuses is not None:
        allowed = ("pending", "running", "finished", "failed")
        for status in statuses:
            if status not in allowed:
                raise ValueError(f"Invalid status: {status!r}; allowed: {', '.join(allowed)}")
    return runs


def _groups(runs: Sequence[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for run in sorted(runs, key=lambda r: (r.group_key, r.seed if r.seed is not None else 0, r.run_id)):
        groups.setdefault(run.group_key, []).append(run)
    return groups


def _labels(
    groups: Mapping[str, Sequence[Any]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]], list[str]]:
    first = {gk: runs[0].config for gk, runs in groups.items()}
    varying, per_pool = _varying_keys(list(first.values()))
    labels, params = {}, {}
    for gk, config in first.items():
        flat = _flatten(config)
        params[gk] = {k: flat.get(k) for k in varying}
        if varying:
            labels[gk] = _label(flat, varying, per_pool)
        else:
            labels[gk] = str(config.get("name") or gk[:8])
    return labels, params, varying


def run_step_seconds(run: Any, series: Mapping[str, tuple[np.ndarray, np.ndarray]] | None) -> float | None:
    """Seconds per step of one run: median of ``time/step_seconds`` if logged, else wall_time / steps."""
    if series and "time/step_seconds" in series:
        values = np.asarray(series["time/step_seconds"][1], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            return float(np.median(values))
    if run.wall_time is not None and run.steps:
        return float(run.wall_time) / float(run.steps)
    return None


def resolve_baseline(
    baseline: str, labels: Mapping[str, str], configs: Mapping[str, Mapping[str, Any]]
) -> str:
    """The group_key that ``baseline`` names.

    ``baseline`` may be a group_key or a unique prefix of one (>= 4 characters), a label
    exactly as shown in the tables, a unique config ``name``, or ``key=value[,key=value...]``
    over dotted config keys (``optimizer.name=adamw,optimizer.lr=1e-3``).
    """
    if baseline in labels:
        return baseline
    matches = [gk for gk, label in labels.items() if label == baseline]
    if not matches and len(baseline) >= 4:
        matches = [gk for gk in labels if gk.startswith(baseline)]
    if not matches:
        matches = [gk for gk, c in configs.items() if c.get("name") == baseline]
    if not matches and "=" in baseline:
        wanted = {}
        for part in baseline.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"Invalid baseline: {baseline!r}; allowed: key=value[,key=value...]")
            wanted[key.strip()] = value.strip()
        matches = [
            gk for gk, c in configs.items()
            if all(_same_value(_flatten(c).get(k, _MISSING), v) for k, v in wanted.items())
        ]
    if len(matches) != 1:
        names = sorted(labels.values())
        choices = "; ".join(names[:10]) + ("; ..." if len(names) > 10 else "")
        what = "matches no configuration" if not matches else f"matches {len(matches)} configurations"
        raise ValueError(f"Invalid baseline: {baseline!r} {what}; allowed: a group key, a label ({choices}) "
                         f"or key=value pairs")
    return matches[0]


_MISSING = object()


def _same_value(actual: Any, wanted: str) -> bool:
    if actual is _MISSING:
        return False
    if str(actual) == wanted or (actual is None and wanted.lower() in ("none", "null")):
        return True
    if isinstance(actual, bool):
        return wanted.lower() == str(actual).lower()
    if isinstance(actual, int | float):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-12, abs_tol=0.0)
        except ValueError:
            return False
    return False


def consolidate(
    store: ResultsStore | str | Path,
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
    """
    store = _open(store)
    all_runs = _select_runs(store, name, statuses)
    groups_all = _groups(all_runs)
    selected = {gk: [r for r in runs if r.status in statuses] for gk, runs in groups_all.items()}
    selected = {gk: runs for gk, runs in selected.items() if runs}
    run_ids = [r.run_id for runs in selected.values() for r in runs]
    series = store.metrics(run_ids=run_ids) if run_ids else {}
    if keys is None:
        key_set = {k for per_run in series.values() for k in per_run if not k.startswith("time/")}
        keys = _order_keys(key_set)
    else:
        keys = list(keys)
    labels, params, varying = _labels(selected)
    configs = {gk: runs[0].config for gk, runs in selected.items()}
    summaries = []
    for gk, runs in selected.items():
        metrics: dict[str, MetricSummary] = {}
        for key in keys:
            finals, bests = [], []
            direction = best_direction(key, best)
            for run in runs:
                data = series.get(run.run_id, {}).get(key)
                if data is None or len(data[0]) == 0:
                    continue
                steps, values = np.asarray(data[0]), np.asarray(data[1], dtype=np.float64)
                finals.append(float(values[int(np.argmax(steps))]))
                if direction is not None:
                    bests.append(_extreme(values, direction))
            if finals:
                metrics[key] = MetricSummary(
                    key, direction, Stats.of(finals), Stats.of(bests) if direction is not None else None
                )
        times = [run_step_seconds(r, series.get(r.run_id)) for r in runs]
        times = [t for t in times if t is not None]
        others = [r for r in groups_all[gk] if r.status not in statuses]
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
            )
        )
    summaries.sort(key=lambda s: _param_order(s.params, varying, s.label))
    baseline_key = None
    if baseline is not None:
        baseline_key = resolve_baseline(baseline, labels, configs)
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


def _param_order(params: Mapping[str, Any], varying: Sequence[str], label: str) -> tuple[Any, ...]:
    """Sort key: configurations ordered by their varying parameters (numbers numerically)."""
    parts: list[tuple[int, Any]] = []
    for key in varying:
        value = params.get(key)
        if value is None:
            parts.append((0, 0))
        elif isinstance(value, bool):
            parts.append((1, int(value)))
        elif isinstance(value, int | float):
            parts.append((2, float(value)))
        else:
            parts.append((3, str(value)))
    return (*parts, label)


def _extreme(values: np.ndarray, direction: Literal["min", "max"]) -> float:
    # nan (a diverged step) must not hide as the best value, nor poison it.
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan")
    return float(finite.min() if direction == "min" else finite.max())


def _order_keys(keys: Iterable[str]) -> list[str]:
    """train/*, eval/*, then other keys, then opt/*; alphabetical within each, quantiles in order."""

    def rank(key: str) -> tuple[int, str, float, str]:
        prefix = key.split("/", 1)[0]
        order = {"train": 0, "eval": 1, "opt": 3}.get(prefix, 2)
        match = _QUANTILE_SUFFIX.match(key)
        if match:
            return order, match.group("base"), float(match.group("pct")), key
        if key.endswith("/mean"):
            return order, base_key(key), -1.0, key
        return order, key, -2.0, key

    return sorted(keys, key=rank)


def logged_quantiles(keys: Iterable[str], key: str) -> dict[float, str]:
    """Quantile levels logged for ``key`` by a vectorized task: ``{0.1: "key/q10", ...}``."""
    found = {}
    for candidate in keys:
        match = _QUANTILE_SUFFIX.match(candidate)
        if match and match.group("base") == key:
            found[float(match.group("pct")) / 100.0] = candidate
    return dict(sorted(found.items()))


def quantile_bands(
    store: ResultsStore | str | Path,
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
    store = _open(store)
    groups = _groups([r for r in _select_runs(store, name, statuses) if r.status in statuses])
    run_ids = [r.run_id for runs in groups.values() for r in runs]
    available = set(store.metric_keys(run_ids)) if run_ids else set()
    levels = logged_quantiles(available, key)
    vectorized = key not in available and bool(levels)
    wanted = list(levels.values()) if vectorized else [key]
    series = store.metrics(run_ids=run_ids, keys=wanted) if run_ids else {}
    if key not in available and not levels:
        known = ", ".join(sorted({base_key(k) for k in available})) or "none"
        raise ValueError(f"Invalid key: {key!r} was not logged; allowed: {known}")
    if vectorized:
        missing = [q for q in qs if not any(math.isclose(q, level) for level in levels)]
        if missing:
            raise ValueError(
                f"Invalid quantiles: {missing} not logged for {key!r}; allowed: {sorted(levels)}"
            )
        columns = [levels[next(level for level in levels if math.isclose(q, level))] for q in qs]
    elif by == "run":
        raise ValueError(f"Invalid by: 'run' needs logged quantiles ({key}/q50, ...); allowed: 'group'")
    labels, _, _ = _labels(groups)
    bands: dict[str, QuantileBand] = {}
    for gk, runs in groups.items():
        members = [[r] for r in runs] if by == "run" else [runs]
        for subset in members:
            band_id = subset[0].run_id if by == "run" else gk
            label = labels[gk] + (f" (seed {subset[0].seed})" if by == "run" else "")
            if vectorized:
                band = _vectorized_band(series, subset, columns)
                source: Literal["runs", "vectorized"] = "vectorized"
            else:
                band = _runs_band(series, subset, key, qs)
                source = "runs"
            if band is None:
                continue
            steps, values = band
            bands[band_id] = QuantileBand(band_id, label, key, steps, qs, values, len(subset), source)
    return bands


def _aligned(
    series: Mapping[str, Any], runs: Sequence[Any], key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, runs x steps values) on the steps every run logged ``key``; None if some run lacks it."""
    curves = []
    for run in runs:
        data = series.get(run.run_id, {}).get(key)
        if data is None or len(data[0]) == 0:
            return None
        curves.append((np.asarray(data[0], dtype=np.int64), np.asarray(data[1], dtype=np.float64)))
    common = curves[0][0]
    for steps, _ in curves[1:]:
        common = np.intersect1d(common, steps)
    if common.size == 0:
        return None
    rows = []
    for steps, values in curves:
        order = np.argsort(steps, kind="stable")
        rows.append(values[order][np.searchsorted(steps[order], common)])
    return common, np.stack(rows)


def _runs_band(series: Mapping[str, Any], runs: Sequence[Any], key: str, qs: tuple[float, ...]):
    aligned = _aligned(series, runs, key)
    if aligned is None:
        return None
    steps, matrix = aligned
    # A NaN (diverged) value is the worst value: +inf, or -inf for a score (as the runner does for R runs).
    worst = -np.inf if best_direction(key) == "max" else np.inf
    return steps, quantile_columns(np.where(np.isnan(matrix), worst, matrix), qs)


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


def _vectorized_band(series: Mapping[str, Any], runs: Sequence[Any], columns: Sequence[str]):
    per_level = []
    for column in columns:
        aligned = _aligned(series, runs, column)
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
