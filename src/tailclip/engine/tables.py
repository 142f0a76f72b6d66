"""Tables of consolidated results, rendered: Markdown and sortable HTML.

The numbers come from :func:`tailclip.engine.consolidate.consolidate`; this module only lays
them out. HTML tables are ``<table class="sortable">``: the report's inline script sorts them
by a click on a header, numbers by the ``data-v`` attribute of their cells.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from tailclip.engine.consolidate import ConfigSummary, SummaryTable
from tailclip.engine.statistics import Direction, Stats, format_float

__all__ = [
    "HtmlTable",
    "escape",
    "experiment_table_html",
    "label_html",
    "metrics_html",
    "summary_html",
    "summary_markdown",
]


def escape(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def num_attr(value: float | None) -> str:
    """A number as a ``data-v`` sort key (empty for missing or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


class HtmlTable:
    """A sortable HTML table: text cells left-aligned, numeric cells carry data-v for sorting."""

    def __init__(
        self, headers: Sequence[tuple[str, bool]], css_id: str | None = None, css_class: str = ""
    ) -> None:
        self.headers = headers
        self.rows: list[tuple[str, list[str]]] = []
        self.css_id = css_id
        self.css_class = css_class

    def add(self, cells: Sequence[tuple[str, float | None] | str], row_class: str = "") -> None:
        out = []
        for (_, is_text), cell in zip(self.headers, cells, strict=True):
            if isinstance(cell, tuple):
                shown, number = cell
                out.append(f'<td data-v="{num_attr(number)}">{shown}</td>')
            else:
                out.append(f'<td class="text">{cell}</td>' if is_text else f"<td>{cell}</td>")
        self.rows.append((row_class, out))

    def html(self) -> str:
        head = "".join(
            f'<th class="text" scope="col">{escape(h)}</th>' if is_text
            else f'<th scope="col">{escape(h)}</th>'
            for h, is_text in self.headers
        )
        body = "\n".join(
            (f'<tr class="{row_class}">' if row_class else "<tr>") + "".join(cells) + "</tr>"
            for row_class, cells in self.rows
        )
        ident = f' id="{self.css_id}"' if self.css_id else ""
        classes = " ".join(["sortable", self.css_class]).strip()
        return (f'<table class="{classes}"{ident}><thead><tr>{head}</tr></thead>\n'
                f"<tbody>\n{body}\n</tbody></table>")


def label_html(summary: ConfigSummary) -> str:
    """A configuration's short label (``<span class="label">``), its full label as the tooltip."""
    short = summary.short_label or summary.label
    return f'<span class="label" title="{escape(summary.label)}">{escape(short)}</span>'


def experiment_table_html(configs: Sequence[ConfigSummary], keys: Sequence[str], baseline: str | None) -> str:
    """One row per configuration, per headline metric its final (and best) value, mean ± sd over
    seeds; the best configuration of each column in bold (lowest for a loss, highest for a score)."""
    columns: list[tuple[str, str, Direction]] = []
    for key in keys:
        metrics = [c.metrics[key] for c in configs if key in c.metrics]
        if not metrics:
            continue
        direction = metrics[0].direction
        columns.append((key, "final", direction))
        if direction is not None and any(m.best is not None for m in metrics):
            columns.append((key, "best", direction))
    headers = [("configuration", True), ("seeds", False)]
    headers += [(f"{which} {key}", False) for key, which, _ in columns]
    headers.append(("ms / step", False))
    best_rows: dict[int, int] = {}
    for j, (key, which, direction) in enumerate(columns):
        means = [_mean(c, key, which) for c in configs]
        finite = [(m, i) for i, m in enumerate(means) if m is not None and math.isfinite(m)]
        if direction is not None and len(finite) > 1:
            best_rows[j] = (min(finite) if direction == "min" else max(finite))[1]
    table = HtmlTable(headers, css_class="experiment-table")
    for i, config in enumerate(configs):
        cells: list[tuple[str, float | None] | str] = [
            label_html(config), (str(config.n_runs), config.n_runs)
        ]
        for j, (key, which, _) in enumerate(columns):
            metric = config.metrics.get(key)
            stats = None if metric is None else (metric.final if which == "final" else metric.best)
            if stats is None:
                cells.append(("—", None))
                continue
            text = escape(stats.mean_sd())
            cells.append((f"<b>{text}</b>" if best_rows.get(j) == i else text, stats.mean))
        ms = None if config.step_seconds is None else 1e3 * config.step_seconds.median
        cells.append((escape(format_float(ms)), ms))
        table.add(cells, row_class="baseline" if config.group_key == baseline else "")
    return table.html()


def _mean(config: ConfigSummary, key: str, which: str) -> float | None:
    metric = config.metrics.get(key)
    stats = None if metric is None else (metric.final if which == "final" else metric.best)
    return None if stats is None else stats.mean


def _stat_cells(stats: Stats | None) -> list[tuple[str, float | None] | str]:
    if stats is None:
        return [("—", None)] * 4
    return [
        (escape(stats.mean_sd()), stats.mean),
        (escape(format_float(stats.median)), stats.median),
        (escape(format_float(stats.q05)), stats.q05),
        (escape(format_float(stats.q95)), stats.q95),
    ]


def summary_html(table: SummaryTable) -> str:
    """Runtime per step (with the overhead against the baseline) and :func:`metrics_html`."""
    parts = ["<h3>Runtime per step</h3>"]
    runtime = HtmlTable(
        [("configuration", True), ("runs", False), ("failed", False), ("unfinished", False),
         ("ms / step (median)", False), ("ms / step (mean ± sd)", False), ("overhead", False)],
        css_id="runtime-table",
    )
    for row in table.runtime_rows():
        median = row["step_seconds_median"]
        mean, sd = row["step_seconds_mean"], row["step_seconds_sd"]
        mean_sd = "—" if mean is None else format_float(1e3 * mean) + (
            "" if sd is None or math.isnan(sd) else f" ± {format_float(1e3 * sd)}"
        )
        overhead = row["overhead"]
        overhead_text = "—" if overhead is None else f"{overhead:.3f}×"
        if row["baseline"]:
            overhead_text += " (baseline)"
        runtime.add(
            [
                label_html(table.config(row["group_key"])),
                (str(row["n_runs"]), row["n_runs"]),
                (str(row["n_failed"]), row["n_failed"]),
                (str(row["n_unfinished"]), row["n_unfinished"]),
                (escape(format_float(None if median is None else 1e3 * median)), median),
                (escape(mean_sd), mean),
                (escape(overhead_text), overhead),
            ],
            row_class="baseline" if row["baseline"] else "",
        )
    parts.append(runtime.html())
    if table.baseline is None:
        parts.append('<p class="note">No baseline named: pass <code>baseline=</code> '
                     "(<code>--baseline</code>) to see the overhead ratio of median times per step.</p>")
    parts.append("<h3>Every metric</h3>")
    parts.append(metrics_html(table))
    return "\n".join(parts)


def metrics_html(table: SummaryTable) -> str:
    """One sortable table of every metric x configuration: final and best statistics over seeds
    (mean ± sd, median, 5% and 95% quantiles, n); training and validation keys first."""
    headers = [("metric", True), ("configuration", True), ("n", False), ("final mean ± sd", False),
               ("final median", False), ("final 5%", False), ("final 95%", False), ("best", True),
               ("best mean ± sd", False), ("best median", False), ("best 5%", False), ("best 95%", False)]
    html_table = HtmlTable(headers, css_id="metrics-table")
    main = [k for k in table.keys if k.startswith(("train/", "eval/"))]
    for key in main + [k for k in table.keys if k not in main]:
        for summary in table.configs:
            metric = summary.metrics.get(key)
            if metric is None:
                continue
            n_text = str(metric.final.n) + (f" ({metric.final.n_nonfinite} non-finite)"
                                            if metric.final.n_nonfinite else "")
            cells: list[tuple[str, float | None] | str] = [
                escape(key), label_html(summary), (escape(n_text), metric.final.n)
            ]
            cells += _stat_cells(metric.final)
            cells.append(escape(metric.direction or "—"))
            cells += _stat_cells(metric.best)
            html_table.add(cells, row_class="baseline" if summary.group_key == table.baseline else "")
    return html_table.html()


def summary_markdown(table: SummaryTable, keys: Sequence[str] | None = None) -> str:
    """Markdown: a runtime table, then one table of final/best statistics per configuration x key."""
    keys = list(table.keys if keys is None else keys)
    lines = ["| configuration | runs | failed | ms / step (median) | overhead |", "|---|---|---|---|---|"]
    for row in table.runtime_rows():
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
    for summary in table.configs:
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
