"""The terminal answer of ``tailclip advise`` (rich): verdict, YAML to paste, evidence, what would change."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from tailclip.advise.answer import Answer
from tailclip.advise.bakeoff import METRIC

__all__ = ["render_answer"]


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "diverged" if value is not None and math.isinf(value) else "-"
    return f"{value:.4g}"


def _noise_table(answer: Answer) -> Table:
    m = answer.measurement
    table = Table(title="Noise (tailclip tails)", title_justify="left")
    for column in ("step", "verdict", "alpha [95% CI]", "Hill alpha", "median noise norm / Gaussian"):
        table.add_column(column)
    for n in m.noise:
        table.add_row(
            str(n.step),
            n.verdict,
            f"{n.alpha:.2f} [{n.alpha_low:.2f}, {n.alpha_high:.2f}]",
            f"{n.hill_alpha:.1f}",
            f"{_num(n.noise_norm_median)} / {_num(n.gaussian_norm_median)}",
        )
    return table


def _measurement_lines(answer: Answer) -> Text:
    m = answer.measurement
    q = m.grad_norm_quantiles
    s = m.smoothness
    quantiles = ", ".join(f"{k} {_num(v)}" for k, v in q.items())
    grows = "grows" if s.grows else "does not grow"
    return Text(
        f"Gradient norms over the {m.warmup_steps} warm-up steps: {quantiles}.\n"
        f"(L0, L1) probe: L = {_num(s.l0)} + {_num(s.l1)} ||grad F|| "
        f"(rank correlation {_num(s.correlation)}, "
        f"{len(s.steps)} points): local smoothness {grows} with the gradient norm."
    )


def _bakeoff_table(answer: Answer) -> Table:
    plan = answer.plan
    table = Table(
        title=f"Bake-off ({plan.trial_steps} steps, {plan.lr_points} step sizes each, successive halving; "
        f"final {METRIC} at the best step size, seed {answer.decision.ranking[0].seeds[0]})",
        title_justify="left",
    )
    for column in ("candidate", "best lr", METRIC, "trials done / pruned / left", "why"):
        table.add_column(column, overflow="fold")
    for r in answer.candidates:
        best = r.best
        done = sum(t["state"] == "COMPLETE" for t in r.trials)
        pruned = sum(t["state"] == "PRUNED" for t in r.trials)
        table.add_row(
            r.candidate.label,
            "-" if best is None else f"{best['lr']:.3g}",
            _num(r.best_value),
            f"{done} / {pruned} / {r.skipped}",
            r.candidate.reason,
        )
    return table


def _ranking_table(answer: Answer) -> Table:
    d = answer.decision
    table = Table(
        title=f"Finalists over {answer.plan.seeds} seeds (mean ± sd of final {METRIC})", title_justify="left"
    )
    for column in ("rank", "optimizer", "lr", "clipped", f"{METRIC}", "tied with the best"):
        table.add_column(column)
    for i, f in enumerate(d.ranking, 1):
        lr = f.optimizer.get("lr", (f.optimizer.get("base_optimizer") or {}).get("lr"))
        marker = " ◀ recommended" if f is d.recommended else ""
        table.add_row(
            str(i),
            f.candidate.label + marker,
            f"{lr:.3g}" if lr else "-",
            "yes" if f.candidate.clipped else "no",
            f"{_num(f.mean)} ± {_num(f.sd)}",
            "yes" if any(f is t for t in d.tied) else "no",
        )
    return table


def _control_text(answer: Answer) -> Text:
    c = answer.control
    if c is None:
        return Text("Control: only one finalist, nothing to compare.")
    if not c.run_ids:
        return Text(f"Control: {c.message}.")
    return Text(
        f"Control ({c.steps} steps at batch {c.batch_size}, best of step sizes x1/3, x1, x3): {c.message}."
    )


def render_answer(answer: Answer, console: Console) -> None:
    """Print ``answer``: the verdict panel with the YAML to paste, then the evidence."""
    m, d = answer.measurement, answer.decision
    headline = Text.assemble(
        ("Train with ", "bold"),
        (d.recommended.candidate.label, "bold green"),
        (f"   noise: {m.verdict}", "bold"),
        ("   clipping needed: ", "bold"),
        ("yes" if d.clipping_needed else "not shown", "bold"),
    )
    body = Group(
        headline,
        Text(answer.reason),
        Text("\nPaste into your config:", style="bold"),
        Syntax(answer.recommended_yaml.rstrip(), "yaml", theme="ansi_dark", background_color="default"),
    )
    console.print(Panel(body, title=f"tailclip advise: {answer.config_name}", expand=False))
    console.print(_noise_table(answer))
    console.print(_measurement_lines(answer))
    console.print(_bakeoff_table(answer))
    console.print(_ranking_table(answer))
    console.print(_control_text(answer))
    console.print(Text("What would change the advice:", style="bold"))
    for line in answer.what_would_change():
        console.print(f"  - {line}", soft_wrap=True)
    over = (
        " (the budget was too small for the minimum run length: overrun)" if answer.plan.over_budget else ""
    )
    console.print(
        f"Runtime {answer.runtime_seconds:.0f} s of a {answer.budget_seconds / 60:.1f}-minute plan{over}. "
        f"Runs: {answer.store} (tailclip report); Optuna studies: {answer.optuna_storage}.",
        soft_wrap=True,
    )
