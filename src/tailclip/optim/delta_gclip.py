"""DeltaGClip: gradient clipping on the step size with a floor delta (delta-regularized GClip).

Tucat, Mukherjee, Sun, Sen, Rivasplata, "Regularized Gradient Clipping Provably Trains Wide
and Deep Neural Networks", TMLR 2025 (Definitions 2 and 5, stochastic delta-GClip). With
step size ``eta`` (``lr``), threshold ``gamma`` and floor ``delta`` in [0, 1]::

    G_t = ||g_t||                                   (the model-wide norm of the raw gradient)
    h_t = eta * min(1, max(delta, gamma / G_t))     (h_t = 0 when G_t = 0: no step)
    x_{t+1} = x_t - h_t (g_t + wd x_t)

``G_t`` is taken before weight decay and the step follows ``g_t + wd x_t``, as the authors'
repository does. ``delta = 0`` is plain GClip on the step size,
``x_{t+1} = x_t - eta min(1, gamma / ||g_t||) g_t`` (Zhang et al., NeurIPS 2020); ``delta = 1``
or ``gamma >= G_t`` is plain SGD. The floor keeps the step length at least
``eta delta G_t`` however large the gradient, which is what the convergence proof needs.

No host synchronisation and no data-dependent branch: ``gamma / 0 = inf`` clamps to 1 and the
step is multiplied by the tensor ``(G_t > 0)``, so a zero gradient leaves ``x`` unchanged even
with weight decay.
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
    unsupported,
)
from tailclip.optim._kernels import coupled_decay, signed
from tailclip.optim._registry import VectorizedRule, register_optimizer


def delta_gclip(
    params: list[Tensor],
    grads: list[Tensor],
    *,
    lr: float,
    gamma: float,
    delta: float,
    weight_decay: float,
    foreach: bool,
    norms: Tensor | None = None,
    maximize: bool = False,
    total_norm: Tensor | None = None,
) -> ClipStats:
    """Functional DeltaGClip; updates ``params`` in place, ``grads`` are left untouched.

    ``norms`` are the per-tensor norms of the raw ``grads`` if already known (from
    :func:`~tailclip.clip.tensor_norms`); they give ``G_t`` without a second read.
    ``total_norm`` is ``G_t`` when these tensors are a part of the model (``None``: their norm).

    Returns statistics with ``grad_norm = G_t`` and
    ``clipped_norm = min(1, max(delta, gamma / G_t)) G_t = (h_t / eta) G_t``: the norm of the
    gradient part of the applied step divided by ``eta`` (the whole step when ``wd = 0``;
    0 when ``G_t = 0``).
    """
    grads = signed(grads, maximize, foreach)
    if norms is None:
        norms = tensor_norms(grads, foreach)
    grad_norm = torch.linalg.vector_norm(norms)
    model_norm = grad_norm if total_norm is None else total_norm
    factor = torch.clamp(gamma / model_norm, min=delta, max=1.0) * (model_norm > 0)
    step_size = lr * factor
    directions = coupled_decay(grads, params, weight_decay, foreach) if weight_decay != 0 else grads
    sizes = [step_size.to(p.device, p.dtype) for p in params]
    if foreach:
        torch._foreach_sub_(params, torch._foreach_mul(directions, sizes))
    else:
        for p, d, h in zip(params, directions, sizes, strict=True):
            p.sub_(d * h)
    return ClipStats.of(grad_norm, factor * grad_norm)


class DeltaGClip(ClipOptimizer):
    """delta-regularized GClip: ``x -= eta min(1, max(delta, gamma / ||g||)) (g + wd x)``.

    Args:
        params: parameters or param groups.
        lr: step size ``eta`` (>= 0).
        gamma: clipping threshold on the model-wide gradient norm (> 0).
        delta: floor of the clipping factor, in [0, 1]; 0 gives plain GClip.
        weight_decay: coupled L2 factor; the step follows ``g + wd x`` while ``||g||`` is
            taken from the raw gradient.
        maximize: ascend: ``-g`` takes the gradient's place.
        fused: no fused kernel: ``True`` is rejected (accepted for torch.optim signatures).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    After a step, ``group_stats`` hold ``grad_norm = ||g||`` and
    ``clipped_norm = min(1, max(delta, gamma / ||g||)) ||g||``, so ``clip_factor`` is the
    step-size factor ``h / eta``.

    References: Tucat, Mukherjee, Sun, Sen, Rivasplata, "Regularized Gradient Clipping
    Provably Trains Wide and Deep Neural Networks", TMLR 2025.
    """

    FORMAT_1_OPTIONS = {"maximize": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        gamma: float = 0.1,
        delta: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        if fused:
            unsupported("fused", fused, f"{type(self).__name__} has no fused kernel; allowed: False or None")
        defaults = dict(lr=lr, gamma=gamma, delta=delta, weight_decay=weight_decay)
        super().__init__(params, {**defaults, "maximize": maximize}, foreach=foreach is not False,
                         nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_flag("maximize", group["maximize"])
        check_positive("gamma", group["gamma"])
        if not 0.0 <= group["delta"] <= 1.0:
            raise ValueError(f"Invalid delta: {group['delta']}; allowed: 0 <= delta <= 1")
        check_nonnegative("weight_decay", group["weight_decay"])

    def _model_wide(self, group: dict[str, Any]) -> bool:
        return True

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        return delta_gclip(
            params, grads,
            lr=group["lr"], gamma=group["gamma"], delta=group["delta"],
            weight_decay=group["weight_decay"], foreach=group["foreach"], norms=norms,
            maximize=group["maximize"],
            total_norm=model_norm,
        )


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """No state."""
    return {}, {}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    def core(x: Tensor, g: Tensor) -> ClipStats:
        return delta_gclip(
            [x], [g],
            lr=lr, gamma=threshold, delta=hp["delta"], weight_decay=hp["weight_decay"],
            foreach=False, maximize=hp["maximize"],
        )

    return core


# the threshold of a step is gamma, on the group norm: global clipping of the step size
register_optimizer(
    "delta_gclip",
    DeltaGClip,
    VectorizedRule(_init_runs, _run_core, threshold_key="gamma", clip_mode="global"),
)
