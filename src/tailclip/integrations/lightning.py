"""Lightning: a callback that logs a tailclip optimizer's metrics with ``self.log``.

::

    trainer = lightning.Trainer(callbacks=[TailclipCallback()], gradient_clip_val=None)

:class:`TailclipCallback` logs, after every optimizer step, ``tailclip/grad_norm`` (model-wide,
before clipping), ``tailclip/clipped_norm``, ``tailclip/clip_factor`` (and
``tailclip/noise_norm`` for AGNI) through ``LightningModule.log``, so every logger of the
Trainer receives them, and, given a :class:`~tailclip.noise.TailMonitor`, its records as
``tailclip/noise/<key>``. It finds the tailclip optimizer under Lightning's
``LightningOptimizer``. For ``NoiseInjection(variance="microbatch")`` it records every
micro-batch gradient (:meth:`~tailclip.optim.NoiseInjection.accumulate`) in
``on_after_backward``, before Lightning clips or unscales. It warns once when
``gradient_clip_val`` is set and the optimizer clips: Lightning would clip first, and the
optimizer's statistics would be those of the clipped gradient.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl

from tailclip.integrations._common import (
    clips,
    find_tailclip_optimizer,
    monitor_metrics,
    monitored_optimizer,
    step_metrics,
    warn_double_clipping,
)
from tailclip.noise import TailMonitor
from tailclip.optim import NoiseInjection


class TailclipCallback(pl.Callback):
    """Log a tailclip optimizer's metrics through ``self.log``; record AGNI's micro-batches.

    Args:
        monitor: a :class:`~tailclip.noise.TailMonitor` stepped after every optimizer step.
    """

    def __init__(self, monitor: TailMonitor | None = None) -> None:
        self.monitor = monitor
        self.optimizer: Any = None
        self._last_step = -1
        self._warned = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = [find_tailclip_optimizer(opt) for opt in trainer.optimizers]
        self.optimizer = next((opt for opt in found if opt is not None), None)
        if self.optimizer is None:
            warnings.warn(
                "TailclipCallback: no tailclip optimizer among the Trainer's optimizers; nothing is logged",
                UserWarning,
                stacklevel=2,
            )
            return
        self._last_step = trainer.global_step
        clip_val = trainer.gradient_clip_val
        if clip_val and clip_val > 0 and clips(self.optimizer) and not self._warned:
            warn_double_clipping("gradient_clip_val", clip_val)
            self._warned = True

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(self.optimizer, NoiseInjection):
            self.optimizer.accumulate()  # a no-op for variance="ema"

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.optimizer is None or trainer.global_step == self._last_step:
            return  # no optimizer step in this batch (gradient accumulation)
        self._last_step = trainer.global_step
        for name, value in step_metrics(self.optimizer).items():
            pl_module.log(name, value, on_step=True, on_epoch=False)
        if self.monitor is not None:
            record = self.monitor.step(monitored_optimizer(self.optimizer), trainer.global_step)
            for name, value in monitor_metrics(record).items():
                pl_module.log(name, value, on_step=True, on_epoch=False)
