"""TailMonitor: watch the gradient noise and the clipping during training, one call per step.

::

    monitor = TailMonitor(model, loss_fn, train_data, batch_size=64, every=1000)
    for step in range(1, steps + 1):
        loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
        monitor.step(optimizer, step)
    monitor.history      # one record every ``every`` steps
    monitor.to_json()

Each call reads the optimizer's step statistics when it has them (tailclip optimizers keep
``group_stats``: per param group, the gradient norm before clipping, the clip factor, whether
clipping was active); the monitor keeps a reference and combines them into ``step_stats`` only
at record time, so a step costs a list append and no host synchronisation. A plain
``torch.optim`` optimizer is tolerated and nothing extra is computed for it. Every ``every``
steps the monitor collects a small noise sample at the current parameters
(:func:`~tailclip.noise.collect_noise`, ``mean_batches + noise_batches`` forward-backward passes
in training mode) and logs the vector-mode tail index with its bootstrap interval, the noise
norms, and the window's gradient-norm quantiles and fraction of clipped steps.

Cost: about ``(mean_batches + noise_batches) / every`` of the training's forward-backward
passes; the defaults (4 + 50 every 1000 steps) stay under 10% of training time
(``benchmarks/noise_bench.py`` measures it). Fifty noise samples give ``K2 = 5`` Mohammadi
blocks: a coarse ``alpha`` whose interval says so; raise ``noise_batches`` for a finer one. Four
mean batches suffice because the tail index centres the sample by its own mean (the error of
``gbar`` cancels); the noise norms carry it, inflated by about ``sqrt(1 + 1/M)``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tailclip.clip import ClipStats
from tailclip.noise._json import dumps
from tailclip.noise._model import LossFn, model_device, trainable_parameters
from tailclip.noise.batches import BatchLoss
from tailclip.noise.collect import collect_noise
from tailclip.noise.projection import RandomProjection

GRAD_NORM_QUANTILES = (0.1, 0.5, 0.9, 0.99)


class TailMonitor:
    """Log the tail index of the gradient noise and the clipping statistics over training.

    ``model``, ``loss_fn``, ``data``: as for :func:`~tailclip.noise.collect_noise` (the training
    data). Every ``every`` steps a sample of ``noise_batches`` noises of batch size
    ``batch_size`` (or per-example noises with ``per_sample``) around a mean gradient of
    ``mean_batches`` batches is taken with seed ``seed + step``, and the Mohammadi tail index
    (block length ``k1``, ``ci`` interval from ``n_boot`` block resamples) is logged.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | BatchLoss,
        data: Any,
        *,
        batch_size: int,
        every: int = 1000,
        mean_batches: int = 4,
        noise_batches: int = 50,
        per_sample: bool = False,
        projection_dim: int = 64,
        k1: int = 10,
        ci: float = 0.95,
        n_boot: int = 100,
        seed: int = 0,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; allowed: an integer >= 1")
        samples = noise_batches * (batch_size if per_sample else 1)
        if samples < 2 * k1:
            raise ValueError(
                f"Invalid noise_batches: {noise_batches} gives {samples} noise samples; "
                f"allowed: at least 2 * k1 = {2 * k1}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.batch_size = batch_size
        self.every = every
        self.mean_batches = mean_batches
        self.noise_batches = noise_batches
        self.per_sample = per_sample
        self.projection_dim = projection_dim
        self.k1 = k1
        self.ci = ci
        self.n_boot = n_boot
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self._projection: RandomProjection | None = None
        self.steps_seen = 0
        self._window: list[list[Any]] = []

    def step(self, optimizer: Any = None, step: int | None = None) -> dict[str, Any] | None:
        """Call once per training step, after ``optimizer.step()``; returns the new record, if any.

        ``step`` defaults to the number of calls so far (1-based); a record is taken when
        ``step % every == 0``.
        """
        self.steps_seen += 1
        step = self.steps_seen if step is None else int(step)
        group_stats = getattr(optimizer, "group_stats", None)
        if group_stats:  # a fresh list of ClipStats per step: keep it, combine at record time
            self._window.append(list(group_stats))
        else:
            stats = getattr(optimizer, "step_stats", None)
            if stats is not None and all(hasattr(stats, a) for a in ("grad_norm", "clip_factor", "clipped")):
                self._window.append([stats])
        if step % self.every != 0:
            return None
        record = self.record(step)
        self.history.append(record)
        return record

    def _window_stats(self) -> dict[str, Any]:
        if not self._window:
            return {"window_steps": 0}
        # ClipStats.combine for every step at once: group norms add in squares within a step
        count = len(self._window)
        steps = torch.repeat_interleave(torch.arange(count), torch.tensor([len(g) for g in self._window]))
        flat = [s for groups in self._window for s in groups]
        self._window = []
        squares = []
        for key in ("grad_norm", "clipped_norm"):
            norms = torch.stack([getattr(s, key) for s in flat]).detach().to(torch.float64).cpu().reshape(-1)
            squares.append(torch.zeros(count, dtype=torch.float64).index_add_(0, steps, norms * norms))
        combined = ClipStats.of(squares[0].sqrt(), squares[1].sqrt())
        grad_norm = combined.grad_norm.numpy()
        factor = combined.clip_factor.numpy()
        clipped = combined.clipped.numpy()
        out: dict[str, Any] = {"window_steps": int(grad_norm.shape[0])}
        for q, value in zip(GRAD_NORM_QUANTILES, np.quantile(grad_norm, GRAD_NORM_QUANTILES)):
            out[f"grad_norm_q{round(q * 100)}"] = float(value)
        out["grad_norm_max"] = float(grad_norm.max())
        out["clip_fraction"] = float(clipped.mean())
        out["clip_factor_mean"] = float(factor.mean())
        return out

    def record(self, step: int) -> dict[str, Any]:
        """Collect a noise sample now and return the record for ``step`` (not appended to history)."""
        started = time.perf_counter()
        if self._projection is None:  # one fixed projection for the whole run (built once)
            dim = sum(p.numel() for _, p in trainable_parameters(self.model))
            self._projection = RandomProjection(
                dim, self.projection_dim, self.seed, device=model_device(self.model)
            )
        sample = collect_noise(
            self.model,
            self.loss_fn,
            self.data,
            batch_size=self.batch_size,
            mean_batches=self.mean_batches,
            noise_batches=self.noise_batches,
            per_sample=self.per_sample,
            seed=self.seed + step,
            step=step,
            projection=self._projection,
        )
        tail = sample.tail_index("mohammadi", k1=self.k1, ci=self.ci, n_boot=self.n_boot, seed=self.seed)
        return {
            "step": step,
            "alpha": tail.alpha,
            "alpha_low": tail.low,
            "alpha_high": tail.high,
            "n_noise": sample.n,
            "noise_batch_size": sample.batch_size,
            "mean_batches": sample.mean_batches,
            "mean_grad_norm": sample.mean_grad_norm,
            "noise_norm_median": float(np.median(sample.norms)),
            "noise_norm_max": float(np.max(sample.norms)),
            **self._window_stats(),
            "seconds": time.perf_counter() - started,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a resumed training needs to continue the same records: history, calls, open window."""
        window = [
            (torch.stack([s.grad_norm for s in groups]), torch.stack([s.clipped_norm for s in groups]))
            for groups in self._window
        ]
        return {"history": [dict(r) for r in self.history], "steps_seen": self.steps_seen, "window": window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the random projection is rebuilt from ``seed``)."""
        self.history = [dict(r) for r in state["history"]]
        self.steps_seen = int(state["steps_seen"])
        device = model_device(self.model)  # a checkpoint is loaded on the CPU; new stats live here
        self._window = [
            [ClipStats.of(g, c) for g, c in zip(grad_norms.to(device), clipped_norms.to(device))]
            for grad_norms, clipped_norms in state["window"]
        ]

    def to_json(self, path: str | Path | None = None) -> str:
        """The history as strict JSON (NaN as null); also written to ``path`` if given."""
        text = dumps({"every": self.every, "batch_size": self.batch_size, "history": self.history})
        if path is not None:
            Path(path).write_text(text)
        return text
