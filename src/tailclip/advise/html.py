"""The advice as an HTML section (for the HTML report), built from the ``--json`` dict alone.

``advise`` writes it as ``advice_section.html`` beside ``advice.json`` in its reports folder, so a
report can embed the section of a stored advice without rerunning anything.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["advice_html"]


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def advice_html(data: dict[str, Any]) -> str:
    """A ``<section>`` with the recommendation, the noise, the finalists and the control of ``data``."""
    rec, noise, control = data["recommendation"], data["noise"], data.get("control")
    alpha = noise["alpha"]
    ranking = "\n".join(
        _row(
            [
                escape(r["label"]) + (" (recommended)" if r["optimizer"] == rec["optimizer"] else ""),
                "yes" if r["clipped"] else "no",
                f"{_num(r['mean'])} ± {_num(r['sd'])}",
                ", ".join(str(s) for s in r["seeds"]),
                "yes" if r.get("tied_with_best") else "no",
            ]
        )
        for r in data["ranking"]
    )
    header = _row(["optimizer", "clipped", f"{escape(data['metric'])} (mean ± sd)", "seeds", "tied"], "th")
    changes = "".join(f"<li>{escape(line)}</li>" for line in data.get("what_would_change", []))
    control_text = escape(control["message"]) if control else "no control (a single finalist)"
    return (
        '<section class="advice">\n'
        f"  <h2>Advice: {escape(data['config'])}</h2>\n"
        f"  <p><b>Train with {escape(rec['label'])}</b>: noise {escape(noise['verdict'])}, alpha "
        f"{_num(alpha['value'])} [{_num(alpha['low'])}, {_num(alpha['high'])}]; clipping needed: "
        f"{'yes' if rec['clipping_needed'] else 'not shown'}.</p>\n"
        f"  <pre>{escape(rec['yaml'])}</pre>\n"
        f"  <p>{escape(rec['reason'])}</p>\n"
        f"  <table>\n{header}\n{ranking}\n  </table>\n"
        f"  <p>Control: {control_text}.</p>\n"
        f"  <p>What would change the advice:</p><ul>{changes}</ul>\n"
        "</section>\n"
    )
