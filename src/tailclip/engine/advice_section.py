"""The answer of ``tailclip advise`` as a section of the HTML report, built from its JSON alone.

``advise`` saves its answer as ``advice.json`` (the ``--json`` contract) and records that file in
its results store as an artifact of kind :data:`ADVICE_KIND` on the finalists' runs, so that
``tailclip report`` on that store opens with this section without rerunning anything:

* the verdict: the optimizer to train with, the noise verdict with the tail index's interval,
  whether clipping is needed, the YAML to paste into a config, and the reason;
* the evidence: the noise at each measurement, the warm-up's gradient-norm quantiles, the
  (L0, L1)-smoothness slope, the finalists over seeds (mean ± sd, tied with the best or not);
* the control: both finalists at the config's batch and at the large batch, and what it means;
* what would change the advice; folded, the bake-off of every candidate with its reason.

The data is plain JSON (this layer does not import :mod:`tailclip.advise`); every string is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tailclip.engine.statistics import format_float
from tailclip.engine.tables import HtmlTable, escape

__all__ = ["ADVICE_KIND", "advice_section_html"]

ADVICE_KIND = "advice/json"

# the control's ``explained_by_noise``: None when it cannot conclude (no gain to explain, a
# large batch that barely reduces the noise, or a budget too small to run it)
_CONCLUSIONS = {
    True: "the gain is explained by the noise",
    False: "the gain is not explained by the noise",
    None: "no conclusion",
}


def _num(value: Any, digits: int = 4) -> str:
    return escape(format_float(None if value is None else float(value), digits))


def _alpha(value: Any, low: Any, high: Any) -> str:
    """A tail index with its interval, two decimals (as ``tailclip tails`` prints it)."""
    shown = ["—" if v is None else f"{v:.2f}" for v in (value, low, high)]
    return f"{shown[0]} [{shown[1]}, {shown[2]}]"


def _label(label: str, optimizer: Mapping[str, Any]) -> str:
    """A candidate's name, its optimizer spec as the tooltip (like the report's configuration labels)."""
    spec = json.dumps(optimizer, sort_keys=True, default=str)
    return f'<span class="label" title="{escape(spec)}">{escape(label)}</span>'


def _lr(optimizer: Mapping[str, Any]) -> float | None:
    return optimizer.get("lr", (optimizer.get("base_optimizer") or {}).get("lr"))


def _verdict_html(data: Mapping[str, Any]) -> str:
    rec, noise = data["recommendation"], data["noise"]
    alpha = noise["alpha"]
    verdict = noise["verdict"]
    clipping = "needed" if rec["clipping_needed"] else "not shown to be needed"
    tie = " (tied with another finalist within the seed spread)" if rec["tie"] else ""
    return (
        '<div class="advice-verdict">'
        f'<p class="advice-headline">Train with <b>{escape(rec["label"])}</b>{escape(tie)}</p>'
        f'<p><span class="noise-verdict {escape(verdict)}">noise {escape(verdict)}</span> '
        f"tail index α = {_alpha(alpha['value'], alpha['low'], alpha['high'])} (95% interval) at step "
        f"{escape(alpha['step'])}; clipping {clipping}.</p>"
        f"<p>Paste into your config:</p><pre>{escape(rec['yaml'].rstrip())}</pre>"
        f"<p>{escape(rec['reason'])}</p></div>"
    )


def _noise_html(noise: Mapping[str, Any]) -> str:
    table = HtmlTable(
        [("step", False), ("verdict", True), ("α [95% interval]", True), ("Hill α", False),
         ("median noise norm", False), ("Gaussian reference", False)]
    )
    for point in noise["points"]:
        table.add(
            [
                (escape(point["step"]), point["step"]),
                escape(point["verdict"]),
                _alpha(point["alpha"], point["alpha_low"], point["alpha_high"]),
                (_num(point["hill_alpha"]), point["hill_alpha"]),
                (_num(point["noise_norm_median"]), point["noise_norm_median"]),
                (_num(point["gaussian_norm_median"]), point["gaussian_norm_median"]),
            ]
        )
    quantiles = ", ".join(f"{escape(k)} {_num(v)}" for k, v in noise["grad_norm_quantiles"].items())
    lines = [f"<p>Gradient norms over the {escape(noise['warmup_steps'])} warm-up steps: {quantiles}.</p>"]
    smooth = noise["smoothness"]
    l1 = smooth["l1"]
    lines.append(
        f"<p>(L0, L1)-smoothness probe: L ≈ {_num(smooth['l0'])} {'−' if l1 is not None and l1 < 0 else '+'} "
        f"{_num(None if l1 is None else abs(l1))} ‖∇F‖ (rank correlation {_num(smooth['correlation'])}, "
        f"{len(smooth['steps'])} points): local smoothness {'grows' if smooth['grows'] else 'does not grow'} "
        "with the gradient norm.</p>"
    )
    return "<h3>Noise</h3>" + table.html() + "".join(lines)


def _ranking_html(data: Mapping[str, Any]) -> str:
    rec, metric = data["recommendation"], data["metric"]
    table = HtmlTable(
        [("rank", False), ("optimizer", True), ("lr", False), ("clipped", True),
         (f"{metric} (mean ± sd)", False), ("seeds", True), ("tied with the best", True)]
    )
    seeds = 0
    for rank, row in enumerate(data["ranking"], 1):
        recommended = row["optimizer"] == rec["optimizer"]
        lr = _lr(row["optimizer"])
        seeds = max(seeds, len(row["seeds"]))
        table.add(
            [
                (str(rank), rank),
                _label(row["label"], row["optimizer"]) + (" <b>◀ recommended</b>" if recommended else ""),
                (_num(lr), lr),
                "yes" if row["clipped"] else "no",
                (f"{_num(row['mean'])} ± {_num(row['sd'])}", row["mean"]),
                escape(", ".join(str(s) for s in row["seeds"])),
                "best" if rank == 1 else ("yes" if row["tied_with_best"] else "no"),
            ],
            row_class="recommended" if recommended else "",
        )
    better = "lower" if data["lower_is_better"] else "higher"
    return (
        f"<h3>Finalists over {seeds} seeds</h3>"
        f'<p class="note">final {escape(metric)}, {better} is better; tied: the lead over it is within '
        "the seed spread.</p>"
        + table.html()
    )


def _control_html(data: Mapping[str, Any]) -> str:
    control = data["control"]
    if not control:
        return "<h3>Control</h3><p>Only one finalist: nothing to compare at a larger batch.</p>"
    metric = data["metric"]
    table = HtmlTable(
        [("optimizer", True), (f"{metric}, config's batch", False),
         (f"{metric}, batch {control['batch_size']}", False)]
    )
    for label, small, large, spec in zip(
        control["labels"],
        control["small_batch"],
        control["large_batch"],
        control["large_batch_optimizers"],
        strict=True,
    ):
        table.add([_label(label, spec), (_num(small), small), (_num(large), large)])
    return (
        f'<h3>Control</h3><p><span class="noise-verdict control">{escape(control["outcome"])}: '
        f"{_CONCLUSIONS[control['explained_by_noise']]}</span> {escape(control['message'])}.</p>"
        + (table.html() if control["run_ids"] else "")
    )


def _bakeoff_html(candidates: Sequence[Mapping[str, Any]], metric: str) -> str:
    table = HtmlTable(
        [("candidate", True), ("best lr", False), (f"{metric} at best lr", False),
         ("trials done / pruned / left", True), ("why", True)]
    )
    for c in candidates:
        trials = c["trials"]
        done = sum(t["state"] == "COMPLETE" for t in trials)
        pruned = sum(t["state"] == "PRUNED" for t in trials)
        table.add(
            [
                _label(c["label"], c["optimizer"]),
                (_num(c["best_lr"]), c["best_lr"]),
                (_num(c["best_value"]), c["best_value"]),
                f"{done} / {pruned} / {c.get('skipped', 0)}",
                escape(c["reason"]),
            ]
        )
    return (
        f"<details><summary>Bake-off: {len(candidates)} candidates, each over a few step sizes "
        "(successive halving)</summary>\n" + table.html() + "</details>"
    )


def advice_section_html(data: Mapping[str, Any], ident: str) -> str:
    """A ``<section class="advice">`` (id ``ident``) of the advice ``data`` (an ``advice.json``)."""
    metric = data["metric"]
    changes = "".join(f"<li>{escape(line)}</li>" for line in data["what_would_change"])
    return "\n".join(
        [
            f'<section id="{escape(ident)}" class="advice">',
            f"<h2>Advice: {escape(data['config'])}</h2>",
            f'<p class="meta">tailclip advise: what to train with, the evidence and a control · '
            f"runtime {data['runtime_seconds']:.0f} s</p>",
            _verdict_html(data),
            _noise_html(data["noise"]),
            _ranking_html(data),
            _control_html(data),
            f"<h3>What would change the advice</h3><ul>{changes}</ul>",
            _bakeoff_html(data["candidates"], metric),
            "</section>",
        ]
    )
