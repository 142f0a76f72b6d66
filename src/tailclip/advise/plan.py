"""How ``tailclip advise`` spends its budget: run length, step sizes per candidate, seeds, control batch.

A run of ``T'`` steps is assumed to cost ``c = T' s + n e + o`` seconds (``s``: the measured seconds
per warm-up step; ``e``: the measured seconds of one evaluation, ``n = 4`` of them for a bake-off
run: at steps 0, ``T'/3``, ``2T'/3`` and ``T'``, 2 for a control run; ``o = 1 s`` to build the task
and open the store). What is
left of the budget after the measurement is split: 55% for the bake-off (``C`` candidates x ``P``
step sizes, successive halving stopping about 40% of the work early), 25% for the finalists' extra
seeds (3 finalists x ``S - 1`` seeds) and 20% for the control (2 optimizers x 3 step sizes). The
largest ``T' <= T`` (the config's training length) that fits is taken with ``P = 5, S = 3``; below
``T / 5`` the grid shrinks to ``P = 3``. ``T'`` never goes below ``min(T, 20)``: a budget too small
for that is overrun, and the answer says so.

The control batch (Kunstner et al., ICLR 2023): the full batch when the task's data is finite and
holds at most ``max(64 B, 8192)`` examples, else ``16 B``. It runs at least the same number of
examples (``T' B / B_control`` steps) and at most ``T'`` steps: as many as the control's share
affords at the large batch's step time (``16 s`` on finite data, measured on a stream). Full-batch
methods need many steps (Kunstner et al. ran far more epochs at full batch), so a control of a
handful of steps would compare the first moments of training, not the methods.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tailclip.advise.measure import STREAM_FACTOR

__all__ = ["Plan", "default_budget_seconds", "make_plan"]

RUN_OVERHEAD = 1.0
RUN_EVALS = 4
CONTROL_EVALS = 2
PRUNED_WORK = 0.6
FINALISTS = 3
CONTROL_RUNS = 6
SHARES = {"bakeoff": 0.55, "finalists": 0.25, "control": 0.2}
MIN_STEPS = 20
MAX_BUDGET = 20 * 60.0
MIN_BUDGET = 60.0


@dataclass(frozen=True)
class Plan:
    """The sizes of one ``advise`` (see the module docstring); ``over_budget`` when ``T'`` hit its floor."""

    budget_seconds: float
    trial_steps: int
    eval_every: int
    lr_points: int
    seeds: int
    control_batch: int
    control_steps: int
    over_budget: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_cost(steps: int, step_seconds: float, evals: float) -> float:
    return steps * step_seconds + evals + RUN_OVERHEAD


def _units(candidates: int, points: int, seeds: int) -> dict[str, float]:
    return {
        "bakeoff": candidates * points * PRUNED_WORK,
        "finalists": FINALISTS * (seeds - 1),
        "control": CONTROL_RUNS,
    }


def default_budget_seconds(
    total_steps: int, step_seconds: float, eval_seconds: float, candidates: int, seeds: int = 3
) -> float:
    """What a full-length advice costs (``T' = T``, ``P = 5``), clamped to [1, 20] minutes."""
    runs = sum(_units(candidates, 5, seeds).values())
    cost = _run_cost(total_steps, step_seconds, RUN_EVALS * eval_seconds)
    return min(MAX_BUDGET, max(MIN_BUDGET, runs * cost))


def make_plan(
    budget_seconds: float,
    total_steps: int,
    step_seconds: float,
    candidates: int,
    batch_size: int,
    examples: int | None,
    *,
    eval_seconds: float = 0.0,
    stream_control_step_seconds: float | None = None,
    seeds: int = 3,
    trial_steps: int | None = None,
) -> Plan:
    """Size the bake-off, the finalists' seeds and the control for ``budget_seconds`` (see above).

    ``stream_control_step_seconds``: a stream's step time at ``16 B`` (default: ``16 s``).
    ``trial_steps`` fixes ``T'`` instead (5 step sizes; the control runs the same number of examples
    on finite data, ``T'`` steps on a stream): a plan that does not depend on the machine's speed.
    """
    floor = min(total_steps, MIN_STEPS)
    if examples is not None and examples <= max(64 * batch_size, 8192):
        control_batch = examples
    else:
        control_batch = STREAM_FACTOR * batch_size
    factor = control_batch / batch_size
    if trial_steps is not None:
        return Plan(
            budget_seconds=float(budget_seconds),
            trial_steps=trial_steps,
            eval_every=max(1, trial_steps // 3),
            lr_points=5,
            seeds=seeds,
            control_batch=control_batch,
            control_steps=max(1, math.ceil(trial_steps / factor)) if examples is not None else trial_steps,
            over_budget=False,
        )

    def fit(points: int) -> int:
        steps = total_steps
        for phase, units in _units(candidates, points, seeds).items():
            if units:
                per_run = budget_seconds * SHARES[phase] / units
                evals = (CONTROL_EVALS if phase == "control" else RUN_EVALS) * eval_seconds
                steps = min(steps, int((per_run - evals - RUN_OVERHEAD) / max(step_seconds, 1e-9)))
        return steps

    points = 5
    steps = fit(points)
    if steps < total_steps / 5:
        points = 3
        steps = fit(points)
    over = steps < floor
    steps = max(steps, floor)
    share = budget_seconds * SHARES["control"] / CONTROL_RUNS
    large = step_seconds * factor
    if examples is None and stream_control_step_seconds is not None:
        large = stream_control_step_seconds
    affordable = int((share - CONTROL_EVALS * eval_seconds - RUN_OVERHEAD) / max(large, 1e-9))
    control_steps = min(steps, max(math.ceil(steps / factor), affordable, 1))
    return Plan(
        budget_seconds=float(budget_seconds),
        trial_steps=steps,
        eval_every=max(1, steps // 3),
        lr_points=points,
        seeds=seeds,
        control_batch=control_batch,
        control_steps=control_steps,
        over_budget=over,
    )
