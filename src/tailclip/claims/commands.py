"""The command-line entry points of the claims: ``tailclip reproduce`` and ``tailclip demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tailclip.claims.registry import DEMO_CLAIMS, ClaimResult, Size, run_claims
from tailclip.claims.rendering import claims_html, console_or_new, print_claims, write_results

__all__ = ["reproduce", "run_demo"]


def reproduce(
    claim: str | None = None,
    *,
    size: Size = "full",
    out_dir: str | Path = "runs/claims",
    workers: int | None = None,
    console: Any = None,
) -> list[ClaimResult]:
    """``tailclip reproduce [--claim NAME]``: run one claim (or all), print the table, save the results.

    Writes ``claims.json`` and ``claims.md`` beside the store in ``out_dir``.
    """
    console = console_or_new(console)
    results = run_claims(
        None if claim is None else [claim], size, out_dir=out_dir, workers=workers, progress=console.print
    )
    write_results(results, Path(out_dir))
    print_claims(results, console)
    return results


def run_demo(
    out_dir: str | Path = "runs/demo", *, workers: int | None = None, console: Any = None
) -> list[ClaimResult]:
    """``tailclip demo``: experiments 1, 3 and 5 at demo size through the engine.

    Trains their runs into ``<out_dir>/claims.sqlite``, writes the HTML report
    ``<out_dir>/report.html`` (quantile bands and per-run tails of every run) when the engine's
    report module is available, ``claims.json`` and ``claims.md``, and prints the claims table.
    """
    out_dir = Path(out_dir)
    console = console_or_new(console)
    start = time.perf_counter()
    results = run_claims(DEMO_CLAIMS, "demo", out_dir=out_dir, workers=workers, progress=console.print)
    write_results(results, out_dir)
    from tailclip.engine.report import write_report

    console.print("writing the report")
    report = write_report(
        out_dir / "claims.sqlite", out_dir / "report.html", title="tailclip demo: the synthetic suite",
        extra_sections=[("Claims", claims_html(results))], claims=[r.to_dict() for r in results],
    )
    note = f"report: {report}"
    print_claims(results, console)
    console.print(f"{note}; claims: {out_dir / 'claims.md'}; {time.perf_counter() - start:.1f} s")
    return results
