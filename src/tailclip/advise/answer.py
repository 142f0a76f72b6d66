"""Step 5 of ``tailclip advise``: the decision, its reason, and the JSON contract.

**Ranking.** The finalists by mean final ``eval/loss`` over seeds (lower is better). A finalist
*leads* another when its mean is lower by more than the seed spread, the larger of the two sample
standard deviations, and by more than 1% of the other's mean (smaller differences do not matter to
a user; with one seed the spread is unknown and nothing leads).

**Recommendation.** The leader if it leads every other finalist. Otherwise the finalists tied with
the best one are candidates, and the noise decides: under heavy-tailed noise the best tied
*clipped* optimizer (clipping costs nothing here and guards against the tails); otherwise the best
tied *unclipped* one, the config's own optimizer first (no clipping is needed to get the result).
``clipping_needed`` is claimed only when the noise is heavy-tailed and the recommended clipped
optimizer leads the best unclipped finalist.

**The control pair** is the recommended optimizer and the best finalist of the other kind
(clipped against unclipped), or the runner-up when all finalists are of one kind.

:meth:`Answer.to_dict` is the ``--json`` contract: ``noise.verdict``, ``noise.alpha`` (value, low,
high, step), ``ranking`` (label, optimizer, mean, sd, seeds, values), ``recommendation``
(``optimizer``: a spec ``tailclip run`` accepts; ``yaml``, ``reason``, ``clipping_needed``),
``control``, ``what_would_change``, and the candidates, plan, stores and runtime behind them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from tailclip.advise.bakeoff import METRIC, CandidateResult, Finalist
from tailclip.advise.control import ControlResult
from tailclip.advise.measure import Measurement
from tailclip.advise.plan import Plan

__all__ = ["Answer", "Decision", "decide", "leads", "to_json", "twin_note"]


MIN_RELATIVE_LEAD = 0.01


def leads(a: Finalist, b: Finalist) -> bool:
    """Whether ``a``'s mean is lower than ``b``'s by more than ``max(sd_a, sd_b)`` and 1% of ``|b|``."""
    if math.isinf(a.mean):
        return False
    if math.isinf(b.mean):
        return True
    spread = max(a.sd, b.sd)
    lead = b.mean - a.mean
    return math.isfinite(spread) and lead > spread and lead > MIN_RELATIVE_LEAD * abs(b.mean)


@dataclass(frozen=True)
class Decision:
    """The ranking, the recommended finalist, its rival for the control, and how it was chosen."""

    ranking: list[Finalist]
    recommended: Finalist
    rival: Finalist | None
    tied: list[Finalist]
    clipping_needed: bool
    reason: str


def decide(finalists: list[Finalist], verdict: str) -> Decision:
    """Apply the rules of the module docstring to ``finalists`` under the noise ``verdict``."""
    ranking = sorted(finalists, key=lambda f: f.mean)
    best = ranking[0]
    tied = [f for f in ranking if f is best or not leads(best, f)]
    heavy = verdict == "heavy-tailed"
    if len(tied) == 1:
        recommended = best
        runner = ranking[1] if len(ranking) > 1 else None
        basis = f"Of the finalists, {best.candidate.label} leads every other by more than the seed spread" + (
            f" ({METRIC} {best.mean:.4g} against {runner.mean:.4g} for {runner.candidate.label})"
            if runner
            else ""
        )
    else:
        names = ", ".join(f.candidate.label for f in tied)
        if heavy:
            recommended = next((f for f in tied if f.candidate.clipped), best)
            why = "the noise is heavy-tailed, so the clipped one: it guards against the tails at no cost"
        else:
            unclipped = [f for f in tied if not f.candidate.clipped]
            own = [f for f in unclipped if f.candidate.label == "yours"]
            recommended = (own or unclipped or [best])[0]
            why = (
                f"the noise is {verdict}, so {'your own' if own else 'an unclipped'} optimizer: "
                "no clipping is needed to get this result"
                if unclipped
                else f"the noise is {verdict} and every tied finalist clips, so the best of them"
            )
        basis = f"Finalists {names} tie within the seed spread; {why}"
    others = [f for f in ranking if f is not recommended]
    rival = next((f for f in others if f.candidate.clipped is not recommended.candidate.clipped), None)
    rival = rival or (others[0] if others else None)
    best_unclipped = next((f for f in ranking if not f.candidate.clipped), None)
    clipping_needed = bool(
        heavy
        and recommended.candidate.clipped
        and best_unclipped is not None
        and leads(recommended, best_unclipped)
    )
    return Decision(ranking, recommended, rival, tied, clipping_needed, basis)


def twin_note(twin: dict[str, Any]) -> str:
    """What a vectorized config's advice ran on (a :meth:`tailclip.advise.twin.Twin.to_dict`)."""
    text = (
        f"Advised on the model twin of {twin['original_task']} ({twin['task']}: one run of the same "
        f"problem, noise and start; each seed a run); not carried: {'; '.join(twin['not_carried'])}"
    )
    if twin["overrides"]:
        text += f". The recommendation runs on this config with --set {' --set '.join(twin['overrides'])}"
    if twin["left_out"]:
        text += f". Left out (this config cannot run them): {'; '.join(twin['left_out'])}"
    return text + "."


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(data: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities as ``null``)."""
    return json.dumps(_finite(data), indent=2, allow_nan=False)


@dataclass(frozen=True)
class Answer:
    """Everything ``tailclip advise`` found (see the module docstring)."""

    config_name: str
    measurement: Measurement
    plan: Plan
    candidates: list[CandidateResult]
    decision: Decision
    control: ControlResult | None
    budget_seconds: float
    runtime_seconds: float
    store: str
    optuna_storage: str
    twin: dict[str, Any] | None = None

    @property
    def recommended_yaml(self) -> str:
        return yaml.safe_dump({"optimizer": self.decision.recommended.optimizer}, sort_keys=False)

    @property
    def reason(self) -> str:
        m, d = self.measurement, self.decision
        alpha = m.alpha
        noise = (
            f"The noise is {m.verdict} (alpha {alpha.alpha:.2f}, 95% interval [{alpha.alpha_low:.2f}, "
            f"{alpha.alpha_high:.2f}] at step {alpha.step})."
        )
        clip = (
            " Clipping is needed: the clipped optimizer leads the best unclipped one beyond the seed spread."
            if d.clipping_needed
            else " This does not show that clipping is needed."
        )
        control = f" Control: {self.control.message}." if self.control is not None else ""
        twin = f" {twin_note(self.twin)}" if self.twin is not None else ""
        return f"{noise} {d.reason}.{clip}{control}{twin}"

    def what_would_change(self) -> list[str]:
        m, d, plan = self.measurement, self.decision, self.plan
        out = []
        if len(d.tied) > 1:
            out.append(
                "a lead beyond the seed spread between the tied finalists (more seeds: --seeds; longer runs: "
                "--budget-minutes)"
            )
        if m.verdict == "heavy-tailed":
            out.append(
                "light-tailed noise at the batch size you train with: then the unclipped optimizer would do"
            )
        else:
            out.append(
                "heavy-tailed noise later in training or at another batch size (tailclip tails --steps N): "
                "then clipped Adam and ACClip would join the bake-off and ties would go to clipping"
            )
        if not m.smoothness.grows:
            out.append(
                "local smoothness growing with the gradient norm ((L0, L1)-smoothness): "
                "delta-GClip would join"
            )
        skipped = sum(r.skipped for r in self.candidates)
        if skipped:
            out.append(
                f"the {skipped} bake-off trials left unrun when the bake-off reached its share of the budget "
                "(the largest step sizes of each candidate): --budget-minutes"
            )
        if plan.trial_steps < m.total_steps:
            out.append(
                f"the bake-off ran {plan.trial_steps} of the config's {m.total_steps} steps: "
                "at full length the ranking may differ"
            )
        if self.control is not None and self.control.outcome == "too short":
            out.append(
                f"a control at a larger batch (--budget-minutes {self.plan.control_budget_minutes}"
                " or more): it would tell whether the gap between the finalists comes from the noise"
            )
        if self.control is not None and self.control.explained_by_noise is False:
            out.append(
                "the gain survives without noise, so it comes from the optimizer's geometry (curvature, "
                "class imbalance), not from the noise: tuning clipping will not change it"
            )
        if self.control is not None and self.control.explained_by_noise:
            out.append("a batch large enough to average the noise away would remove the gain")
        return out

    def to_dict(self) -> dict[str, Any]:
        m, d = self.measurement, self.decision
        alpha = m.alpha
        return {
            "config": self.config_name,
            "metric": METRIC,
            "lower_is_better": True,
            "noise": {
                "verdict": m.verdict,
                "alpha": {
                    "value": alpha.alpha,
                    "low": alpha.alpha_low,
                    "high": alpha.alpha_high,
                    "step": alpha.step,
                },
                "points": [vars(n) | {"reasons": list(n.reasons)} for n in m.noise],
                "grad_norm_quantiles": dict(m.grad_norm_quantiles),
                "coordinate_rms_median": m.coordinate_rms_median,
                "smoothness": vars(m.smoothness),
                "warmup_steps": m.warmup_steps,
                "reports": dict(m.reports),
            },
            "candidates": [
                {
                    "label": r.candidate.label,
                    "optimizer": r.candidate.spec,
                    "clipped": r.candidate.clipped,
                    "lr_range": [r.candidate.lr_low, r.candidate.lr_high],
                    "reason": r.candidate.reason,
                    "best_lr": None if r.best is None else r.best["lr"],
                    "best_value": r.best_value,
                    "trials": r.trials,
                    "skipped": r.skipped,
                }
                for r in self.candidates
            ],
            "ranking": [
                {
                    "label": f.candidate.label,
                    "optimizer": f.optimizer,
                    "clipped": f.candidate.clipped,
                    "mean": f.mean,
                    "sd": f.sd,
                    "seeds": list(f.seeds),
                    "values": list(f.values),
                    "run_ids": list(f.run_ids),
                    "tied_with_best": any(f is t for t in d.tied),
                }
                for f in d.ranking
            ],
            "recommendation": {
                "label": d.recommended.candidate.label,
                "optimizer": d.recommended.optimizer,
                "yaml": self.recommended_yaml,
                "reason": self.reason,
                "clipping_needed": d.clipping_needed,
                "tie": len(d.tied) > 1,
                "config_overrides": [] if self.twin is None else list(self.twin["overrides"]),
            },
            "twin": self.twin,
            "control": None if self.control is None else self.control.to_dict(),
            "what_would_change": self.what_would_change(),
            "timing": {
                "step_seconds": m.step_seconds,
                "eval_seconds": m.eval_seconds,
                "control_batch": m.control_batch,
                "control_step_seconds": m.control_step_seconds,
            },
            "plan": self.plan.to_dict(),
            "budget_seconds": self.budget_seconds,
            "runtime_seconds": self.runtime_seconds,
            "store": self.store,
            "optuna_storage": self.optuna_storage,
        }
