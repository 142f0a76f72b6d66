"""ClipSGD: clipped SGD with heavy-ball momentum (GClip, layer-wise clipping, CClip).

With ``clip_target="gradient"`` (Zhang et al., NeurIPS 2020, Algorithm GClip/CClip), the
clipped gradient takes the gradient's place in ``torch.optim.SGD``'s update (``s = -1`` with
``maximize``, else ``s = 1``; dampening ``d``)::

    u_t = clip(s g_t + wd x_t)
    m_t = beta m_{t-1} + (1 - d) u_t    (m_1 = u_1)
    p_t = u_t + beta m_t                (nesterov=True)
    p_t = m_t                           (nesterov=False; p_t = u_t when beta = 0)
    x_{t+1} = x_t - lr p_t

With ``clip_target="momentum"`` the momentum is accumulated unclipped and the step direction is
clipped: ``m_t = beta m_{t-1} + (1 - d)(s g_t + wd x_t)``, ``x_{t+1} = x_t - lr clip(p_t)``
(``p_t`` as above, from the unclipped gradient).
Without clipping it is exactly ``torch.optim.SGD`` with the same options (same operations,
same bits, on the loop, foreach and fused paths).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.sgd import sgd as torch_sgd

from tailclip.clip import (
    NORM_MODES,
    ClipMode,
    ClipStats,
    ThresholdPolicy,
    clip_coefficients,
    clip_tensors_unchecked,
    clip_threshold,
    tensor_norms,
)
from tailclip.optim._base import (
    ClipOptimizer,
    check_clipping,
    check_flag,
    check_lr,
    check_nonnegative,
    check_unit_interval,
    unsupported,
)
from tailclip.optim._kernels import clipped_for_torch, coupled_decay, cpu_blocks, per_tensor, signed
from tailclip.optim._registry import VectorizedRule, register_optimizer

CLIP_TARGETS = ("gradient", "momentum")


def clip_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    clip_target: str,
    weight_decay: float,
    foreach: bool,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    fused: bool = False,
    norms: Tensor | None = None,
    total_norm: Tensor | None = None,
) -> ClipStats:
    """Functional ClipSGD; updates ``params`` and fills/updates ``momentum_buffers`` in place.

    ``norms`` are the per-tensor norms of ``grads`` if already known (used only when they
    equal the norms of the clipped quantity: no weight decay, gradient target). An adaptive
    ``max_norm`` policy is fed the pre-clip norm of the quantity it clips (``s g_t + wd x_t``,
    or ``p_t`` with ``clip_target="momentum"``). ``fused=True`` (gradient target) hands the
    clipped gradient to ``torch._fused_sgd_`` (with ``clip=None``, the raw gradient with torch's
    ``maximize`` and ``weight_decay``). ``total_norm``: the model-wide
    norm of that quantity, of which these tensors are a part, for global clipping (``None``: their
    own).
    """
    if fused:
        return _fused_clip_sgd(
            params, grads, momentum_buffers, lr=lr, momentum=momentum, clip=clip, max_norm=max_norm,
            weight_decay=weight_decay, dampening=dampening, nesterov=nesterov, maximize=maximize,
            norms=norms, total_norm=total_norm,
        )
    grads = signed(grads, maximize, foreach)
    if weight_decay != 0:
        grads = coupled_decay(grads, params, weight_decay, foreach)
        norms = None
    blocked = clip_target == "gradient" and (momentum == 0 or all(b is not None for b in momentum_buffers))
    if foreach and blocked and not isinstance(max_norm, Tensor):
        return _multi_tensor_clip_sgd(
            params, grads, momentum_buffers, lr=lr, momentum=momentum, clip=clip, max_norm=max_norm,
            dampening=dampening, nesterov=nesterov, norms=norms, total_norm=total_norm,
        )
    if clip_target == "gradient":
        grads, stats = clip_tensors_unchecked(grads, clip, max_norm, foreach, norms, total_norm)
    if momentum != 0:
        grads = _heavy_ball(grads, momentum_buffers, momentum, dampening, nesterov, foreach)
    if clip_target == "momentum":
        grads, stats = clip_tensors_unchecked(grads, clip, max_norm, foreach, total_norm=total_norm)
    if foreach:
        torch._foreach_add_(params, grads, alpha=-lr)
    else:
        for p, d in zip(params, grads):
            p.add_(d, alpha=-lr)
    return stats


def _multi_tensor_clip_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    clip: ClipMode,
    max_norm: float | ThresholdPolicy,
    dampening: float,
    nesterov: bool,
    norms: Tensor | None,
    total_norm: Tensor | None,
) -> ClipStats:
    """Foreach path for ``clip_target="gradient"`` once the momentum buffers exist.

    The op sequence of the loop path (and of ``torch.optim.SGD``'s ``_multi_tensor_sgd``
    without clipping), run block by block (:func:`cpu_blocks`): each block's ``u`` is formed
    just before its use (``c_k g_k`` for global and layer clipping, ``clamp(g, -tau, tau)`` for
    coordinate clipping), so no clipped copy of every gradient is written out.
    """
    if norms is None:
        norms = tensor_norms(grads, True)
    scales = None
    if clip in NORM_MODES:
        coefs, stats = clip_coefficients(norms, clip, max_norm, total_norm)
        scales = per_tensor(coefs, grads)
    else:
        grad_norm = torch.linalg.vector_norm(norms)
        max_norm = clip_threshold(max_norm, grad_norm)
        stats = ClipStats.of(grad_norm, grad_norm)
    lists = [params, grads] + ([momentum_buffers] if momentum != 0 else [])
    clipped_norms: list[Tensor] = []
    for index, pieces in cpu_blocks(lists):  # type: ignore[arg-type]
        p, u = pieces[0], pieces[1]
        if scales is not None:
            u = torch._foreach_mul(u, [scales[k] for k in index])
        elif clip == "coord":
            u = [torch.clamp(piece, -max_norm, max_norm) for piece in u]  # one op, not min then max
            clipped_norms += tensor_norms(u, True).to(norms.device).unbind()
        if momentum != 0:
            u = _heavy_ball(u, pieces[2], momentum, dampening, nesterov, True)  # type: ignore[arg-type]
        torch._foreach_add_(p, u, alpha=-lr)
    if clip == "coord":
        clipped_norm = torch.linalg.vector_norm(torch.stack(clipped_norms))
        stats = ClipStats.of(stats.grad_norm, clipped_norm)
    return stats


def _heavy_ball(
    grads: list[Tensor],
    buffers: list[Tensor | None],
    momentum: float,
    dampening: float,
    nesterov: bool,
    foreach: bool,
) -> list[Tensor]:
    """``m_t = beta m_{t-1} + (1 - d) u_t`` with ``m_1 = u_1`` (fills ``buffers`` in place);
    returns the step direction ``p_t``: ``u_t + beta m_t`` (nesterov) or ``m_t``."""
    if foreach and all(b is not None for b in buffers):
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads, alpha=1 - dampening)
    else:
        for i, g in enumerate(grads):
            if buffers[i] is None:
                buffers[i] = g.detach().clone()
            else:
                buffers[i].mul_(momentum).add_(g, alpha=1 - dampening)
    if not nesterov:
        return buffers  # type: ignore[return-value]
    if foreach:
        return list(torch._foreach_add(grads, buffers, alpha=momentum))  # type: ignore[arg-type]
    return [g.add(b, alpha=momentum) for g, b in zip(grads, buffers)]  # type: ignore[arg-type]


def _fused_clip_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    weight_decay: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    norms: Tensor | None,
    total_norm: Tensor | None,
) -> ClipStats:
    """``torch._fused_sgd_`` (through ``torch.optim.sgd.sgd``) on ``u_t``; gradient target only."""
    updates, stats, fused_decay, fused_maximize = clipped_for_torch(
        params, grads, clip=clip, max_norm=max_norm, weight_decay=weight_decay, maximize=maximize,
        norms=norms, total_norm=total_norm,
    )
    # torch's kernel starts buffers (m_1 = u_1) only when all of a call's are new: one call for
    # the tensors whose buffer exists, one for those whose buffer starts now
    new = [i for i, b in enumerate(momentum_buffers) if b is None]
    for index in ([i for i, b in enumerate(momentum_buffers) if b is not None], new):
        if not index:
            continue
        buffers = [momentum_buffers[i] for i in index]
        torch_sgd(
            [params[i] for i in index], [updates[i] for i in index], buffers, fused=True,
            weight_decay=fused_decay, momentum=momentum, lr=lr, dampening=dampening,
            nesterov=nesterov, maximize=fused_maximize,
        )
        for i, buf in zip(index, buffers):
            momentum_buffers[i] = buf
    return stats


class ClipSGD(ClipOptimizer):
    """SGD with momentum and gradient clipping (GClip, layer clipping, CClip); ``torch.optim.SGD``
    when ``clip=None``.

    Args:
        params: parameters or param groups.
        lr: step size (>= 0; a number or a one-element tensor), default ``1e-3`` as ``SGD``.
        momentum: heavy-ball factor ``beta`` in [0, 1).
        clip: ``"global"`` (model-wide norm), ``"group"`` (the group's norm), ``"layer"`` (each
            tensor), ``"coord"`` (elementwise clamp) or ``None``.
        max_norm: threshold ``tau > 0``, or an adaptive :class:`~tailclip.clip.ThresholdPolicy`
            (``clip="global"`` or ``"group"``).
        clip_target: ``"gradient"`` clips ``u_t`` before the momentum, ``"momentum"`` clips
            the step direction ``p_t``.
        weight_decay: coupled L2 factor, ``g_t + wd x_t`` (as ``torch.optim.SGD``).
        dampening: ``d`` in [0, 1], the momentum takes ``(1 - d) u_t`` (as ``SGD``).
        nesterov: step along ``u_t + beta m_t`` (needs ``momentum > 0`` and ``dampening = 0``).
        maximize: ascend, ``s = -1`` (the clipped quantity is ``-g_t + wd x_t``).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        fused: ``torch._fused_sgd_`` on ``u_t`` (``clip_target="gradient"``; takes precedence
            over ``foreach``).
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    References: Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra, "Why are Adaptive Methods
    Good for Attention Models?", NeurIPS 2020.
    """

    FORMAT_1_OPTIONS = {"dampening": 0.0, "nesterov": False, "maximize": False, "fused": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        clip: ClipMode = "global",
        max_norm: float | ThresholdPolicy = 1.0,
        clip_target: str = "gradient",
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, clip=clip, max_norm=max_norm,
            clip_target=clip_target, weight_decay=weight_decay, dampening=dampening,
            nesterov=nesterov, maximize=maximize, fused=bool(fused),
        )
        super().__init__(params, defaults, foreach=foreach is not False, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_unit_interval("momentum", group["momentum"])
        check_clipping(group["clip"], group["max_norm"])
        if group["clip_target"] not in CLIP_TARGETS:
            raise ValueError(
                f"Invalid clip_target: {group['clip_target']!r}; allowed: 'gradient' or 'momentum'"
            )
        check_nonnegative("weight_decay", group["weight_decay"])
        if not 0.0 <= group["dampening"] <= 1.0:
            raise ValueError(f"Invalid dampening: {group['dampening']}; allowed: 0 <= dampening <= 1")
        for flag in ("nesterov", "maximize", "fused"):
            check_flag(flag, group[flag])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            unsupported("nesterov", True, "allowed only with momentum > 0 and dampening = 0")
        if group["fused"] and group["clip_target"] != "gradient":
            unsupported("fused", True, "allowed only with clip_target='gradient'")

    def _model_norms(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], norms: Tensor
    ) -> Tensor:
        """Norms of the clipped quantity: ``u_t = s g_t + wd x_t``, or (``clip_target="momentum"``)
        the step direction ``p_t`` that this step's heavy-ball update will give, buffers untouched."""
        foreach = group["foreach"]
        beta = group["momentum"]
        on_momentum = group["clip_target"] == "momentum" and beta != 0
        if group["weight_decay"] == 0 and not on_momentum:
            return norms  # ||-g|| = ||g||
        grads = signed(grads, group["maximize"], foreach)
        if group["weight_decay"] != 0:
            grads = coupled_decay(grads, params, group["weight_decay"], foreach)
        if on_momentum:
            damped = 1 - group["dampening"]
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            momenta = [u if b is None else b * beta + u * damped for u, b in zip(grads, buffers)]
            grads = [u + m * beta for u, m in zip(grads, momenta)] if group["nesterov"] else momenta
        return tensor_norms(grads, foreach)

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        buffers = [self.state[p].get("momentum_buffer") for p in params]
        stats = clip_sgd(
            params, grads, buffers,
            lr=group["lr"], momentum=group["momentum"], clip=group["clip"],
            max_norm=self._threshold(group), clip_target=group["clip_target"],
            weight_decay=group["weight_decay"], foreach=group["foreach"],
            dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
            fused=group["fused"], norms=norms, total_norm=model_norm,
        )
        if group["momentum"] != 0:
            for p, buf in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buf
        return stats


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-run momentum buffer (zeros give ClipSGD's ``m_1 = u_1``), if ``momentum > 0``."""
    return ({"momentum_buffer": torch.zeros_like(x)} if hp["momentum"] != 0 else {}), {}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    def core(x: Tensor, g: Tensor, *buffers: Tensor) -> ClipStats:
        return clip_sgd(
            [x], [g], [buffers[0] if buffers else None],
            lr=lr, momentum=hp["momentum"], clip=hp["clip"], max_norm=threshold,
            clip_target=hp["clip_target"], weight_decay=hp["weight_decay"], foreach=False,
            dampening=hp["dampening"], nesterov=hp["nesterov"], maximize=hp["maximize"],
        )

    return core


register_optimizer("clip_sgd", ClipSGD, VectorizedRule(_init_runs, _run_core, threshold_key="max_norm"))
