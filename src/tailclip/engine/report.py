"""One self-contained HTML report of a results store.

``write_report(store, "report.html")`` writes a single file that opens offline: no network,
no external script, style sheet, font or image. Its sections:

* Summary: runtime per step and overhead against a baseline configuration, then per metric
  the final and best values across seeds (mean +- sd, median, 5%/95% quantiles, n), as
  computed by ``tailclip.engine.tables.consolidate``. Every table sorts by clicking a header
  (a few lines of inline JavaScript).
* Curves: per metric, the median over seeds against the step with a 10-90% band.
* High-probability view: per metric, the 10/50/90/99% quantiles against the step, one panel
  per quantile and one line per configuration (the figures of Chezhegov et al.), across seeds
  or from the quantiles a vectorized task logged over its R runs.
* Final values across runs: the empirical survival function P(X > x) of the per-run final
  values that vectorized tasks save (``per_run/<key>`` artifacts), log-log: a straight tail is
  a power law.
* Noise diagnostics: what runs recorded under artifact kinds ``noise/*`` (PNG/SVG figures are
  embedded, JSON is shown as a table or as text).
* Runs: status, seed, steps, wall time, time per step, host, error.

Figures are drawn with matplotlib's Agg canvas and embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tailclip.engine.consolidate import RunSet, SummaryTable, consolidate, load_runs, quantile_bands
from tailclip.engine.statistics import (
    QuantileBand,
    base_key,
    best_direction,
    format_float,
    logged_quantiles,
    run_step_seconds,
)
from tailclip.engine.store import STATUSES, ResultsStore
from tailclip.engine.tables import HtmlTable, summary_html
from tailclip.engine.tables import escape as _e

__all__ = ["render_report", "report_command", "write_report"]

HIGH_PROBABILITY_QUANTILES = (0.1, 0.5, 0.9, 0.99)
_MAX_LEGEND = 20
_MAX_TEXT = 20_000

_CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --head: #f6f8fa; --accent: #0a5bd3; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1500px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 6px; }
.meta, .note { color: var(--muted); }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: var(--head); cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td.text, th.text { text-align: left; }
td.text:first-child { white-space: nowrap; }
tr.baseline td { background: #eef5ff; }
.status { border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.status.finished { background: #dafbe1; } .status.failed { background: #ffebe9; }
.status.running { background: #fff8c5; } .status.pending { background: #eaeef2; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.figures.wide { grid-template-columns: 1fr; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
pre { background: var(--head); padding: 8px; overflow: auto; max-height: 360px; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
.error { color: #a40e26; max-width: 420px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
"""

# Click (or Enter on) a header to sort by that column; numbers come from data-v, text otherwise.
_JS = """
(function () {
  function value(row, col) {
    var cell = row.cells[col], v = cell ? cell.getAttribute('data-v') : null;
    if (v !== null && v !== '' && !isNaN(parseFloat(v))) { return parseFloat(v); }
    return cell ? cell.textContent.trim().toLowerCase() : '';
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col), c;
      if (typeof x === typeof y) { c = x < y ? -1 : (x > y ? 1 : 0); }
      else { c = typeof x === 'number' ? -1 : 1; }
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = 'Sort by ' + th.textContent;
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_html(fig: Figure, caption: str, alt: str) -> str:
    data = _png(fig)
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    """One color per configuration label, in table order, the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _in_order(labels: Iterable[str], palette: Mapping[str, Any]) -> list[str]:
    rank = {label: i for i, label in enumerate(palette)}
    return sorted(labels, key=lambda label: (rank.get(label, len(rank)), label))


def _color(palette: Mapping[str, Any], label: str) -> Any:
    return palette.get(label, "0.4")


def _use_log(values: Iterable[np.ndarray], key: str) -> bool:
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values] or [np.zeros(0)])
    if finite.size == 0 or np.any(finite <= 0) or best_direction(key) != "min" or key.startswith("opt/"):
        return False
    return float(finite.max()) / float(finite.min()) > 50.0


def _legend(ax: Any, n: int) -> None:
    if 1 <= n <= _MAX_LEGEND:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)


def _ordered_bands(bands: Mapping[str, QuantileBand], palette: Mapping[str, Any]) -> list[QuantileBand]:
    by_label = {band.label: band for band in bands.values()}
    return [by_label[label] for label in _in_order(by_label, palette)]


