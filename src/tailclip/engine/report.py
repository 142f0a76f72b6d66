"""One self-contained HTML report of a results store, one section per experiment.

``write_report(store, "report.html")`` writes a single file that opens offline: no network,
no external script, style sheet, font or image. It opens with the advice of ``tailclip advise``
when the store holds one (``advice/json`` artifacts, :mod:`tailclip.engine.advice_section`: the
verdict, the YAML to paste, the evidence and the control). Per experiment (config name), in this order:

* its claims and their verdicts (``claims=``: what :mod:`tailclip.claims` measured);
* its headline figure, drawn as its paper draws it (:mod:`tailclip.engine.headlines`);
* its table: one row per configuration named by what varies within the experiment
  (:func:`tailclip.engine.labels.short_labels`, full configuration in the tooltip), the
  headline metrics' final and best values (mean ± sd over seeds), the best in bold;
* folded (``<details>``): the per-metric detail: every metric's final/best statistics
  (median, 5%/95% quantiles, n) and runtime with the overhead against ``baseline``, each
  metric against the step (median with its 10-90% band), the survival function of the
  per-run final values of the headline metrics, and the noise diagnostics the runs recorded.

Then every run (status, seed, steps, times, host, error), folded. Every table sorts by
clicking a header (a few lines of inline JavaScript). The store is read once
(:func:`tailclip.engine.consolidate.load_runs`); figures are compact palette PNGs
(:mod:`tailclip.engine.plots`) with one colour per method across the whole report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tailclip.engine._page import CSS as _CSS
from tailclip.engine._page import JS as _JS
from tailclip.engine.advice_section import ADVICE_KIND, advice_section_html
from tailclip.engine.consolidate import (
    ConfigSummary,
    SummaryTable,
    consolidate,
    load_runs,
    quantile_bands,
)
from tailclip.engine.headlines import (
    Experiment,
    builtin_description,
    experiments,
    headline_for,
    tail_index_figure,
)
from tailclip.engine.plots import (
    DPI,
    HEADLINE_DPI,
    Styles,
    compact_png,
    curves_figure,
    png_base64,
    survival_figure,
)
from tailclip.engine.statistics import (
    QuantileBand,
    base_key,
    format_float,
    logged_quantiles,
    run_step_seconds,
)
from tailclip.engine.store import STATUSES, ResultsStore
from tailclip.engine.tables import HtmlTable, experiment_table_html, label_html, summary_html
from tailclip.engine.tables import escape as _e

__all__ = ["render_report", "report_command", "write_report"]

_MAX_TEXT = 20_000



def _figure_html(fig: Figure, caption: str, alt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    data = png_base64(fig, HEADLINE_DPI if css == "headline" else DPI)
    return (
        f'<figure{cls}><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _resolve(path: str, store_dir: Path) -> Path | None:
    candidate = Path(path)
    options = [candidate] if candidate.is_absolute() else [store_dir / candidate, Path.cwd() / candidate]
    return next((p for p in options if p.is_file()), None)


def _noise_item(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".png", ".svg", ".jpg", ".jpeg"):
        mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(suffix, "image/jpeg")
        raw = path.read_bytes()
        if suffix == ".png":
            raw = compact_png(raw)
        data = base64.b64encode(raw).decode("ascii")
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


def _slug(name: str, prefix: str = "exp") -> str:
    return f"{prefix}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed")


def _advice_section(path: str, store_dir: Path) -> tuple[str, str]:
    """``(config name, section)`` of one recorded advice file; a missing or unreadable one is a note."""
    name = Path(path).parent.name
    resolved = _resolve(path, store_dir)
    if resolved is None:
        problem = f"missing advice file: {path}"
    else:
        try:
            data = json.loads(resolved.read_text(encoding="utf-8"))
            name = str(data["config"])
            return name, advice_section_html(data, _slug(name, "advice"))
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
            problem = f"unreadable advice file {path} ({error!r})"
    return name, _section(_slug(name, "advice"), f"Advice: {name}", f'<p class="note">{_e(problem)}</p>')


def _curve_keys(keys: Iterable[str]) -> list[str]:
    """Base keys to plot (quantile and mean suffixes folded into their base), time/* left out."""
    seen: dict[str, None] = {}
    for key in sorted(keys):
        if not key.startswith("time/"):
            seen.setdefault(base_key(key), None)
    return list(seen)


def _curves_html(experiment: Experiment, styles: Styles) -> str:
    """Each metric of the experiment against the step: one figure per key, bands computed once."""
    figures = []
    keys = experiment.keys
    for key in _curve_keys(keys):
        levels = tuple(logged_quantiles(keys, key)) if key not in keys else ()
        if levels:
            quantiles = tuple(q for q in levels if q in (0.1, 0.5, 0.9)) or levels
            shown = ", ".join(f"{100 * q:g}%" for q in quantiles)
            what = f"logged quantiles over the task's runs ({shown})"
        else:
            quantiles = (0.1, 0.5, 0.9)
            what = "median over seeds with the 10-90% band"
        try:
            bands = quantile_bands(experiment.data, key, quantiles)
        except ValueError:
            continue
        ordered_bands: list[QuantileBand] = [
            bands[s.group_key] for s in experiment.configs if s.group_key in bands
        ]
        if not ordered_bands:
            continue
        fig = curves_figure(key, ordered_bands, styles, experiment.methods, experiment.labels, what=what)
        figures.append(_figure_html(fig, f"{key}: {what}", f"curves of {key}"))
    return "\n".join(figures)


def _per_run_html(experiment: Experiment, keys: Sequence[str], styles: Styles) -> str:
    """Survival functions of the per-run final values of the headline metrics (vectorized tasks)."""
    figures = []
    for key in dict.fromkeys(base_key(k) for k in keys):
        samples = {}
        for summary in experiment.configs:
            parts = [experiment.per_run(r, key) for r in summary.run_ids]
            parts = [p for p in parts if p is not None]
            if parts:
                samples[summary.group_key] = np.concatenate(parts)
        if samples:
            fig = survival_figure(key, samples, styles, experiment.methods, experiment.labels)
            caption = f"final {key}: empirical survival function over all runs and seeds"
            figures.append(_figure_html(fig, caption, f"survival of final {key}"))
    return "\n".join(figures)


def _claims_html(claims: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for claim in claims:
        verdict = "pass" if claim.get("passed") else "fail"
        items.append(
            f'<li><span class="verdict {verdict}">{verdict.upper()}</span><b>{_e(claim.get("name", ""))}</b> '
            f'({_e(claim.get("paper", ""))}): {_e(claim.get("statement", ""))}.<br>'
            f'<span class="note">measured: {_e(claim.get("measured", ""))}; '
            f'threshold: {_e(claim.get("threshold", ""))}</span></li>'
        )
    return f'<ul class="claims">{"".join(items)}</ul>' if items else ""


def _experiment_html(
    experiment: Experiment,
    table: SummaryTable,
    claims: Sequence[Mapping[str, Any]],
    styles: Styles,
    noise: str,
    first_histograms: str = "",
) -> str:
    """The section of one experiment: claims, headline figure, table, folded detail."""
    headline = headline_for(experiment)
    parts = [f"<h2>{_e(experiment.name)}</h2>"]
    description = builtin_description(experiment.name)
    if description:
        parts.append(f'<p class="note">{_e(description)}</p>')
    parts.append(_claims_html(claims))
    drawn = headline.draw(experiment, styles)
    if drawn is not None:
        fig, caption = drawn
        parts.append(_figure_html(fig, caption, f"headline figure of {experiment.name}", css="headline"))
    parts.append(experiment_table_html(experiment.configs, headline.metrics, table.baseline))
    tails = tail_index_figure(experiment, styles)
    if tails is not None or first_histograms:
        parts.append("<h3>Gradient noise</h3>")
        if tails is not None:
            parts.append(_figure_html(tails[0], tails[1], f"tail index of {experiment.name}"))
        if first_histograms:
            parts.append(f'<div class="figures">{first_histograms}</div>')
    keys = [k for k in table.keys if any(k in c.metrics for c in experiment.configs)]
    sub = SummaryTable(configs=experiment.configs, keys=keys, varying=table.varying, baseline=table.baseline)
    detail = [summary_html(sub), '<div class="figures">', _curves_html(experiment, styles),
              _per_run_html(experiment, headline.metrics, styles), "</div>"]
    if noise:
        detail.append(f"<h3>Noise diagnostics of every run</h3>{noise}")
    parts.append(f"<details><summary>Per-metric detail: {len(keys)} metrics, runtime, curves</summary>\n"
                 + "\n".join(detail) + "</details>")
    return f'<section id="{_slug(experiment.name)}" class="experiment">\n' + "\n".join(parts) + "\n</section>"


def _first_histograms(
    experiment: Experiment, artifacts: Sequence[tuple[str, str, str]], store_dir: Path
) -> str:
    """The noise-norm histogram (against its Gaussian reference) of the first seed of each
    configuration that recorded one (``noise/histogram`` artifacts)."""
    by_run = {run_id: path for run_id, kind, path in artifacts if kind == "noise/histogram"}
    parts = []
    for summary in experiment.configs[:8]:
        path = next((by_run[r] for r in summary.run_ids if r in by_run), None)
        resolved = _resolve(path, store_dir) if path is not None else None
        if resolved is not None and resolved.suffix.lower() == ".png":
            data = base64.b64encode(compact_png(resolved.read_bytes())).decode("ascii")
            label = experiment.labels[summary.group_key]
            parts.append(f'<figure class="small"><img alt="noise histogram of {_e(label)}" '
                         f'src="data:image/png;base64,{data}">'
                         f"<figcaption>{_e(label)}: noise norms against the Gaussian reference "
                         f"(seed {_e(summary.seeds[0])})</figcaption></figure>")
    return "\n".join(parts)


def _per_run_loader(artifacts: Sequence[tuple[str, str, str]], store_dir: Path):
    paths = {(run_id, kind): path for run_id, kind, path in artifacts if kind.startswith("per_run/")}

    def load(run_id: str, key: str) -> np.ndarray | None:
        path = paths.get((run_id, f"per_run/{key}"))
        resolved = _resolve(path, store_dir) if path is not None else None
        if resolved is None or resolved.suffix != ".npy":
            return None
        return np.asarray(np.load(resolved, allow_pickle=False), dtype=np.float64).ravel()

    return load


def _noise_html(runs_by_id: Mapping[str, Any], labels: Mapping[str, str],
                artifacts: Sequence[tuple[str, str, str]], store_dir: Path,
                shown_above: Sequence[str] = ()) -> str:
    """The ``noise/*`` artifacts: tables and text of every run; a figure only for the first run
    of its configuration with that kind and not of a kind in ``shown_above`` (the others are
    named by path, to keep the file small)."""
    parts = []
    pictured: set[tuple[str, str]] = set()
    for run_id, kind, path in sorted(a for a in artifacts if a[1].startswith("noise/")):
        run = runs_by_id.get(run_id)
        who = labels.get(run.group_key, "") if run is not None else ""  # already HTML
        seed = f", seed {run.seed}" if run is not None and run.seed is not None else ""
        header = f"<h3>{_e(kind)} <span class='meta'>run {_e(run_id[:10])} ({who}{_e(seed)})</span></h3>"
        resolved = _resolve(path, store_dir)
        group = (run.group_key if run is not None else run_id, kind)
        if resolved is None:
            body = f'<p class="note">missing file: {_e(path)}</p>'
        elif resolved.suffix.lower() in _IMAGES and (group in pictured or kind in shown_above):
            body = f'<p class="note">figure: {_e(resolved)}</p>'
        else:
            pictured.add(group)
            body = _noise_item(resolved)
        parts.append(header + "\n" + body)
    return "\n".join(parts)


_IMAGES = (".png", ".svg", ".jpg", ".jpeg")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _runs_html(runs: Sequence[Any], labels: Mapping[str, str], series: Mapping[str, Any]) -> str:
    """Every run: id, configuration, seed, status, steps, times, host, start, error."""
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
                labels.get(run.group_key, _e(run.name)),
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


def _title_of(summary: ConfigSummary, config: Mapping[str, Any]) -> str:
    """The full configuration of a label's tooltip: optimizer and task options as JSON."""
    optimizer = json.dumps(config.get("optimizer"), sort_keys=True, default=str)
    options = json.dumps((config.get("task") or {}).get("options", {}), sort_keys=True, default=str)
    return f"{summary.label}\noptimizer: {optimizer}\ntask options: {options}"


def render_report(
    store: ResultsStore | str | Path,
    *,
    title: str | None = None,
    baseline: str | None = None,
    store_label: str | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
    claims: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The report of ``store`` as one HTML string (see the module docstring).

    ``extra_sections`` are ``(heading, html body)`` pairs placed first (after the advice the
    store holds); ``claims`` are claim results as mappings (``name``, ``paper``, ``experiment``,
    ``statement``, ``measured``, ``threshold``, ``passed``), each shown in the section of its
    ``experiment``.
    """
    store = store if isinstance(store, ResultsStore) else ResultsStore(store, read_only=True)
    store_dir = Path(store.path).resolve().parent
    everything = load_runs(store, statuses=STATUSES)
    runs, all_series = everything.runs, everything.series
    finished = everything.select(("finished",))
    table = consolidate(finished, baseline=baseline)
    configs = {gk: rs[0].config for gk, rs in finished.groups.items()}
    labels_html = {s.group_key: label_html(s) for s in table.configs}
    for run in runs:
        labels_html.setdefault(run.group_key, _e(str(run.config.get("name", run.name))))
    runs_by_id = {r.run_id: r for r in runs}
    artifacts = [(a[0], a[1], a[2]) for a in store.artifacts()]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    names = list(dict.fromkeys(str(r.config.get("name", r.name)) for r in runs))
    title = title or (f"tailclip report: {', '.join(sorted(names))}" if names else "tailclip report")
    status_text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")

    sections = []
    nav = []
    advice_paths = {path for _, kind, path in artifacts if kind == ADVICE_KIND}  # one file, many runs
    for name, body in sorted(_advice_section(path, store_dir) for path in advice_paths):
        sections.append(body)
        nav.append((_slug(name, "advice"), f"Advice: {name}"))
    for index, (heading, body) in enumerate(extra_sections or []):
        ident = f"extra-{index}"
        sections.append(_section(ident, heading, body))
        nav.append((ident, heading))
    styles = Styles()
    for experiment in experiments(finished, table, _per_run_loader(artifacts, store_dir)):
        ids = {r for s in experiment.configs for r in s.run_ids}
        mine = [c for c in claims or [] if c.get("experiment") == experiment.name]
        histograms = _first_histograms(experiment, artifacts, store_dir)
        above = ("noise/histogram",) if histograms else ()
        noise = _noise_html(runs_by_id, labels_html, [a for a in artifacts if a[0] in ids], store_dir, above)
        sections.append(_experiment_html(experiment, table, mine, styles, noise, histograms))
        nav.append((_slug(experiment.name), experiment.name))
    if not table.configs:
        empty = '<p class="note">No finished runs yet.</p>'
        sections.append(_section("summary", "Summary across seeds", empty))
    for summary in table.configs:
        labels_html[summary.group_key] = (
            f'<span class="label" title="{_e(_title_of(summary, configs[summary.group_key]))}">'
            f"{_e(summary.short_label)}</span>"
        )
    if runs:
        runs_body = (f"<details><summary>{len(runs)} runs ({_e(status_text)})</summary>\n"
                     f"{_runs_html(runs, labels_html, all_series)}</details>")
    else:
        runs_body = "<p>No runs.</p>"
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


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def write_report(
    store_path: ResultsStore | str | Path,
    output_html: str | Path,
    *,
    title: str | None = None,
    baseline: str | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
    claims: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write the self-contained HTML report of the store at ``store_path`` to ``output_html``."""
    store = store_path if isinstance(store_path, ResultsStore) else ResultsStore(store_path, read_only=True)
    output = Path(output_html)
    text = render_report(store, title=title, baseline=baseline, extra_sections=extra_sections, claims=claims)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output


def report_command(store: ResultsStore | str | Path, output: str | Path, *, title: str | None = None,
                   baseline: str | None = None) -> Path:
    """``tailclip report STORE -o OUTPUT``: write the report and return its path."""
    return write_report(store, output, title=title, baseline=baseline)
