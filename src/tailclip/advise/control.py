"""Step 4 of ``tailclip advise``: is the winner's gain caused by the gradient noise?

Kunstner et al. (ICLR 2023; NeurIPS 2024) show that the gap between SGD and Adam on language
models persists at full batch, where there is no noise: an optimizer can win for reasons of
curvature or class imbalance, not of noise. The control reruns the two finalists of the
comparison at the large batch of the plan (:mod:`tailclip.advise.plan`), each at its step size
times 1/3, 1 and 3 (the best step size moves with the batch), and compares their best final
``eval/loss``:

* **holds**: the same optimizer wins with at least half the small-batch relative gap: the gain is
  *not* explained by the noise;
* **flips** (the other wins) or **vanishes** (the gap shrinks below half): the gain *is*
  explained by the noise;
* **no gain**: the finalists tied at the training batch (lead within the seed spread), so there
  is nothing to explain; the large-batch numbers are still reported;
* **weak**: the large batch shrinks the noise by less than half (see below), so it cannot tell
  noise from geometry; the numbers are reported, no conclusion is drawn;
* **too short**: the budget affords fewer than ``min(10, T')`` steps at every batch the plan
  tries (:mod:`tailclip.advise.plan`): no control runs, and the answer names the budget that
  would afford one. A control of a few steps compares the first moments of training, not the
  methods, and its ranking says nothing about the noise.

The relative gap is ``(loser - winner) / |loser|``. At ``K`` times the batch an alpha-stable noise
shrinks only by ``K^(1/alpha - 1)`` (``K^(-1/2)`` for finite variance), so the answer records that
factor with the measured ``alpha``: a heavy-tailed noise is hard to average away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tailclip.advise._engine import ExperimentConfig, ResultsStore
from tailclip.advise.bakeoff import Finalist, ensure_run, final_metric, run_config
from tailclip.advise.candidates import lr_of, with_lr
from tailclip.advise.plan import MIN_CONTROL_STEPS, Plan

__all__ = ["LR_FACTORS", "ControlResult", "no_gain_message", "relative_gap", "run_control", "too_short"]

LR_FACTORS = (1 / 3, 1.0, 3.0)
KEEP_FRACTION = 0.5
WEAK_REDUCTION = 0.5


def relative_gap(winner: float, loser: float) -> float:
    """``(loser - winner) / |loser|``; ``1`` when only the loser is infinite, ``0`` when both are."""
    if math.isinf(loser):
        return 0.0 if math.isinf(winner) else 1.0
    return (loser - winner) / abs(loser) if loser else 0.0


def no_gain_message(
    names: tuple[str, str], small: tuple[float, float], large: tuple[float, float], at: str
) -> str:
    """The control's words when the finalists tied: who had the lower loss at each batch, by the
    measured means (the recommendation's order is a tie-break and says nothing about them)."""
    small_lead = names[0] if small[0] <= small[1] else names[1]
    large_lead = names[0] if large[0] <= large[1] else names[1]
    order = "as well" if small_lead == large_lead else "instead"
    return (
        f"{names[0]} and {names[1]} tied at the training batch (within the seed spread; {small_lead} "
        f"lower), so there is no gain to explain; {at} {large_lead} is lower {order}: final losses "
        f"{large[0]:.4g} and {large[1]:.4g}"
    )


@dataclass(frozen=True)
class ControlResult:
    """The control's runs and conclusion.

    ``outcome``: holds / flips / vanishes / no gain / weak / too short (see the module docstring).
    """

    batch_size: int
    steps: int
    noise_reduction: float
    labels: tuple[str, str]
    small_batch: tuple[float, float]
    large_batch: tuple[float, float]
    large_batch_optimizers: tuple[dict[str, Any], dict[str, Any]]
    outcome: str
    explained_by_noise: bool | None
    message: str
    run_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best_at_large_batch(
    config: ExperimentConfig,
    finalist: Finalist,
    plan: Plan,
    store: ResultsStore,
    total: int,
    on_run: Callable[[str], None] | None,
) -> tuple[float, dict[str, Any], list[str]]:
    best, best_spec, ids = math.inf, finalist.optimizer, []
    for factor in LR_FACTORS:
        spec = with_lr(finalist.optimizer, lr_of(finalist.optimizer) * factor)
        run = run_config(
            config,
            spec,
            label=finalist.candidate.label,
            steps=plan.control_steps,
            seed=config.train.seed,
            total_steps=total,
            batch_size=plan.control_batch,
        )
        ensure_run(run, store)
        ids.append(run.run_id)
        value = final_metric(store, run.run_id)
        if value < best or (math.isinf(best) and best_spec is finalist.optimizer):
            best, best_spec = value, spec
        if on_run is not None:
            on_run(finalist.candidate.label)
    return best, best_spec, ids


def run_control(
    config: ExperimentConfig,
    winner: Finalist,
    rival: Finalist,
    significant: bool,
    plan: Plan,
    store: ResultsStore,
    total_steps: int,
    alpha: float,
    *,
    on_run: Callable[[str], None] | None = None,
) -> ControlResult:
    """Rerun ``winner`` and ``rival`` at ``plan.control_batch`` (see the module docstring).

    ``significant``: whether ``winner`` led ``rival`` by more than the seed spread at the training batch.
    """
    large_w, spec_w, ids_w = _best_at_large_batch(config, winner, plan, store, total_steps, on_run)
    large_r, spec_r, ids_r = _best_at_large_batch(config, rival, plan, store, total_steps, on_run)
    factor = plan.control_batch / config.train.batch_size
    reduction = factor ** (1.0 / min(max(alpha, 1e-3), 2.0) - 1.0) if math.isfinite(alpha) else factor**-0.5
    small_gap = relative_gap(winner.mean, rival.mean)
    large_gap = relative_gap(large_w, large_r)
    names = (winner.candidate.label, rival.candidate.label)
    at = f"at batch {plan.control_batch} ({factor:.3g}x, noise scale x{reduction:.2g})"
    if not significant:
        outcome, explained = "no gain", None
        message = no_gain_message(names, (winner.mean, rival.mean), (large_w, large_r), at)
    elif reduction > WEAK_REDUCTION:
        outcome, explained = "weak", None
        message = (
            f"{at} the noise is barely reduced (heavy tails average slowly), so the control cannot "
            f"tell noise from geometry: {names[0]} {large_w:.4g} vs {names[1]} {large_r:.4g}"
        )
    elif large_w < large_r and large_gap >= KEEP_FRACTION * small_gap:
        outcome, explained = "holds", False
        message = (
            f"{names[0]} still beats {names[1]} {at} ({large_w:.4g} vs {large_r:.4g}, relative gap "
            f"{large_gap:.0%} vs {small_gap:.0%} at the training batch): "
            "the gain is not explained by the noise"
        )
    else:
        outcome = "flips" if large_r < large_w else "vanishes"
        explained = True
        message = (
            f"{at} the ranking {outcome} ({names[0]} {large_w:.4g} vs {names[1]} {large_r:.4g}, relative gap "
            f"{large_gap:.0%} against {small_gap:.0%}): the gain is explained by the noise"
        )
    return ControlResult(
        batch_size=plan.control_batch,
        steps=plan.control_steps,
        noise_reduction=float(reduction),
        labels=names,
        small_batch=(winner.mean, rival.mean),
        large_batch=(large_w, large_r),
        large_batch_optimizers=(spec_w, spec_r),
        outcome=outcome,
        explained_by_noise=explained,
        message=message,
        run_ids=tuple(ids_w + ids_r),
    )


def too_short(config: ExperimentConfig, winner: Finalist, rival: Finalist, plan: Plan) -> ControlResult:
    """The control that did not run: ``plan.control_too_short`` (see the module docstring)."""
    needed = min(MIN_CONTROL_STEPS, plan.trial_steps)
    message = (
        f"too short to conclude: the budget affords {plan.control_steps} steps at batch "
        f"{plan.control_batch} ({plan.control_batch / config.train.batch_size:.3g}x), fewer than the "
        f"{needed} a comparison needs, so no control ran; --budget-minutes "
        f"{plan.control_budget_minutes} or more would afford one"
    )
    return ControlResult(
        batch_size=plan.control_batch,
        steps=plan.control_steps,
        noise_reduction=math.nan,
        labels=(winner.candidate.label, rival.candidate.label),
        small_batch=(winner.mean, rival.mean),
        large_batch=(math.nan, math.nan),
        large_batch_optimizers=(winner.optimizer, rival.optimizer),
        outcome="too short",
        explained_by_noise=None,
        message=message,
        run_ids=(),
    )
