"""NSGD: normalized SGD with momentum (Cutkosky and Mehta, ICML 2020).

With coupled weight decay and ``m_0 = 0``::

    g_t <- g_t + wd x_t
    m_t = beta m_{t-1} + (1 - beta) g_t
    x_{t+1} = x_t - lr m_t / (||m_t|| + eps)

where ``||m_t||`` is the model-wide norm of the momentum, over every parameter of every param
group (computed once per step; the update of each group divides its own ``m_t`` by it).
Every step has length ``lr ||m_t|| / (||m_t|| + eps)``, about ``lr``, whatever the size
of the gradient: like clipping, normalization makes the step insensitive to heavy-tailed
gradient spikes. ``momentum=0`` is normalized gradient descent,
``x_{t+1} = x_t - lr g_t / (||g_t|| + eps)`` (Zhang, He, Sra, Jadbabaie, ICLR 2020).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from tailclip.clip import ClipStats, tensor_norms
from tailclip.optim._base import (
    ClipOptimizer,
    check_flag,
    check_lr,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    unsupported,
)
from tailclip.optim._kernels import add_scaled_, coupled_decay, signed
from tailclip.optim._registry import VectorizedRule, register_optimizer


def nsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    momentum: float,
    eps: float,
    weight_decay: float,
    foreach: bool,
    norms: Tensor | None = None,
    maximize: bool = False,
    total_norm: Tensor | None = None,
) -> ClipStats:
    """Functional NSGD; updates ``params`` and ``momentum_buffers`` (``m_{t-1}``) in place.

    ``momentum_buffers`` must be allocated (zeros before the first step: ``m_0 = 0``).
    ``norms`` are the per-tensor norms of ``grads`` if already known (used only without weight
    decay). ``total_norm`` is the model-wide ``||m_t||`` when these tensors are a part of the
    model (``None``: the norm of ``momentum_buffers`` after the update). Returns
    ``ClipStats.of(||g_t||, ||d_t||)``: the norm of these tensors' gradient
    (weight decay included) and of the applied direction ``d_t = m_t / (||m_t|| + eps)``, so
    ``clip_factor = ||d_t|| / ||g_t||`` is the scale of the step relative to the gradient.
    """
    grads = signed(grads, maximize, foreach)
    if weight_decay != 0:
        grads = coupled_decay(grads, params, weight_decay, foreach)
        norms = None
    if norms is None:
        norms = tensor_norms(grads, foreach)
    grad_norm = torch.linalg.vector_norm(norms)
    if foreach:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_add_(momentum_buffers, grads, alpha=1 - momentum)
    else:
        for buf, g in zip(momentum_buffers, grads, strict=True):
            buf.mul_(momentum).add_(g, alpha=1 - momentum)
    momentum_norm = torch.linalg.vector_norm(tensor_norms(momentum_buffers, foreach))
    denominator = (momentum_norm if total_norm is None else total_norm) + eps
    minus_step = -lr / denominator
    add_scaled_(params, momentum_buffers, minus_step, foreach)
    return ClipStats.of(grad_norm, momentum_norm / denominator)


class NSGD(ClipOptimizer):
    """Normalized SGD with momentum: ``x -= lr m_t / (||m_t|| + eps)``.

    Args:
        params: parameters or param groups.
        lr: step size (>= 0); every step has length ``lr ||m_t|| / (||m_t|| + eps)``.
        momentum: ``beta`` in [0, 1) of ``m_t = beta m_{t-1} + (1 - beta) g_t``; 0 gives
            normalized gradient descent.
        eps: added to the model-wide norm ``||m_t||`` (> 0: a zero momentum gives a zero step).
        weight_decay: coupled L2 factor, ``g_t + wd x_t`` (as ``torch.optim.SGD``).
        maximize: ascend: ``-g_t`` takes the gradient's place.
        fused: no fused kernel: ``True`` is rejected (accepted for torch.optim signatures).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    State: ``"momentum_buffer"`` (``m_t``) per parameter. Statistics: ``grad_norm`` is the
    group norm of ``g_t`` (weight decay included), ``clipped_norm`` the norm of the applied
    direction ``m_t / (||m_t|| + eps)`` (the step is ``lr`` times it), so ``clip_factor`` is
    their ratio and ``clipped`` says the direction is shorter than the gradient.

    References: Cutkosky, Mehta, "Momentum Improves Normalized SGD", ICML 2020; Zhang, He,
    Sra, Jadbabaie, "Why gradient clipping accelerates training: a theoretical justification
    for adaptivity", ICLR 2020 (normalized GD).
    """

    FORMAT_1_OPTIONS = {"maximize": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        if fused:
            unsupported("fused", fused, f"{type(self).__name__} has no fused kernel; allowed: False or None")
        defaults = dict(lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay)
        super().__init__(params, {**defaults, "maximize": maximize}, foreach=foreach is not False,
                         nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_flag("maximize", group["maximize"])
        check_unit_interval("momentum", group["momentum"])
        check_positive("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])

    def _model_wide(self, group: dict[str, Any]) -> bool:
        return True

    def _model_norms(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], norms: Tensor
    ) -> Tensor:
        """Norms of ``m_t = beta m_{t-1} + (1 - beta)(s g_t + wd x_t)``, the buffers left as they are."""
        grads = signed(grads, group["maximize"], group["foreach"])
        if group["weight_decay"] != 0:
            grads = coupled_decay(grads, params, group["weight_decay"], group["foreach"])
        momentum = group["momentum"]
        buffers = [self.state[p].get("momentum_buffer") for p in params]
        moments = [
            g * (1 - momentum) if b is None else torch.add(b * momentum, g, alpha=1 - momentum)
            for g, b in zip(grads, buffers)
        ]
        return tensor_norms(moments, group["foreach"])

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buffers.append(state["momentum_buffer"])
        return nsgd(
            params, grads, buffers,
            lr=group["lr"], momentum=group["momentum"], eps=group["eps"],
            weight_decay=group["weight_decay"], foreach=group["foreach"], norms=norms,
            maximize=group["maximize"],
            total_norm=model_norm,
        )


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-run momentum buffer, ``m_0 = 0``."""
    return {"momentum_buffer": torch.zeros_like(x)}, {}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    def core(x: Tensor, g: Tensor, buffer: Tensor) -> ClipStats:
        return nsgd(
            [x], [g], [buffer],
            lr=lr, momentum=hp["momentum"], eps=hp["eps"], weight_decay=hp["weight_decay"],
            foreach=False, maximize=hp["maximize"],
        )

    return core


register_optimizer("nsgd", NSGD, VectorizedRule(_init_runs, _run_core))
