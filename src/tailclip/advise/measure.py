"""Step 1 of ``tailclip advise``: measure the user's task before choosing anything.

On the config's task, model, data, batch size and base optimizer (built exactly as a run builds
them, seeded with ``train.seed``):

* the noise diagnostics of ``tailclip tails`` (:func:`tailclip.noise.tails_report`) at
  initialisation and after a warm-up of ``W`` training steps: tail index ``alpha`` with its
  interval, noise norms against their Gaussian reference, and the documented verdict;
* the gradient norms ``||g_t||`` of the ``W`` warm-up steps: their quantiles are the clipping
  thresholds a percentile rule (AutoClip) would pick;
* the (L0, L1)-smoothness probe (Zhang, He, Sra, Jadbabaie, ICLR 2020) at a few warm-up steps:
  ``L_t`` against ``||grad F(x_t)||`` on a fixed set of batches, summarised by the least-squares
  line ``L = L0 + L1 ||grad F||`` and the rank correlation; local smoothness that grows with the
  gradient norm is the regime where clipped steps provably beat fixed ones;
* the wall time of one training step and of one evaluation, which size the bake-off, and that
  of a step at the control's batch (:func:`tailclip.advise.plan.control_batch`: the full batch
  or ``16 B``), which sizes the control: a large batch's step costs more than ``16`` small ones
  when it leaves the caches (``resnet-delta-gclip``: 3.1 s at batch 2,048 against 0.105 s at 128).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailclip.advise._engine import (
    ExperimentConfig,
    build_optimizer,
    build_task,
    make_scheduler,
    model_step,
    resolve_device,
    training_length,
)
from tailclip.advise.plan import control_batch
from tailclip.clip import total_norm
from tailclip.noise import BatchLoss, NoiseReport, flat_parameters, smoothness_probe, tails_report

__all__ = ["Measurement", "NoiseSummary", "SmoothnessSummary", "combined_verdict", "measure", "warmup_length"]

Progress = Callable[[int, int], None]
QUANTILES = (0.1, 0.5, 0.9, 0.99)
PROBES = 4
PROBE_BATCHES = 2
GROWTH_CORRELATION = 0.5
GROWTH_RATIO = 1.5
TIMED_STEPS = 3


def warmup_length(total_steps: int) -> int:
    """``W = clamp(T / 10, 10, 200)``, at most ``T``: long enough to leave initialisation."""
    return min(total_steps, max(10, min(200, total_steps // 10)))


@dataclass(frozen=True)
class NoiseSummary:
    """The noise at one point: step, verdict label, Mohammadi ``alpha`` ``[low, high]``, Hill's ``alpha``."""

    step: int
    verdict: str
    alpha: float
    alpha_low: float
    alpha_high: float
    hill_alpha: float
    reasons: tuple[str, ...]
    noise_norm_median: float
    gaussian_norm_median: float

    @classmethod
    def from_report(cls, step: int, report: NoiseReport) -> NoiseSummary:
        return cls(
            step=step,
            verdict=report.verdict.label,
            alpha=float(report.tail.alpha),
            alpha_low=float(report.tail.low),
            alpha_high=float(report.tail.high),
            hill_alpha=float(report.hill.alpha),
            reasons=tuple(report.verdict.reasons),
            noise_norm_median=float(np.median(report.norms)),
            gaussian_norm_median=float(np.median(report.reference_norms)),
        )


@dataclass(frozen=True)
class SmoothnessSummary:
    """Probe points ``(||grad F(x_t)||, L_t)``, the line ``L0 + L1 G`` and whether ``L`` grows with ``G``."""

    steps: tuple[int, ...]
    grad_norms: tuple[float, ...]
    smoothness: tuple[float, ...]
    l0: float
    l1: float
    correlation: float
    grows: bool


@dataclass(frozen=True)
class Measurement:
    """Everything step 1 measured (see the module docstring)."""

    batch_size: int
    total_steps: int
    warmup_steps: int
    noise: list[NoiseSummary]
    grad_norm_quantiles: dict[str, float]
    coordinate_rms_median: float
    parameters: int
    smoothness: SmoothnessSummary
    step_seconds: float
    eval_seconds: float
    examples: int | None
    control_batch: int
    control_step_seconds: float
    reports: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return combined_verdict([n.verdict for n in self.noise])

    @property
    def alpha(self) -> NoiseSummary:
        """The summary whose interval is lowest (the heaviest-tailed point measured)."""
        return min(self.noise, key=lambda n: (n.alpha_high, n.alpha))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combined_verdict(labels: list[str]) -> str:
    """Heavy-tailed if any point is, light-tailed if all are, inconclusive otherwise."""
    if "heavy-tailed" in labels:
        return "heavy-tailed"
    if labels and all(label == "light-tailed" for label in labels):
        return "light-tailed"
    return "inconclusive"


def _smoothness_summary(points: list[tuple[int, float, float]]) -> SmoothnessSummary:
    finite = [(s, g, v) for s, g, v in points if math.isfinite(g) and math.isfinite(v)]
    steps = tuple(s for s, _, _ in finite)
    grads = np.array([g for _, g, _ in finite])
    values = np.array([v for _, _, v in finite])
    if len(finite) < 2 or np.ptp(grads) == 0.0:
        l0 = float(values.mean()) if len(values) else math.nan
        return SmoothnessSummary(steps, tuple(grads), tuple(values), l0, 0.0, math.nan, False)
    l1, l0 = np.polyfit(grads, values, 1)
    rank_g, rank_l = np.argsort(np.argsort(grads)), np.argsort(np.argsort(values))
    correlation = float(np.corrcoef(rank_g, rank_l)[0, 1]) if np.ptp(rank_l) else 0.0
    grows = bool(l1 > 0 and correlation >= GROWTH_CORRELATION and values.max() >= GROWTH_RATIO * values.min())
    return SmoothnessSummary(
        steps, tuple(map(float, grads)), tuple(map(float, values)), float(l0), float(l1), correlation, grows
    )