def _curves_figure(key: str, bands: Mapping[str, QuantileBand], palette: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for band in _ordered_bands(bands, palette):
        color = _color(palette, band.label)
        qs = band.quantiles
        mid = band.values[:, qs.index(0.5)] if 0.5 in qs else band.values.mean(axis=1)
        ax.plot(band.steps, mid, color=color, lw=1.4, label=f"{band.label} (n={band.n})")
        if len(qs) >= 2 and band.values.shape[0] > 0:
            ax.fill_between(band.steps, band.values[:, 0], band.values[:, -1], color=color, alpha=0.18, lw=0)
    if _use_log([b.values for b in bands.values()], key):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    _legend(ax, len(bands))
    return fig


def _quantile_figure(key: str, bands: Mapping[str, QuantileBand], palette: Mapping[str, Any]) -> Figure:
    quantiles = next(iter(bands.values())).quantiles
    fig = Figure(figsize=(3.3 * len(quantiles) + 0.6, 3.4), layout="constrained")
    axes = fig.subplots(1, len(quantiles), sharey=True, squeeze=False)[0]
    log = _use_log([b.values for b in bands.values()], key)
    ordered = _ordered_bands(bands, palette)
    for j, (ax, q) in enumerate(zip(axes, quantiles, strict=True)):
        for band in ordered:
            color = _color(palette, band.label)
            ax.plot(band.steps, band.values[:, j], color=color, lw=1.3, label=band.label)
        ax.set_title(f"{100 * q:g}% quantile", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[0].set_ylabel(key)
    _legend(axes[-1], len(bands))
    return fig


def _survival_figure(key: str, samples: Mapping[str, np.ndarray], palette: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    log = True
    for label in _in_order(samples, palette):
        values, color = samples[label], _color(palette, label)
        finite = np.sort(values[np.isfinite(values)])
        if finite.size == 0:
            continue
        survival = 1.0 - np.arange(finite.size) / finite.size
        log = log and bool(np.all(finite > 0))
        ax.step(finite, survival, where="post", color=color, lw=1.3, label=f"{label} (R={finite.size})")
    if log:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"final {key}")
    ax.set_ylabel("P(X > x)")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(samples))
    return fig


def _resolve(path: str, store_dir: Path) -> Path | None:
    candidate = Path(path)
    options = [candidate] if candidate.is_absolute() else [store_dir / candidate, Path.cwd() / candidate]
    return next((p for p in options if p.is_file()), None)


def _noise_item(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".png", ".svg", ".jpg", ".jpeg"):
        mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(suffix, "image/jpeg")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<figure><img alt="{_e(path.name)}" src="data:{mime};base64,{data}"></figure>'
    if suffix == ".json":
        try:
            content = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            return f'<p class="note">{_e(path.name)}: unreadable JSON ({_e(error)})</p>'
        if isinstance(content, dict) and all(not isinstance(v, dict | list) for v in content.values()):
            table = HtmlTable([("field", True), ("value", False)])
            for field, value in content.items():
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                number = float(value) if is_number else None
                shown = _e(format_float(number)) if number is not None else _e(value)
                table.add([_e(field), (shown, number) if number is not None else shown])
            return table.html()
        text = json.dumps(content, indent=2, default=str)
        return f"<pre>{_e(text[:_MAX_TEXT])}</pre>"
    if suffix in (".txt", ".md", ".csv"):
        return f"<pre>{_e(path.read_text(errors='replace')[:_MAX_TEXT])}</pre>"
    return f'<p class="note">{_e(path.name)} ({path.stat().st_size} bytes, not shown)</p>'


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _curve_keys(keys: Iterable[str]) -> list[str]:
    """Base keys to plot (quantile and mean suffixes folded into their base), time/* left out."""
    seen: dict[str, None] = {}
    for key in keys:
        if not key.startswith("time/"):
            seen.setdefault(base_key(key), None)
    return list(seen)


def _bands_for(data: RunSet, key: str, quantiles: Sequence[float]) -> dict[str, QuantileBand]:
    try:
        return quantile_bands(data, key, quantiles)
    except ValueError:
        return {}


def _levels_of(bands: Mapping[str, QuantileBand], quantiles: Sequence[float]) -> dict[str, QuantileBand]:
    """The same bands restricted to the quantile levels ``quantiles`` (a subset of theirs)."""
    return {
        ident: dataclasses.replace(band, quantiles=tuple(quantiles),
                                   values=np.stack([band.at(q) for q in quantiles], axis=1))
        for ident, band in bands.items()
    }


def _figures_html(data: RunSet, table: SummaryTable, palette: Mapping[str, Any]) -> tuple[str, str]:
    """Curves and high-probability figures; the bands of each key are computed once."""
    curve_figs, hp_figs = [], []
    all_keys = data.keys
    for key in _curve_keys(table.keys):
        levels = tuple(logged_quantiles(all_keys, key)) if key not in all_keys else ()
        if levels:
            band_levels = tuple(q for q in levels if q in (0.1, 0.5, 0.9)) or levels
            shown = ", ".join(f"{100 * q:g}%" for q in band_levels)
            what = f"logged quantiles over the task's runs ({shown})"
        else:
            band_levels = (0.1, 0.5, 0.9)
            what = "median over seeds with the 10-90% band"
        hp_levels = levels or HIGH_PROBABILITY_QUANTILES
        every = _bands_for(data, key, sorted(set(band_levels) | set(hp_levels)))
        if not every:
            continue
        bands = _levels_of(every, band_levels)
        figure = _curves_figure(key, bands, palette)
        curve_figs.append(_figure_html(figure, f"{key}: {what}", f"curves of {key}"))
        if not key.startswith(("train/", "eval/")):
            continue
        if not levels and max(b.n for b in bands.values()) < 2:
            continue
        hp = _levels_of(every, hp_levels)
        source = "the task's vectorized runs" if levels else "runs (seeds)"
        n_text = ", ".join(sorted({str(b.n) for b in hp.values()}))
        hp_figs.append(_figure_html(_quantile_figure(key, hp, palette),
                                    f"{key}: quantiles across {source}; n = {n_text} per configuration",
                                    f"quantile bands of {key}"))
    return "\n".join(curve_figs), "\n".join(hp_figs)


def _per_run_html(
    runs_by_id: Mapping[str, Any],
    labels: Mapping[str, str],
    artifacts: Sequence[tuple[str, str, str]],
    store_dir: Path,
    palette: Mapping[str, Any],
) -> str:
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    for run_id, kind, path in artifacts:
        if not kind.startswith("per_run/") or run_id not in runs_by_id:
            continue
        resolved = _resolve(path, store_dir)
        if resolved is None or resolved.suffix != ".npy":
            continue
        label = labels.get(runs_by_id[run_id].group_key, run_id[:10])
        values = np.asarray(np.load(resolved, allow_pickle=False), dtype=np.float64).ravel()
        samples.setdefault(kind[len("per_run/"):], {}).setdefault(label, []).append(values)
    figures = []
    for key, per_label in samples.items():
        merged = {label: np.concatenate(parts) for label, parts in per_label.items()}
        figures.append(_figure_html(_survival_figure(key, merged, palette),
                                    f"final {key}: empirical survival function over all runs and seeds",
                                    f"survival of final {key}"))
    return "\n".join(figures)


def _noise_html(runs_by_id: Mapping[str, Any], labels: Mapping[str, str],
                artifacts: Sequence[tuple[str, str, str]], store_dir: Path) -> str:
    parts = []
    for run_id, kind, path in sorted(a for a in artifacts if a[1].startswith("noise/")):
        run = runs_by_id.get(run_id)
        who = labels.get(run.group_key, "") if run is not None else ""
        seed = f", seed {run.seed}" if run is not None and run.seed is not None else ""
        header = f"<h3>{_e(kind)} <span class='meta'>run {_e(run_id[:10])} ({_e(who)}{_e(seed)})</span></h3>"
        resolved = _resolve(path, store_dir)
        body = _noise_item(resolved) if resolved else f'<p class="note">missing file: {_e(path)}</p>'
        parts.append(header + "\n" + body)
    return "\n".join(parts)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _runs_html(runs: Sequence[Any], labels: Mapping[str, str], series: Mapping[str, Any]) -> str:
    table = HtmlTable(
        [("run", True), ("configuration", True), ("seed", False), ("status", True), ("steps", False),
         ("wall time (s)", False), ("ms / step", False), ("host", True), ("started", True), ("error", True)],
        css_id="runs-table",
    )
    for run in runs:
        per_step = run_step_seconds(run, series.get(run.run_id))
        error = (run.error or "").strip()
        first_line = error.splitlines()[-1] if error else ""
        table.add(
            [
                f'<span title="{_e(run.run_id)}">{_e(run.run_id[:10])}</span>',
                _e(labels.get(run.group_key, run.name)),
                (_e(run.seed), run.seed),
                f'<span class="status {_e(run.status)}">{_e(run.status)}</span>',
                (_e(run.steps if run.steps is not None else "—"), run.steps),
                (_e(format_float(run.wall_time)), run.wall_time),
                (_e(format_float(None if per_step is None else 1e3 * per_step)), per_step),
                _e(run.host or "—"),
                _e(_when(run.started)),
                f'<div class="error" title="{_e(error)}">{_e(first_line)}</div>' if error else "",
            ]
        )
    return table.html()


def render_report(
    store: ResultsStore | str | Path,
    *,
    title: str | None = None,
    baseline: str | None = None,
    store_label: str | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
) -> str:
    """The report of ``store`` as one HTML string (see the module docstring).

    ``extra_sections`` are ``(heading, html body)`` pairs placed first (e.g. the claims table).
    """
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    store_dir = Path(store.path).resolve().parent
    everything = load_runs(store, statuses=STATUSES)
    runs, all_series = everything.runs, everything.series
    finished = everything.select(("finished",))
    table = consolidate(finished, baseline=baseline)
    labels = {s.group_key: s.label for s in table.configs}
    for run in runs:
        labels.setdefault(run.group_key, str(run.config.get("name", run.name)))
    runs_by_id = {r.run_id: r for r in runs}
    artifacts = [(a[0], a[1], a[2]) for a in store.artifacts()]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    names = sorted({str(r.config.get("name", r.name)) for r in runs})
    title = title or (f"tailclip report: {', '.join(names)}" if names else "tailclip report")
    status_text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")

    sections = []
    nav = []
    for index, (heading, body) in enumerate(extra_sections or []):
        ident = f"extra-{index}"
        sections.append(_section(ident, heading, body))
        nav.append((ident, heading))
    if table.configs:
        sections.append(_section("summary", "Summary across seeds", summary_html(table)))
        nav.append(("summary", "Summary"))
        palette = _palette([c.label for c in table.configs])
        curves, hp = _figures_html(finished, table, palette)
        if curves:
            sections.append(_section("curves", "Curves", f'<div class="figures">{curves}</div>'))
            nav.append(("curves", "Curves"))
        if hp:
            note = ('<p class="note">Quantiles of the metric at each step: a method with good '
                    "high-probability convergence keeps its upper quantiles low.</p>")
            body = f'{note}<div class="figures wide">{hp}</div>'
            sections.append(_section("quantiles", "High-probability view", body))
            nav.append(("quantiles", "High-probability"))
        per_run = _per_run_html(runs_by_id, labels, artifacts, store_dir, palette)
        if per_run:
            body = f'<div class="figures">{per_run}</div>'
            sections.append(_section("final-values", "Final values across runs", body))
            nav.append(("final-values", "Final values"))
    else:
        empty = '<p class="note">No finished runs yet.</p>'
        sections.append(_section("summary", "Summary across seeds", empty))
    noise = _noise_html(runs_by_id, labels, artifacts, store_dir)
    if noise:
        sections.append(_section("noise", "Noise diagnostics", noise))
        nav.append(("noise", "Noise diagnostics"))
    runs_body = _runs_html(runs, labels, all_series) if runs else "<p>No runs.</p>"
    sections.append(_section("runs", "Runs", runs_body))
    nav.append(("runs", "Runs"))

    nav_html = "".join(f'<a href="#{ident}">{_e(text)}</a>' for ident, text in nav)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(title)}</h1>",
            f'<p class="meta">store {_e(store_label or store.path)} · {len(runs)} runs ({_e(status_text)}) · '
            f"{len(table.configs)} configurations · generated {_e(generated)}</p>",
            f"<nav>{nav_html}</nav></header>",
            *sections,
            f"<script>{_JS}</script>",
            "</body></html>",
        ]
    )


def write_report(
    store_path: ResultsStore | str | Path,
    output_html: str | Path,
    *,
    title: str | None = None,
    baseline: str | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the self-contained HTML report of the store at ``store_path`` to ``output_html``."""
    store = store_path if isinstance(store_path, ResultsStore) else ResultsStore(_existing(store_path))
    output = Path(output_html)
    text = render_report(store, title=title, baseline=baseline, extra_sections=extra_sections)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Invalid store: {str(path)!r} does not exist; allowed: the path of a results store")
    return path


def report_command(store: str | Path, output: str | Path, *, title: str | None = None,
                   baseline: str | None = None) -> Path:
    """``tailclip report STORE -o OUTPUT``: write the report and return its path."""
    return write_report(store, output, title=title, baseline=baseline)
