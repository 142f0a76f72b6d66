"""Learning-rate schedules: the multiplier ``lambda(t)`` of the base lr after ``t`` optimizer steps.

Step ``t + 1`` uses ``lr_{t+1} = lr * lambda(t)`` (``t = 0, 1, ...``: ``torch.optim.lr_scheduler.LambdaLR``'s
convention, where ``t`` is the number of ``scheduler.step()`` calls so far). With ``W`` warmup
steps (``warmup_steps``, or ``round(warmup_fraction * T)``), ``T`` total steps and the final
factor ``phi`` (``final_factor``):

* warmup (every kind), for ``t < W``: ``lambda(t) = (t + 1) / W``, a linear ramp reaching 1 at
  step ``W``;
* ``constant``: ``lambda(t) = 1``;
* ``warmup_linear``: ``lambda(t) = phi + (1 - phi) (1 - p)``, ``p = (t - W) / (T - W)`` clamped to
  [0, 1]: linear decay from 1 to ``phi`` at the last step;
* ``cosine``: ``lambda(t) = phi + (1 - phi) (1 + cos(pi p)) / 2`` (Loshchilov and Hutter, SGDR,
  ICLR 2017, without restarts);
* ``step``: ``lambda(t) = gamma^k`` with ``k`` the number of milestones ``m <= t``: the lr is
  multiplied by ``gamma`` after ``m`` steps (as ``torch.optim.lr_scheduler.MultiStepLR``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from tailclip.engine.config import ScheduleConfig

__all__ = ["lr_factor", "make_scheduler", "warmup_steps"]


def warmup_steps(schedule: ScheduleConfig, total_steps: int) -> int:
    """``W``: the configured warmup steps, or ``round(warmup_fraction * T)``."""
    if schedule.warmup_steps is not None:
        return schedule.warmup_steps
    if schedule.warmup_fraction is not None:
        return round(schedule.warmup_fraction * total_steps)
    return 0


def lr_factor(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """``lambda(t)`` for a schedule over ``total_steps`` steps (see the module docstring)."""
    if total_steps < 1:
        raise ValueError(f"Invalid total_steps: {total_steps}; allowed: >= 1")
    warmup = warmup_steps(schedule, total_steps)
    decay = max(1, total_steps - warmup)
    kind, final, gamma = schedule.kind, schedule.final_factor, schedule.gamma
    milestones = list(schedule.milestones)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** bisect.bisect_right(milestones, t)
        progress = min(1.0, max(0.0, (t - warmup) / decay))
        if kind == "warmup_linear":
            return final + (1.0 - final) * (1.0 - progress)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, total_steps: int) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every param group of ``optimizer``."""
    return LambdaLR(optimizer, lr_factor(schedule, total_steps))
