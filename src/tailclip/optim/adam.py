"""ClipAdam: Adam and Adam-Norm with gradient clipping, optionally with a delayed step size.

With ``u_t = clip(g_t; clip, tau)`` (global, layer-wise, coordinate or no clipping, see
:mod:`tailclip.clip`) and ``m_0 = 0``, ``v_0 = v0``::

    m_t = b1 m_{t-1} + (1 - b1) u_t
    v_t = b2 v_{t-1} + (1 - b2) u_t^2          (norm=False: per coordinate, Adam)
    v_t = b2 v_{t-1} + (1 - b2) ||u_t||^2      (norm=True: one scalar, Adam-Norm)
    x <- x (1 - lr wd)                          (decoupled weight decay, AdamW)

    not delayed:  x <- x - lr mhat_t / (sqrt(vhat_t) + eps),
                  mhat_t = m_t / (1 - b1^t),  vhat_t = v_t / (1 - b2^t)
    delayed:      x <- x - lr m_t / (sqrt(v_{t-1}) + eps),   then v_t as above

The delayed step size does not depend on the current sample; it uses no bias correction and
needs ``v0 > 0``. ``||u_t||`` is the model-wide norm: over every param group with ``norm=True``
(one scalar ``v`` for them all), except with ``clip="group"``, where each group has its own.
With ``clip=None``, ``norm=False`` and no delay this is exactly
``torch.optim.AdamW`` (same operations in the same order, same bits, for the loop and the
foreach paths).

References: Chezhegov, Klyukin, Semenov, Beznosikov, Gasnikov, Horvath, Takac, Gorbunov,
"Clipping Improves Adam-Norm and AdaGrad-Norm when the Noise Is Heavy-Tailed" (clipped and
delayed Adam-Norm); Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).

Length (over ~500 lines): one rule with four variants (Adam, Adam-Norm, each delayed or not)
that share the moment updates, and the routes to torch's own AdamW kernels (fused, AMSGrad,
capturable) that torch.optim parity needs; the class is one screen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as torch_adam
from torch.optim.optimizer import _device_dtype_check_for_fused, _get_capturable_supported_devices

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
    check_betas,
    check_clipping,
    check_flag,
    check_lr,
    check_nonnegative,
    clipped_norm,
    unsupported,
)
from tailclip.optim._kernels import cpu_blocks, device_dtype_buckets, per_tensor, signed
from tailclip.optim._registry import VectorizedRule, register_optimizer

# Adam-Norm's scalar second moment of a group and its update count live in the state of the
# group's first parameter, ``state[group["params"][0]]``, so that ``state_dict`` carries them.
GROUP_EXP_AVG_SQ = "group_exp_avg_sq"
GROUP_STEP = "group_step"


def clip_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    norm: bool,
    delay: bool,
    foreach: bool,
    fused: bool = False,
    group_exp_avg_sq: Tensor | None = None,
    group_step: Tensor | None = None,
    norms: Tensor | None = None,
    amsgrad: bool = False,
    maximize: bool = False,
    capturable: bool = False,
    max_exp_avg_sqs: list[Tensor] | None = None,
    total_norm: Tensor | None = None,
    group_update_norm: Tensor | None = None,
) -> ClipStats:
    """Functional ClipAdam; updates ``params`` and the moment buffers in place.

    ``exp_avgs`` (``m``) and ``state_steps`` (``t``, one 0-dim float tensor per parameter,
    incremented here) are per parameter. With ``norm=False`` ``exp_avg_sqs`` holds the
    per-coordinate ``v``; with ``norm=True`` it is unused and ``group_exp_avg_sq`` (0-dim) and
    ``group_step`` (0-dim, incremented here) hold the group's scalar ``v`` and its update count.
    ``norms`` are the per-tensor norms of ``grads`` if already known (saves a read). An
    adaptive ``max_norm`` policy is fed the pre-clip norm of ``grads``. ``total_norm``: the
    model-wide norm global clipping divides by (``None``: that of ``grads``);
    ``group_update_norm``: the model-wide ``||u_t||`` the scalar ``v`` takes (``None``: that of
    these tensors).

    Pure torch without device synchronisation: the bias corrections read the step counts,
    which live on the CPU (as in ``torch.optim.Adam``), and ``fused=True`` (``norm=False``, not
    delayed) calls ``torch._fused_adamw_``, folding global clipping into its ``grad_scale``.
    Returns the clipping statistics of the group. The arguments are not checked here:
    :class:`ClipAdam` checks them once per param group (``fused`` with ``norm`` or ``delay``
    is rejected there).

    Plain Adam (``norm=False``, not delayed) with ``amsgrad``, ``capturable``, ``fused`` or a
    Tensor ``lr``/beta runs torch's own AdamW kernels (``torch.optim.adam.adam``, decoupled
    decay) on the clipped gradient ``u_t`` (``max_exp_avg_sqs``: AMSGrad's running maximum of
    ``v``; the step then divides by ``sqrt(max_{s<=t} v_s)``). ``maximize`` clips ``-g_t``.
    """
    torch_route = fused or amsgrad or capturable or any(isinstance(h, Tensor) for h in (lr, beta1, beta2))
    if torch_route and not (norm or delay):
        return _torch_clip_adam(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs or [], state_steps,
            lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, clip=clip,
            max_norm=max_norm, foreach=foreach, fused=fused, amsgrad=amsgrad, maximize=maximize,
            capturable=capturable, norms=norms, total_norm=total_norm,
        )
    lr = float(lr) if isinstance(lr, Tensor) else lr  # Adam-Norm and the delayed step: a host read
    grads = signed(grads, maximize, foreach)
    scales = None
    if foreach and clip in NORM_MODES:
        # the factors go into the update's first op: no clipped copy of every gradient
        updates = grads
        norms = tensor_norms(grads, foreach) if norms is None else norms
        coefs, stats = clip_coefficients(norms, clip, max_norm, total_norm)
        scales = per_tensor(coefs, grads)
    else:
        updates, stats = clip_tensors_unchecked(grads, clip, max_norm, foreach, norms, total_norm)
    group_denom = None
    if norm:
        update_norm = stats.clipped_norm if group_update_norm is None else group_update_norm
        group_denom = _group_denominator(
            group_exp_avg_sq, group_step, update_norm, beta2=beta2, eps=eps, delay=delay
        )
    if foreach:
        _multi_tensor_clip_adam(
            params, updates, exp_avgs, exp_avg_sqs, state_steps, group_denom, scales,
            lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, norm=norm, delay=delay,
        )
    else:
        _single_tensor_clip_adam(
            params, updates, exp_avgs, exp_avg_sqs, state_steps, group_denom,
            lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, norm=norm, delay=delay,
        )
    return stats


def _group_denominator(
    exp_avg_sq: Tensor, step: Tensor, update_norm: Tensor, *, beta2: float, eps: float, delay: bool
) -> Tensor:
    """Adam-Norm: update the scalar ``v`` with ``||u_t||^2``; return the step's denominator.

    Not delayed: ``sqrt(v_t / (1 - b2^t)) + eps``. Delayed: ``sqrt(v_{t-1}) + eps``, read
    before ``v`` takes the current sample.
    """
    update_norm = update_norm.to(exp_avg_sq.device, exp_avg_sq.dtype)
    delayed_denom = exp_avg_sq.sqrt().add_(eps) if delay else None
    step += 1
    exp_avg_sq.mul_(beta2).addcmul_(update_norm, update_norm, value=1 - beta2)
    if delayed_denom is not None:
        return delayed_denom
    bias_correction2 = 1 - beta2 ** step.item()
    return (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)


def _single_tensor_clip_adam(
    params: list[Tensor],
    updates: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    group_denom: Tensor | None,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    norm: bool,
    delay: bool,
) -> None:
    """Per-tensor loop; for Adam it is the op sequence of ``torch.optim.adam._single_tensor_adam``."""
    for i, param in enumerate(params):
        update, exp_avg, step_t = updates[i], exp_avgs[i], state_steps[i]
        step_t += 1
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(update, 1 - beta1)
        if norm:
            step_size = lr if delay else lr / (1 - beta1 ** step_t.item())
            scaled = exp_avg / group_denom
            scaled.mul_(-step_size)
            param.add_(scaled)
        elif delay:
            exp_avg_sq = exp_avg_sqs[i]
            denom = exp_avg_sq.sqrt().add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr)
            exp_avg_sq.mul_(beta2).addcmul_(update, update, value=1 - beta2)
        else:
            exp_avg_sq = exp_avg_sqs[i]
            exp_avg_sq.mul_(beta2).addcmul_(update, update, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_clip_adam(
    params: list[Tensor],
    updates: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    group_denom: Tensor | None,
    scales: list[Tensor] | None,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    norm: bool,
    delay: bool,
) -> None:
    """Foreach path per (device, dtype); for Adam the op sequence of ``_multi_tensor_adam``.

    ``scales`` (one 0-dim factor per tensor, or ``None``) are the clipping factors: each block
    of ``u = scale * updates`` is formed just before its use (:func:`cpu_blocks`).
    """
    for index in device_dtype_buckets(params):
        device_steps = [state_steps[i] for i in index]
        if device_steps[0].is_cpu:
            torch._foreach_add_(device_steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(device_steps, 1)
        if norm:
            step_sizes = [-lr if delay else (lr / (1 - beta1 ** s.item())) * -1 for s in device_steps]
        elif not delay:
            bias_correction1 = [1 - beta1 ** s.item() for s in device_steps]
            bias_correction2 = [1 - beta2 ** s.item() for s in device_steps]
            step_sizes = [(lr / bc) * -1 for bc in bias_correction1]
            bias_correction2_sqrt = [bc**0.5 for bc in bias_correction2]
        lists = [[params[i] for i in index], [updates[i] for i in index], [exp_avgs[i] for i in index]]
        if not norm:
            lists.append([exp_avg_sqs[i] for i in index])
        for pieces_index, pieces in cpu_blocks(lists):
            device_params, device_updates, device_exp_avgs = pieces[:3]
            if scales is not None:
                device_updates = torch._foreach_mul(device_updates, [scales[index[k]] for k in pieces_index])
            if weight_decay != 0:
                torch._foreach_mul_(device_params, 1 - lr * weight_decay)
            torch._foreach_lerp_(device_exp_avgs, device_updates, 1 - beta1)
            if norm:
                scaled = torch._foreach_div(device_exp_avgs, group_denom)
                torch._foreach_mul_(scaled, [step_sizes[k] for k in pieces_index])
                torch._foreach_add_(device_params, scaled)
                continue
            device_exp_avg_sqs = pieces[3]
            if delay:
                denom = torch._foreach_sqrt(device_exp_avg_sqs)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(device_params, device_exp_avgs, denom, value=-lr)
                torch._foreach_mul_(device_exp_avg_sqs, beta2)
                torch._foreach_addcmul_(device_exp_avg_sqs, device_updates, device_updates, 1 - beta2)
                continue
            torch._foreach_mul_(device_exp_avg_sqs, beta2)
            torch._foreach_addcmul_(device_exp_avg_sqs, device_updates, device_updates, 1 - beta2)
            denom = torch._foreach_sqrt(device_exp_avg_sqs)
            torch._foreach_div_(denom, [bias_correction2_sqrt[k] for k in pieces_index])
            torch._foreach_add_(denom, eps)
            step_size = [step_sizes[k] for k in pieces_index]
            torch._foreach_addcdiv_(device_params, device_exp_avgs, denom, step_size)


def _torch_clip_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float,
    weight_decay: float,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    foreach: bool,
    fused: bool,
    amsgrad: bool,
    maximize: bool,
    capturable: bool,
    norms: Tensor | None,
    total_norm: Tensor | None,
) -> ClipStats:
    """torch's AdamW (``torch.optim.adam.adam``) on the clipped gradient.

    With ``fused=True`` and global clipping, the clip factor is the kernel's ``grad_scale``:
    ``1 / min(1, tau / ||g||) = max(1, ||g|| / tau)`` (float32), instead of a rescaling pass;
    the kernel writes the divided gradient back into ``grads``, so after the step ``.grad``
    holds the clipped gradient (as after ``clip_grad_norm_``). ``maximize`` is the kernel's
    (``clip(-g) = -clip(g)``).
    """
    grad_scale = None
    if fused and clip in ("global", "group"):
        if norms is None:
            norms = tensor_norms(grads, foreach)
        grad_norm = torch.linalg.vector_norm(norms)
        clipped_by = grad_norm if total_norm is None else total_norm
        grad_scale = torch.clamp(clipped_by / clip_threshold(max_norm, clipped_by), min=1.0)
        stats = ClipStats.of(grad_norm, grad_norm / grad_scale)
        updates = grads
    else:
        updates, stats = clip_tensors_unchecked(grads, clip, max_norm, foreach, norms, total_norm)
    torch_adam(
        params, updates, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
        # torch's foreach path takes a Tensor lr only when capturable: the loop path takes it
        foreach=foreach and not fused and (capturable or not isinstance(lr, Tensor)),
        capturable=capturable, fused=fused,
        grad_scale=None if grad_scale is None else grad_scale.to(torch.float32),
        decoupled_weight_decay=True, amsgrad=amsgrad, beta1=beta1, beta2=beta2, lr=lr,
        weight_decay=weight_decay, eps=eps, maximize=maximize,
    )
    return stats


def _check_hyperparameters(
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float, norm: bool,
    delay: bool, clip: ClipMode, max_norm: float | ThresholdPolicy, v0: float, fused: bool,
    amsgrad: bool, maximize: bool, capturable: bool,
) -> None:
    check_lr(lr)
    check_betas(betas)
    check_nonnegative("eps", eps)
    if eps == 0 and not v0 > 0:
        raise ValueError("Invalid eps: 0 with v0 = 0; allowed: eps > 0, or v0 > 0 (an all-zero gradient "
                         "would divide 0 by 0)")
    check_nonnegative("weight_decay", weight_decay)
    check_clipping(clip, max_norm)
    check_nonnegative("v0", v0)
    for name, flag in (("norm", norm), ("delay", delay), ("fused", fused), ("amsgrad", amsgrad),
                       ("maximize", maximize), ("capturable", capturable)):
        check_flag(name, flag)
    if delay and not v0 > 0:
        raise ValueError(f"Invalid v0: {v0}; allowed: v0 > 0 when delay=True")
    if fused and (norm or delay):
        raise ValueError(
            f"Invalid fused: True with norm={norm}, delay={delay}; allowed: only with norm=False, delay=False"
        )
    for name, flag in (("amsgrad", amsgrad), ("capturable", capturable)):
        if flag and (norm or delay):
            unsupported(name, True, f"it has no meaning with norm={norm}, delay={delay}; allowed: only "
                        "with norm=False, delay=False")
    if fused and capturable:
        unsupported("capturable", True, "allowed: fused or capturable, not both (as torch.optim.AdamW)")
    if isinstance(betas[0], Tensor) or isinstance(betas[1], Tensor):
        if norm or delay:
            unsupported("betas", betas, "Tensor betas need norm=False, delay=False")


_HYPERPARAMETERS = (
    "lr", "betas", "eps", "weight_decay", "norm", "delay", "clip", "max_norm", "v0", "fused",
    "amsgrad", "maximize", "capturable",
)


def _scalar_dtype() -> torch.dtype:
    """dtype of ``state["step"]``, as ``torch.optim.Adam`` chooses it."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class ClipAdam(ClipOptimizer):
    """Adam / Adam-Norm with clipping and optional delayed step size; AdamW without clipping.

    See the module docstring for the update. State per parameter: ``"step"`` (a 0-dim float
    tensor on the CPU, on the parameter's device with ``fused=True``), ``"exp_avg"`` (``m``)
    and, with ``norm=False``, ``"exp_avg_sq"`` (``v``), as ``torch.optim.AdamW``. With
    ``norm=True`` the scalar ``v`` (float32, float64 for float64 groups) and its update count
    are stored under ``"group_exp_avg_sq"`` and ``"group_step"`` in the state of the first
    parameter of the first ``norm=True`` group: one for the model (the groups sharing it need
    one ``beta2``); with ``clip="group"`` one per group, in the state of its first parameter.

    Without clipping (``clip=None``, the default), ``norm=False`` and no delay it is
    ``torch.optim.AdamW`` with the same options, bit for bit, except the default
    ``weight_decay``: 0 here (Adam, and the papers' Adam-Norm), 0.01 in ``AdamW``; replacing
    ``AdamW(params)`` means ``ClipAdam(params, weight_decay=0.01)``. With clipping, the clipped
    gradient ``u_t`` takes the gradient's place in AdamW's update.

    Args:
        params: parameters or param groups.
        lr: step size (>= 0; a number or a one-element tensor).
        betas: ``(b1, b2)``, each in [0, 1) (numbers, or tensors with ``norm=False``, no delay).
        eps: added to ``sqrt(v)``; > 0, or 0 with ``v0 > 0`` (then ``v > 0`` always). torch
            allows 0 with ``v = 0``, which writes ``0 / 0 = NaN`` on an all-zero gradient:
            rejected here.
        weight_decay: decoupled decay, ``x <- x (1 - lr wd)`` before the update (>= 0).
        norm: ``True`` for Adam-Norm (one model-wide scalar second moment; one per group with
            ``clip="group"``).
        delay: ``True`` for the delayed step size ``lr / (sqrt(v_{t-1}) + eps)`` without bias
            correction (needs ``v0 > 0``).
        clip: ``"global"`` (model-wide norm), ``"group"`` (the group's norm), ``"layer"`` (each
            tensor), ``"coord"`` (elementwise clamp) or ``None``.
        max_norm: threshold ``tau > 0``, or an adaptive :class:`~tailclip.clip.ThresholdPolicy`
            (``clip="global"`` or ``"group"``).
        v0: initial second moment ``v_0`` (>= 0; > 0 when delayed).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        fused: ``torch._fused_adamw_`` (``norm=False``, not delayed; takes precedence over
            ``foreach``). With ``clip="global"`` the clip factor is the kernel's
            ``grad_scale``, and ``.grad`` holds the clipped gradient after the step.
        amsgrad: divide by ``sqrt(max_{s<=t} vhat_s)`` (torch's AMSGrad; ``norm=False``, no delay).
        maximize: ascend: ``u_t = clip(-g_t)``.
        capturable: torch's CUDA-graph-capturable path (state ``step`` on the parameter's
            device; parameters on a device torch supports for it, e.g. CUDA).
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    References: Chezhegov et al., "Clipping Improves Adam-Norm and AdaGrad-Norm when the Noise
    Is Heavy-Tailed"; Kingma and Ba, ICLR 2015; Loshchilov and Hutter, ICLR 2019; Reddi, Kale,
    Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    """

    GROUP_STATE_KEYS = (GROUP_EXP_AVG_SQ, GROUP_STEP)
    FORMAT_1_OPTIONS = {"amsgrad": False, "maximize": False, "capturable": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        norm: bool = False,
        delay: bool = False,
        clip: ClipMode = None,
        max_norm: float | ThresholdPolicy = 1.0,
        v0: float = 0.0,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        capturable: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, norm=norm,
            delay=delay, clip=clip, max_norm=max_norm, v0=v0, fused=bool(fused),
            amsgrad=amsgrad, maximize=maximize, capturable=capturable,
        )
        super().__init__(params, defaults, foreach=foreach is not False, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check_hyperparameters(**{k: group[k] for k in _HYPERPARAMETERS})

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["capturable"] and p.device.type not in _get_capturable_supported_devices():
            unsupported("capturable", True, f"got a parameter on {p.device.type}; allowed: parameters on "
                        f"{', '.join(_get_capturable_supported_devices())}")
        if group["fused"]:
            _device_dtype_check_for_fused(p)
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        elif group["capturable"]:
            state["step"] = torch.zeros((), dtype=_scalar_dtype(), device=p.device)
        else:
            state["step"] = torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu")
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if not group["norm"]:
            state["exp_avg_sq"] = torch.full_like(p, group["v0"], memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _shares_group_state(self, group: dict[str, Any]) -> bool:
        return group["norm"] and group["clip"] != "group"

    def _model_wide(self, group: dict[str, Any]) -> bool:
        return group["clip"] == "global" or self._shares_group_state(group)

    def _init_group_state(self, group: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        group_state = self._group_state(group)
        if GROUP_EXP_AVG_SQ not in group_state:
            group_state[GROUP_STEP] = torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu")
            group_state[GROUP_EXP_AVG_SQ] = torch.full(
                (), group["v0"], dtype=dtype, device=group["params"][0].device
            )
        return group_state

    def _prepare_model_step(
        self, model: list[tuple[dict[str, Any], list[Tensor], list[Tensor], Tensor]], model_norm: Tensor
    ) -> None:
        """Adam-Norm's model-wide ``||u_t||`` over the ``norm=True`` groups, before any update."""
        shared = [entry for entry in model if entry[0]["norm"]]
        if len(shared) < 2:
            return
        beta2 = {group["betas"][1] for group, *_ in shared}
        if len(beta2) > 1:
            raise ValueError(
                f"Invalid betas: param groups sharing Adam-Norm's model-wide second moment have "
                f"beta2 {sorted(beta2)}; allowed: one beta2, or clip='group' for one moment per group"
            )
        state = self._init_group_state(shared[0][0], shared[0][3].dtype)
        update_norms = [
            clipped_norm(group, grads, norms, self._threshold(group), model_norm).to(model_norm.device)
            for group, _, grads, norms in shared
        ]
        self._record.shared = {
            "start": {k: state[k].clone() for k in self.GROUP_STATE_KEYS},
            "update_norm": torch.linalg.vector_norm(torch.stack(update_norms)),
        }

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                self._init_state(p, state, group)
            exp_avgs.append(state["exp_avg"])
            steps.append(state["step"])
            if not group["norm"]:
                exp_avg_sqs.append(state["exp_avg_sq"])
        max_exp_avg_sqs = [self.state[p]["max_exp_avg_sq"] for p in params] if group["amsgrad"] else None
        group_exp_avg_sq = group_step = None
        if group["norm"]:
            self._init_group_state(group, norms.dtype)
            scalars = self._group_scalars(group)
            group_exp_avg_sq, group_step = scalars[GROUP_EXP_AVG_SQ], scalars[GROUP_STEP]
        beta1, beta2 = group["betas"]
        stats = clip_adam(
            params, grads, exp_avgs, exp_avg_sqs, steps,
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], clip=group["clip"],
            max_norm=self._threshold(group), norm=group["norm"], delay=group["delay"],
            foreach=group["foreach"], fused=group["fused"], group_exp_avg_sq=group_exp_avg_sq,
            group_step=group_step, norms=norms, amsgrad=group["amsgrad"], maximize=group["maximize"],
            capturable=group["capturable"], max_exp_avg_sqs=max_exp_avg_sqs,
            total_norm=model_norm, group_update_norm=self._shared_update_norm(group),
        )
        if group["norm"]:
            self._store_group_scalars(group, scalars)
        return stats


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per run: ``exp_avg`` and ``exp_avg_sq`` or, with ``norm=True``, ``group_exp_avg_sq`` (one
    scalar per run, float64 for float64 iterates, else float32); shared: the step counters."""
    state = {"exp_avg": torch.zeros_like(x)}
    shared = {}
    if hp["norm"]:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        state["group_exp_avg_sq"] = torch.full((x.shape[0],), hp["v0"], dtype=dtype, device=x.device)
        shared["group_step"] = torch.tensor(0.0, dtype=_scalar_dtype())
    else:
        state["exp_avg_sq"] = torch.full_like(x, hp["v0"])
    shared["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
    return state, shared


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    beta1, beta2 = hp["betas"]
    norm = hp["norm"]

    def core(x: Tensor, g: Tensor, exp_avg: Tensor, second: Tensor) -> ClipStats:
        return clip_adam(
            [x], [g], [exp_avg], [] if norm else [second], [shared["step"]],
            lr=lr, beta1=beta1, beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
            clip=hp["clip"], max_norm=threshold, norm=norm, delay=hp["delay"], foreach=False,
            group_exp_avg_sq=second if norm else None, group_step=shared.get("group_step"),
            maximize=hp["maximize"],
        )

    return core


register_optimizer("clip_adam", ClipAdam, VectorizedRule(_init_runs, _run_core, threshold_key="max_norm"))
