"""The claims table, rendered: a rich table on the console, Markdown, HTML, and the saved files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tailclip.claims.registry import ClaimResult

__all__ = ["claims_html", "claims_markdown", "console_or_new", "print_claims", "write_results"]


def console_or_new(console: Console | None) -> Console:
    """``console``, or a new rich console on stdout."""
    return console if console is not None else Console()


def print_claims(results: Sequence[ClaimResult], console: Any = None) -> None:
    """Print the claims table (rich): claim, paper, experiment, measured figure, threshold, result."""
    console = console_or_new(console)
    table = Table(title="tailclip claims", show_lines=True)
    for column in ("claim", "paper", "experiment", "measured", "threshold", "result"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = "[bold green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(
            r.name, r.paper, f"{r.experiment} ({r.size}, {r.seconds:.1f} s)", r.measured, r.threshold, verdict
        )
    console.print(table)
    passed = sum(r.passed for r in results)
    console.print(f"{passed}/{len(results)} claims pass")


def claims_markdown(results: Sequence[ClaimResult]) -> str:
    """The claims table as Markdown."""
    lines = [
        "| claim | paper | experiment | measured | threshold | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            r.name,
            r.paper,
            f"{r.experiment} ({r.size})",
            r.measured,
            r.threshold,
            "PASS" if r.passed else "FAIL",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def claims_html(results: Sequence[ClaimResult]) -> str:
    """The claims table as an HTML table (sortable by the report's script)."""
    columns = ("claim", "paper", "experiment", "measured", "threshold", "result")
    head = "".join(f'<th class="text">{h}</th>' for h in columns)
    rows = []
    for r in results:
        cells = [r.name, r.paper, f"{r.experiment} ({r.size})", r.measured, r.threshold]
        verdict = "PASS" if r.passed else "FAIL"
        rows.append("<tr>" + "".join(f'<td class="text">{escape(c)}</td>' for c in cells)
                    + f'<td class="text">{verdict}</td></tr>')
    return f"<table class=\"sortable\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_results(results: Sequence[ClaimResult], out_dir: Path) -> None:
    (out_dir / "claims.json").write_text(
        json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8"
    )
    (out_dir / "claims.md").write_text(claims_markdown(results), encoding="utf-8")