def _eval_seconds(task: Any) -> float:
    """Seconds of one ``task.evaluate()`` as the runner calls it (eval mode, no gradients)."""
    start = time.perf_counter()
    task.model.eval()
    with torch.no_grad():
        task.evaluate()
    task.model.train()
    return time.perf_counter() - start


def _step_seconds_at(config: ExperimentConfig, device: torch.device, batch_size: int) -> float:
    """Seconds per step of ``config``'s task at ``batch_size`` (after one untimed step)."""
    train = config.train.model_copy(update={"batch_size": batch_size})
    twin = build_task(config.model_copy(update={"train": train}), device)
    optimizer = build_optimizer(config.optimizer, [p for p in twin.model.parameters() if p.requires_grad])
    scheduler = make_scheduler(optimizer, config.schedule, TIMED_STEPS + 1)
    model_step(twin, optimizer, scheduler, config.train.accumulation_steps)
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        model_step(twin, optimizer, scheduler, config.train.accumulation_steps)
    return (time.perf_counter() - start) / TIMED_STEPS


def measure(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    noise_batches: int = 100,
    mean_batches: int = 8,
    warmup_steps: int | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """Measure ``config``'s task (see the module docstring); noise reports go to ``out_dir/{init,warmup}``.

    ``progress(done, total)`` counts noise batches and warm-up steps. A vectorized task raises
    ``ValueError``; a warm-up that diverges raises ``RuntimeError``.
    """
    device = resolve_device(config.train.device)
    task = build_task(config, device)
    if task.kind != "model":
        raise ValueError(f"task.name: {config.task.name!r} is a vectorized task; allowed: a model task")
    total = training_length(config, task)
    warmup = warmup_steps if warmup_steps is not None else warmup_length(total)
    out = Path(out_dir)
    noise_total = mean_batches + noise_batches
    grand_total = 2 * noise_total + warmup
    done = 0

    def tick(count: int = 1) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, grand_total)

    def noise_at(step: int, name: str) -> tuple[NoiseSummary, str]:
        source = task.noise_source()
        base = done
        with task.preserved_data_position():
            report = tails_report(
                source.model,
                source.loss_fn,
                source.data,
                out / name,
                batch_size=config.train.batch_size,
                mean_batches=mean_batches,
                noise_batches=noise_batches,
                seed=config.train.seed,
                step=step,
                progress=None if progress is None else (lambda d, t: progress(base + d, grand_total)),
            )
        tick(noise_total - (done - base))
        return NoiseSummary.from_report(step, report), str(report.paths.get("json", out / name))

    noise, reports = [], {}
    summary, path = noise_at(0, "init")
    noise.append(summary)
    reports["init"] = path

    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config.optimizer, params)
    scheduler = make_scheduler(optimizer, config.schedule, total)
    with task.preserved_data_position():
        fixed = [task.train_batch() for _ in range(PROBE_BATCHES)]
    loss = BatchLoss(lambda batch: task.loss(batch)[0])
    probe_at = {int(round(i * (warmup - 1) / max(PROBES - 1, 1))) for i in range(PROBES)}
    norms, probes, seconds = [], [], 0.0
    for step in range(warmup):
        before = flat_parameters(task.model) if step in probe_at else None
        start = time.perf_counter()
        model_step(task, optimizer, scheduler, config.train.accumulation_steps)
        norms.append(float(total_norm([p.grad for p in params if p.grad is not None])))
        seconds += time.perf_counter() - start
        if before is not None:
            after = flat_parameters(task.model)
            if bool(torch.isfinite(after).all()) and not torch.equal(before, after):
                probe = smoothness_probe(task.model, loss, fixed, before, after, seed=config.train.seed)
                probes.append((step, probe.grad_norm, probe.smoothness))
        tick()
    if not all(math.isfinite(n) for n in norms) or not bool(
        torch.isfinite(flat_parameters(task.model)).all()
    ):
        raise RuntimeError(
            f"the warm-up diverged with {config.optimizer.name}: non-finite gradients or parameters"
        )
    if warmup:
        summary, path = noise_at(warmup, "warmup")
        noise.append(summary)
        reports["warmup"] = path
    parameters = sum(p.numel() for p in params)
    eval_seconds = _eval_seconds(task)
    per_epoch = task.steps_per_epoch()
    examples = None
    if per_epoch is not None:
        examples = per_epoch * config.train.batch_size * config.train.accumulation_steps
    large = control_batch(config.train.batch_size, examples)
    quantiles = np.quantile(np.array(norms), QUANTILES) if norms else np.full(len(QUANTILES), math.nan)
    return Measurement(
        batch_size=config.train.batch_size,
        total_steps=total,
        warmup_steps=warmup,
        noise=noise,
        grad_norm_quantiles={f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, quantiles)},
        coordinate_rms_median=float(quantiles[1]) / math.sqrt(parameters),
        parameters=parameters,
        smoothness=_smoothness_summary(probes),
        step_seconds=seconds / max(warmup, 1),
        eval_seconds=eval_seconds,
        examples=examples,
        control_batch=large,
        control_step_seconds=_step_seconds_at(config, device, large),
        reports=reports,
    )
