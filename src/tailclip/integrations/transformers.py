"""Hugging Face ``Trainer``: a callback that logs tailclip's metrics, and a tailclip optimizer
built with Trainer's decay / no-decay parameter groups.

::

    opt = make_optimizer(model, args, "clip_adam", clip="global", max_norm=1.0)
    args.max_grad_norm = 0.0                      # the optimizer clips; Trainer must not
    trainer = Trainer(model, args, train_dataset=data, optimizers=(opt, None))
    attach(trainer)                               # metrics reach every report_to logger
    trainer.train()

:class:`TailclipTrainerCallback` logs, at Trainer's logging steps and through ``Trainer.log``
(so TensorBoard, W&B or whatever ``report_to`` names receive them), the last step's
``tailclip/grad_norm`` (model-wide, before clipping), ``tailclip/clipped_norm``,
``tailclip/clip_factor`` (and ``tailclip/noise_norm`` for AGNI), and, given a
:class:`~tailclip.noise.TailMonitor`, its records as ``tailclip/noise/<key>``. It finds the
tailclip optimizer under accelerate's ``AcceleratedOptimizer``. For
``NoiseInjection(variance="microbatch")`` it records every micro-batch gradient
(:meth:`~tailclip.optim.NoiseInjection.accumulate`) at the end of each backward, before
Trainer clips or unscales. It warns once when ``max_grad_norm > 0`` and the optimizer clips:
Trainer would clip first, and the optimizer's statistics would be those of the clipped
gradient.

Trainer calls callbacks in order, its ``report_to`` loggers before the callbacks given to its
constructor; :func:`attach` puts the callback first so the loggers see its metrics (given in
``Trainer(callbacks=[...])`` instead, the metrics reach ``trainer.state.log_history`` and the
callbacks after it only).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
import transformers
from torch import Tensor, nn

from tailclip.integrations._common import (
    MicrobatchRecorder,
    clips,
    find_tailclip_optimizer,
    monitor_metrics,
    monitored_optimizer,
    step_metrics,
    warn_double_clipping,
)
from tailclip.noise import TailMonitor
from tailclip.optim import OPTIMIZERS, NoiseInjection


class TailclipTrainerCallback(transformers.TrainerCallback):
    """Log a tailclip optimizer's metrics through ``Trainer.log``; record AGNI's micro-batches.

    Args:
        monitor: a :class:`~tailclip.noise.TailMonitor` stepped after every optimizer step (its
            records are logged as ``tailclip/noise/<key>`` at the next logging step).
    """

    def __init__(self, monitor: TailMonitor | None = None) -> None:
        self.monitor = monitor
        self.optimizer: Any = None
        self._recorder: MicrobatchRecorder | None = None
        self._metrics: dict[str, Tensor] = {}
        self._noise: dict[str, float] = {}
        self._warned = False

    def on_train_begin(
        self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any
    ) -> None:
        self.optimizer = find_tailclip_optimizer(optimizer)
        if self.optimizer is None:
            warnings.warn(
                f"TailclipTrainerCallback: Trainer's optimizer ({type(optimizer).__name__}) is not a "
                "tailclip optimizer; nothing is logged. Pass Trainer(optimizers=(tailclip optimizer, None)).",
                UserWarning,
                stacklevel=2,
            )
            return
        if args.max_grad_norm and args.max_grad_norm > 0 and clips(self.optimizer) and not self._warned:
            warn_double_clipping("max_grad_norm", args.max_grad_norm)
            self._warned = True
        if isinstance(self.optimizer, NoiseInjection) and self.optimizer.variance == "microbatch":
            self._recorder = MicrobatchRecorder(self.optimizer)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.optimizer is not None:
            self._metrics = step_metrics(self.optimizer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if isinstance(self.optimizer, NoiseInjection) and self.optimizer.microbatches:
            # a step was skipped (GradScaler overflow, non-finite gradient) and Trainer zeroes the
            # gradients through the model: discard the step's records as optimizer.zero_grad does
            self.optimizer.zero_grad()
        if self.monitor is not None and self.optimizer is not None:
            record = self.monitor.step(monitored_optimizer(self.optimizer), state.global_step)
            self._noise.update(monitor_metrics(record))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs is None or "loss" not in logs or not (self._metrics or self._noise):
            return  # evaluation and end-of-training logs
        new = {key: float(value) for key, value in self._metrics.items()} | self._noise
        self._noise = {}
        logs.update(new)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(new)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None


def attach(trainer: transformers.Trainer, monitor: TailMonitor | None = None) -> TailclipTrainerCallback:
    """Add a :class:`TailclipTrainerCallback` to ``trainer`` ahead of its ``report_to`` loggers."""
    callback = TailclipTrainerCallback(monitor)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


def decay_parameter_names(model: nn.Module) -> list[str]:
    """The parameters Trainer applies weight decay to (transformers' own rule: not biases, not
    LayerNorm/RMSNorm weights)."""
    rule = getattr(transformers.Trainer, "get_decay_parameter_names", None)
    if rule is not None:
        return list(rule(None, model))
    from transformers.trainer_pt_utils import get_parameter_names

    return [name for name in get_parameter_names(model, [nn.LayerNorm]) if "bias" not in name]


def make_optimizer(
    model: nn.Module,
    args: transformers.TrainingArguments,
    optimizer: str | type[torch.optim.Optimizer] = "clip_adam",
    *,
    agni: dict[str, Any] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """A tailclip optimizer over Trainer's two groups, for ``Trainer(optimizers=(opt, None))``.

    ``optimizer`` is a name of :data:`tailclip.optim.OPTIMIZERS` or an optimizer class (e.g.
    ``torch.optim.AdamW``, the base AGNI was published with); ``kwargs`` go to it, with ``lr``
    from ``args.learning_rate`` and, where the class takes them and ``kwargs`` does not,
    ``betas`` and ``eps`` from ``args.adam_beta1/2`` and ``args.adam_epsilon``. Group one holds
    :func:`decay_parameter_names` with ``args.weight_decay``, group two the rest with no decay.
    ``agni``, if given, are :class:`~tailclip.optim.NoiseInjection` keyword arguments: the
    optimizer is wrapped in AGNI (``optimizer_cls_and_kwargs`` cannot wrap one in another).
    Trainer builds its learning-rate schedule on the returned optimizer.
    """
    cls = OPTIMIZERS[optimizer] if isinstance(optimizer, str) and optimizer in OPTIMIZERS else optimizer
    if not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer) or cls is NoiseInjection:
        allowed = ", ".join(sorted(set(OPTIMIZERS) - {"noise_injection"}))
        raise ValueError(
            f"Invalid optimizer: {optimizer!r}; allowed: {allowed} or a torch.optim.Optimizer class "
            "(AGNI: pass agni={...})"
        )
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {
        "lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon
    }
    kwargs = {**{k: v for k, v in defaults.items() if k in accepted}, **kwargs}
    decay = set(decay_parameter_names(model))
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in trainable if name in decay], "weight_decay": args.weight_decay},
        {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0},
    ]
    opt = cls([group for group in groups if group["params"]], **kwargs)
    return NoiseInjection(opt, **agni) if agni is not None else opt
