"""How ``tailclip advise`` spends its budget: run length, step sizes per candidate, seeds, control batch.

A run of ``T'`` steps is assumed to cost ``c = T' s + n e + o`` seconds (``s``: the measured seconds
per warm-up step; ``e``: the measured seconds of one evaluation, ``n = 4`` of them for a bake-off
run: at steps 0, ``T'/3``, ``2T'/3`` and ``T'``, 2 for a control run; ``o = 1 s`` to build the task
and open the store). What is
left of the budget after the measurement is split: 55% for the bake-off (``C`` candidates x ``P``
step sizes, successive halving stopping about 40% of the work early), 25% for the finalists' extra
seeds (3 finalists x ``S - 1`` seeds) and 20% for the control (2 optimizers x 3 step sizes), whose
runs cost ``T' s_c B / B_c`` for the steps (the same examples at the measured step time ``s_c`` of
the control's batch ``B_c``). The largest ``T' <= T`` (the config's training length) that fits is
taken with ``P = 5, S = 3``; below ``T / 5`` the grid shrinks to ``P = 3``. ``T'`` never goes below
``min(T, 20)``: a budget too small for that is overrun, and the answer says so.

The control batch (Kunstner et al., ICLR 2023; :func:`control_batch`): the full batch when the
task's data is finite and holds at most ``max(64 B, 8192)`` examples, else ``16 B``. It runs at
least the same number of examples (``T' B / B_c`` steps) and at most ``T'`` steps: as many as the
control's share affords at the measured ``s_c`` (``K s_c / 16`` at ``K B`` below it: a smaller
batch costs at most its share of the examples). Full-batch methods need many
steps (Kunstner et al. ran far more epochs at full batch), so a control of a handful of steps
would compare the first moments of training, not the methods: a control needs at least
``min(10, T')`` steps. When the first choice of batch cannot afford them, the plan falls back to
``8 B``, then ``4 B`` (still a noise reduced by at least half under finite variance); when none can,
``control_too_short`` is set, no control runs and the answer says so, with the budget that would
afford one (``control_budget_seconds``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Plan", "control_batch", "default_budget_seconds", "make_plan"]

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
MIN_CONTROL_STEPS = 10
CONTROL_FACTOR = 16
FALLBACK_FACTORS = (8, 4)


@dataclass(frozen=True)
class Plan:
    """The sizes of one ``advise`` (see the module docstring); ``over_budget`` when ``T'`` hit its floor.

    ``control_too_short``: no batch of the control affords ``min(10, T')`` steps in its share (no
    control runs); ``control_budget_seconds`` is then the budget whose share would afford them at
    ``4 B``.
    """

    budget_seconds: float
    trial_steps: int
    eval_every: int
    lr_points: int
    seeds: int
    control_batch: int
    control_steps: int
    over_budget: bool
    control_too_short: bool = False
    control_budget_seconds: float | None = None

    @property
    def control_budget_minutes(self) -> int | None:
        """``control_budget_seconds`` in whole minutes, rounded up (``None`` when it is not set)."""
        return None if self.control_budget_seconds is None else math.ceil(self.control_budget_seconds / 60)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def control_batch(batch_size: int, examples: int | None) -> int:
    """The control's first choice of batch: all ``examples`` when the data is finite and holds at
    most ``max(64 B, 8192)`` of them (the full batch), else ``16 B``."""
    if examples is not None and examples <= max(64 * batch_size, 8192):
        return examples
    return CONTROL_FACTOR * batch_size


def _run_cost(steps: int, step_seconds: float, evals: float) -> float:
    return steps * step_seconds + evals + RUN_OVERHEAD


def _units(candidates: int, points: int, seeds: int) -> dict[str, float]:
    return {
        "bakeoff": candidates * points * PRUNED_WORK,
        "finalists": FINALISTS * (seeds - 1),
        "control": CONTROL_RUNS,
    }


def default_budget_seconds(
    total_steps: int,
    step_seconds: float,
    eval_seconds: float,
    candidates: int,
    seeds: int = 3,
    *,
    maximum: float = MAX_BUDGET,
) -> float:
    """What a full-length advice costs (``T' = T``, ``P = 5``), clamped to [1 minute, ``maximum``]."""
    runs = sum(_units(candidates, 5, seeds).values())
    cost = _run_cost(total_steps, step_seconds, RUN_EVALS * eval_seconds)
    return min(maximum, max(MIN_BUDGET, runs * cost))


def make_plan(
    budget_seconds: float,
    total_steps: int,
    step_seconds: float,
    candidates: int,
    batch_size: int,
    examples: int | None,
    *,
    eval_seconds: float = 0.0,
    control_step_seconds: float | None = None,
    seeds: int = 3,
    trial_steps: int | None = None,
) -> Plan:
    """Size the bake-off, the finalists' seeds and the control for ``budget_seconds`` (see above).

    ``control_step_seconds``: the measured step time at :func:`control_batch` (default: ``s``
    times the batch ratio).
    ``trial_steps`` fixes ``T'`` instead (5 step sizes; the control, at the first choice of batch,
    runs the same number of examples on finite data, at least ``min(10, T')`` steps, and ``T'``
    steps on a stream): a plan that does not depend on the machine's speed.
    """
    floor = min(total_steps, MIN_STEPS)
    first = control_batch(batch_size, examples)
    first_seconds = control_step_seconds
    if first_seconds is None:
        first_seconds = step_seconds * first / batch_size

    def large_step_seconds(batch: int) -> float:
        return first_seconds * batch / first

    batches = [first, *(k * batch_size for k in FALLBACK_FACTORS if k * batch_size < first)]
    if trial_steps is not None:
        factor = first / batch_size
        same_examples = math.ceil(trial_steps / factor) if examples is not None else trial_steps
        return Plan(
            budget_seconds=float(budget_seconds),
            trial_steps=trial_steps,
            eval_every=max(1, trial_steps // 3),
            lr_points=5,
            seeds=seeds,
            control_batch=first,
            control_steps=min(trial_steps, max(same_examples, MIN_CONTROL_STEPS)),
            over_budget=False,
        )

    def fit(points: int) -> int:
        steps = total_steps
        for phase, units in _units(candidates, points, seeds).items():
            if units:
                per_run = budget_seconds * SHARES[phase] / units
                control = phase == "control"
                evals = (CONTROL_EVALS if control else RUN_EVALS) * eval_seconds
                per_step = first_seconds * batch_size / first if control else step_seconds
                steps = min(steps, int((per_run - evals - RUN_OVERHEAD) / max(per_step, 1e-9)))
        return steps

    points = 5
    steps = fit(points)
    if steps < total_steps / 5:
        points = 3
        steps = fit(points)
    over = steps < floor
    steps = max(steps, floor)

    share = budget_seconds * SHARES["control"] / CONTROL_RUNS
    needed = min(MIN_CONTROL_STEPS, steps)
    too_short: dict[str, Any] = {}
    for batch in batches:
        spare = share - CONTROL_EVALS * eval_seconds - RUN_OVERHEAD
        affordable = int(spare / max(large_step_seconds(batch), 1e-9))
        control_steps = min(steps, max(math.ceil(steps * batch_size / batch), affordable, 1))
        if control_steps >= needed:
            break
    else:
        run = needed * large_step_seconds(batch) + CONTROL_EVALS * eval_seconds + RUN_OVERHEAD
        too_short = {
            "control_too_short": True,
            "control_budget_seconds": CONTROL_RUNS * run / SHARES["control"],
        }
    return Plan(
        budget_seconds=float(budget_seconds),
        trial_steps=steps,
        eval_every=max(1, steps // 3),
        lr_points=points,
        seeds=seeds,
        control_batch=batch,
        control_steps=control_steps,
        over_budget=over,
        **too_short,
    )
