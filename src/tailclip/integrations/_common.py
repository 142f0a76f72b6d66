"""What both framework callbacks share: finding the tailclip optimizer under a framework's
wrappers, its step metrics (model-wide norms), the double-clipping warning, and recording
AGNI's micro-batch gradients at the end of every backward.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from tailclip.optim import ClipOptimizer, NoiseInjection

# Attributes under which frameworks keep the optimizer they wrap: accelerate's
# AcceleratedOptimizer (``optimizer``), Lightning's LightningOptimizer (``_optimizer``).
WRAPPED_ATTRIBUTES = ("optimizer", "_optimizer")


def find_tailclip_optimizer(optimizer: Any) -> ClipOptimizer | NoiseInjection | None:
    """The tailclip optimizer ``optimizer`` is or wraps (through framework wrappers), else None.

    Wrappers are unwrapped first: Lightning's wrapper is an instance of the wrapped class too,
    with a copy of its attributes taken at wrapping time.
    """
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        wrapped = (getattr(optimizer, a, None) for a in WRAPPED_ATTRIBUTES)
        inner = next((w for w in wrapped if w is not None), None)
        if inner is None:
            return optimizer if isinstance(optimizer, (ClipOptimizer, NoiseInjection)) else None
        optimizer = inner
    return None


def clips(optimizer: ClipOptimizer | NoiseInjection) -> bool:
    """Whether the optimizer bounds the gradient itself (every tailclip rule but ``clip=None``)."""
    if isinstance(optimizer, NoiseInjection):
        optimizer = optimizer.base_optimizer
        if not isinstance(optimizer, ClipOptimizer):
            return False
    return any(group.get("clip", "always") is not None for group in optimizer.param_groups)


def warn_double_clipping(option: str, value: float) -> None:
    warnings.warn(
        f"{option}={value} clips the gradient before the tailclip optimizer, which clips it again: the "
        f"tailclip/grad_norm it reports is the already-clipped norm. Set {option} to "
        f"{0 if option == 'max_grad_norm' else None} and let the optimizer clip.",
        UserWarning,
        stacklevel=3,
    )


def step_metrics(optimizer: ClipOptimizer | NoiseInjection) -> dict[str, Tensor]:
    """The last step's metrics, 0-dim tensors (no host read until logged).

    ``tailclip/grad_norm``: the model-wide gradient norm before clipping (before AGNI's noise
    for :class:`NoiseInjection`); ``tailclip/clipped_norm`` and ``tailclip/clip_factor``: the
    model-wide norm after clipping and their ratio (for AGNI, the base optimizer's clipping of
    the noised gradient; absent when the base does not clip); ``tailclip/noise_norm``: the norm
    of AGNI's noise.
    """
    metrics: dict[str, Tensor] = {}
    if isinstance(optimizer, NoiseInjection):
        metrics["tailclip/grad_norm"] = optimizer.last_grad_norm
        metrics["tailclip/noise_norm"] = optimizer.last_noise_norm
        base = optimizer.base_optimizer
        if isinstance(base, ClipOptimizer) and base.group_stats:
            stats = base.step_stats
            metrics["tailclip/clipped_norm"] = stats.clipped_norm
            metrics["tailclip/clip_factor"] = stats.clip_factor
        return metrics
    if optimizer.group_stats:
        stats = optimizer.step_stats  # groups combined in squares: the model-wide norms
        metrics["tailclip/grad_norm"] = stats.grad_norm
        metrics["tailclip/clipped_norm"] = stats.clipped_norm
        metrics["tailclip/clip_factor"] = stats.clip_factor
    return metrics


def monitor_metrics(record: dict[str, Any] | None) -> dict[str, float]:
    """A :class:`~tailclip.noise.TailMonitor` record as ``tailclip/noise/<key>`` numbers."""
    if not record:
        return {}
    return {
        f"tailclip/noise/{key}": float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def monitored_optimizer(optimizer: ClipOptimizer | NoiseInjection) -> Any:
    """The optimizer whose clipping statistics a TailMonitor reads (AGNI's base)."""
    return optimizer.base_optimizer if isinstance(optimizer, NoiseInjection) else optimizer


class MicrobatchRecorder:
    """Call ``optimizer.accumulate()`` once at the end of every backward that reaches its parameters.

    A post-accumulate-grad hook on each parameter queues one callback on the autograd engine,
    which runs when the whole backward is done: the micro-batch gradient is recorded before
    anything (a framework's clipping, ``GradScaler.unscale_``) touches it, whatever loop runs
    the backward.
    """

    def __init__(self, optimizer: NoiseInjection) -> None:
        self.optimizer = optimizer
        self._queued = False
        self._handles = [
            p.register_post_accumulate_grad_hook(self._on_grad)
            for group in optimizer.param_groups
            for p in group["params"]
            if p.requires_grad
        ]

    def _on_grad(self, _: Tensor) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._record)

    def _record(self) -> None:
        self._queued = False
        self.optimizer.accumulate()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
