"""A documented verdict on a noise sample: "heavy-tailed", "light-tailed" or "inconclusive".

"Heavy-tailed" means what Zhang et al. (NeurIPS 2020, Assumption 1) mean: the noise has no
finite variance at the scale measured (tail index ``alpha < 2``). Three pieces of evidence each
vote heavy, light or abstain:

1. **Tail index** (Mohammadi, vector mode, with its bootstrap interval ``[low, high]``): heavy if
   ``high < threshold``; light if ``low >= threshold``; otherwise abstain. ``threshold = 1.9``
   leaves room for the estimator's clipping at 2 and its small-sample spread.
2. **Max-to-sum trend** (slope ``s`` of ``log R_m(2)`` against ``log m``, from
   :func:`~tailclip.noise.statistics.max_to_sum_slope`): light if ``s < -0.5`` (``R_m -> 0``: the
   second moment is finite; Gaussian noise gives about ``-1``); heavy if ``s > -0.25`` (no decay:
   an infinite second moment gives about 0); otherwise abstain (e.g. Student-t with 3 degrees of
   freedom: finite variance, slow decay ``m^(-1/3)``).
3. **Batch-size check** (the tail index at ``B`` and at ``4B``; a noise of batch size ``4B`` is the
   mean of four noises of size ``B``): a stable law keeps its ``alpha`` under averaging, a
   finite-variance law moves toward the Gaussian ``alpha = 2``. Light ("rising toward 2") if
   ``alpha_4B >= threshold > alpha_B``; heavy if the whole ``4B`` interval lies below
   ``threshold`` (still heavy after averaging); otherwise abstain. A rise that stays below the
   threshold is not counted as light: for laws that are only in a stable law's domain of
   attraction (Pareto, Student-t) the estimate rises with the batch size whether the variance
   is finite or not (``docs/diagnostics.md`` has the table).

The verdict: **heavy-tailed** if the tail index votes heavy and no other piece votes light;
**light-tailed** if no piece votes heavy and the tail index or the max-to-sum trend votes light
(for Gaussian noise the clipped estimate sits at 2 and its bootstrap interval reaches below the
threshold at a few hundred samples, so the tail index often abstains), or if the batch-size
check and the max-to-sum trend both vote light (a small ``alpha`` at ``B`` that rises under
averaging is the pre-asymptotic shape of a finite-variance law); **inconclusive** otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tailclip.noise.estimators import TailIndex

VERDICTS = ("heavy-tailed", "light-tailed", "inconclusive")
HEAVY, LIGHT, ABSTAIN = "heavy", "light", "abstain"


@dataclass(frozen=True)
class Verdict:
    """``label`` is one of :data:`VERDICTS`; ``votes`` maps each piece of evidence to its vote;
    ``reasons`` are human-readable lines; ``evidence`` holds the numbers used."""

    label: str
    votes: dict[str, str]
    reasons: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "votes": dict(self.votes),
            "reasons": list(self.reasons),
            "evidence": dict(self.evidence),
        }


def _tail_vote(tail: TailIndex, threshold: float) -> tuple[str, str]:
    text = (
        f"tail index alpha = {tail.alpha:.2f} [{tail.low:.2f}, {tail.high:.2f}] ({tail.method}, n = {tail.n})"
    )
    if tail.high < threshold:
        return HEAVY, f"{text}: the whole interval is below {threshold}"
    if tail.low >= threshold:
        return LIGHT, f"{text}: the whole interval is at or above {threshold}"
    return ABSTAIN, f"{text}: the interval straddles {threshold}"


def _ratio_vote(slope: float) -> tuple[str, str]:
    text = f"max-to-sum ratio R_m(2) slope {slope:.2f} in log-log"
    if slope < -0.5:
        return LIGHT, f"{text}: decreasing, the second moment looks finite"
    if slope > -0.25:
        return HEAVY, f"{text}: not decreasing, the second moment looks infinite"
    return ABSTAIN, f"{text}: slow decay, undecided"


def _batch_vote(tail: TailIndex, tail_4b: TailIndex, threshold: float) -> tuple[str, str]:
    interval = f"[{tail_4b.low:.2f}, {tail_4b.high:.2f}]"
    text = f"alpha at 4B = {tail_4b.alpha:.2f} {interval} vs at B = {tail.alpha:.2f}"
    if tail_4b.alpha >= threshold > tail.alpha:
        return LIGHT, f"{text}: rising to 2 under averaging, finite variance"
    if tail_4b.high < threshold:
        return HEAVY, f"{text}: still below {threshold} after averaging"
    return ABSTAIN, f"{text}: undecided"


def verdict(
    tail: TailIndex,
    *,
    tail_4b: TailIndex | None = None,
    ratio_slope: float | None = None,
    threshold: float = 1.9,
) -> Verdict:
    """Combine the tail index (required), the batch-size check and the max-to-sum trend.

    ``tail``: Mohammadi tail index of the noise at batch size ``B``; ``tail_4b``: the same at
    ``4B``; ``ratio_slope``: :func:`~tailclip.noise.statistics.max_to_sum_slope` with ``p = 2``.
    Missing or NaN evidence abstains. Rules: see the module docstring.
    """
    if not 1.0 < threshold <= 2.0:
        raise ValueError(f"Invalid threshold: {threshold}; allowed: 1 < threshold <= 2")
    votes: dict[str, str] = {}
    reasons: list[str] = []
    votes["tail_index"], reason = _tail_vote(tail, threshold)
    reasons.append(reason)
    evidence: dict[str, Any] = {"alpha": tail.alpha, "alpha_low": tail.low, "alpha_high": tail.high}
    if ratio_slope is not None and math.isfinite(ratio_slope):
        votes["max_to_sum"], reason = _ratio_vote(ratio_slope)
        reasons.append(reason)
        evidence["ratio_slope"] = ratio_slope
    if tail_4b is not None:
        votes["batch_size"], reason = _batch_vote(tail, tail_4b, threshold)
        reasons.append(reason)
        evidence.update(alpha_4b=tail_4b.alpha, alpha_4b_low=tail_4b.low, alpha_4b_high=tail_4b.high)
    others = [v for k, v in votes.items() if k != "tail_index"]
    if votes["tail_index"] == HEAVY and LIGHT not in others:
        label = "heavy-tailed"
    elif HEAVY not in votes.values() and LIGHT in (votes["tail_index"], votes.get("max_to_sum")):
        label = "light-tailed"
    elif votes.get("batch_size") == LIGHT and votes.get("max_to_sum") == LIGHT:
        label = "light-tailed"
    else:
        label = "inconclusive"
    return Verdict(label, votes, tuple(reasons), evidence)
