"""Hand-made measurements and finalists for the unit tests of the decision rules."""

from __future__ import annotations

from tailclip.advise.bakeoff import Finalist
from tailclip.advise.candidates import Candidate, is_clipped
from tailclip.advise.measure import Measurement, NoiseSummary, SmoothnessSummary


def noise(verdict: str, alpha: float = 2.0, low: float = 1.95, high: float = 2.0) -> NoiseSummary:
    return NoiseSummary(0, verdict, alpha, low, high, 5.0, (), 1.0, 1.0)


def measurement(
    verdicts: tuple[str, ...] = ("light-tailed",), grows: bool = False, l1: float = 0.0
) -> Measurement:
    smoothness = SmoothnessSummary((0, 1, 2), (1.0, 2.0, 4.0), (1.0, 2.0, 4.0), 0.0, l1, 1.0, grows)
    return Measurement(
        batch_size=8,
        total_steps=100,
        warmup_steps=10,
        noise=[noise(v) for v in verdicts],
        grad_norm_quantiles={"q10": 1.0, "q50": 2.0, "q90": 4.0, "q99": 8.0},
        coordinate_rms_median=0.02,
        parameters=10_000,
        smoothness=smoothness,
        step_seconds=0.01,
        eval_seconds=0.0,
        examples=None,
        control_batch=16,
        control_step_seconds=0.16,
    )


def finalist(label: str, values: tuple[float, ...], spec: dict | None = None) -> Finalist:
    clipped = {"name": "clip_sgd", "clip": "global", "max_norm": 1.0}
    spec = spec or (clipped if "clip" in label else {"name": "sgd"})
    candidate = Candidate(label, spec, 0.01, 1.0, "test", is_clipped(spec))
    seeds = tuple(range(len(values)))
    return Finalist(candidate, {**spec, "lr": 0.1}, seeds, tuple(values), tuple(f"{label}{s}" for s in seeds))
