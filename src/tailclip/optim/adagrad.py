"""ClipAdaGrad: AdaGrad and AdaGrad-Norm with gradient clipping, optionally delayed.

With coupled weight decay, the clipped gradient ``u_t = clip(g_t + wd x_t)`` and ``b_0 = b0``
(Chezhegov et al., "Clipping Improves Adam-Norm and AdaGrad-Norm when the Noise Is
Heavy-Tailed")::

    norm=False (AdaGrad, per coordinate; Duchi, Hazan, Singer 2011):
        b_t^2 = b_{t-1}^2 + u_t^2
    norm=True (AdaGrad-Norm, one scalar; Ward, Wu, Bottou 2019):
        b_t^2 = b_{t-1}^2 + ||u_t||^2          (||.|| model-wide: every norm=True group; one
                                               scalar per group with clip="group")

    not delayed:  x_{t+1} = x_t - lr_t u_t / (b_t + eps)
    delayed:      x_{t+1} = x_t - lr_t u_t / (b_{t-1} + eps), then b is updated
    lr_t = lr / (1 + (t - 1) lr_decay)      (torch's lr_decay; lr_t = lr by default)

With ``maximize`` the gradient is ``-g_t`` (``u_t = clip(-g_t + wd x_t)``).

The delayed step size does not depend on the current sample, but the step is still taken
along the *current* clipped gradient ``u_t`` (a published implementation stepped along the
previous gradient: tailclip does not). Delayed needs ``b0 > 0``.

Without clipping, with ``norm=False``, not delayed, it is exactly ``torch.optim.Adagrad`` with
the same options (``initial_accumulator_value``, or ``b0**2``): the foreach and the
per-tensor paths perform the operations of torch's ``_multi_tensor_adagrad`` and
``_single_tensor_adagrad`` in the same order, so the results match bit for bit; ``fused``
runs torch's fused kernel on ``u_t``. With clipping, ``u_t`` takes the gradient's place in
torch's update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.adagrad import adagrad as torch_adagrad

from tailclip.clip import (
    NORM_MODES,
    ClipMode,
    ClipStats,
    ThresholdPolicy,
    clip_coefficients,
    clip_tensors_unchecked,
    tensor_norms,
)
from tailclip.optim._base import (
    ClipOptimizer,
    check_clipping,
    check_flag,
    check_lr,
    check_nonnegative,
    clipped_norm,
    unsupported,
)
from tailclip.optim._kernels import (
    add_scaled_,
    clipped_for_torch,
    coupled_decay,
    cpu_blocks,
    per_tensor,
    signed,
)
from tailclip.optim._registry import VectorizedRule, register_optimizer


def clip_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    norm: bool,
    delay: bool,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    eps: float,
    weight_decay: float,
    foreach: bool,
    norms: Tensor | None = None,
    lr_decay: float = 0.0,
    maximize: bool = False,
    fused: bool = False,
    total_norm: Tensor | None = None,
    group_update_norm: Tensor | None = None,
) -> ClipStats:
    """Functional ClipAdaGrad; updates ``params``, ``sums`` and ``steps`` in place.

    ``sums`` holds the accumulators ``b_{t-1}^2``: with ``norm=False`` one tensor per
    parameter (its shape and dtype), with ``norm=True`` a one-element list holding the group's
    0-dim accumulator. ``steps`` are the per-parameter step counters (0-dim tensors).
    ``norms`` are the per-tensor norms of ``grads`` if already known (used only without weight
    decay, when they are the norms of the tensors being clipped). ``fused=True`` (per
    coordinate, not delayed) hands ``u_t`` to torch's fused Adagrad (with ``clip=None`` the raw
    gradient, with torch's ``maximize`` and ``weight_decay``); it increments ``steps`` itself.
    ``total_norm``: the model-wide norm global clipping divides by (``None``: these tensors');
    ``group_update_norm``: the model-wide ``||u_t||`` AdaGrad-Norm's scalar takes (``None``: these
    tensors').
    """
    if fused:
        return _fused_clip_adagrad(
            params, grads, sums, steps, lr=lr, clip=clip, max_norm=max_norm, eps=eps,
            weight_decay=weight_decay, lr_decay=lr_decay, maximize=maximize, norms=norms,
            total_norm=total_norm,
        )
    if foreach:
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        for step in steps:
            step.add_(1)
    grads = signed(grads, maximize, foreach)
    if weight_decay != 0:
        grads = coupled_decay(grads, params, weight_decay, foreach)
        norms = None
    # -lr_t per tensor, as torch: -lr / (1 + (t - 1) lr_decay); exactly -lr without decay
    minus_lrs = [-lr if lr_decay == 0 else -lr / (1 + (s.item() - 1) * lr_decay) for s in steps]
    if foreach and not norm and clip in NORM_MODES:
        # the factors go into the update's first op: no clipped copy of every gradient
        norms = tensor_norms(grads, foreach) if norms is None else norms
        coefs, stats = clip_coefficients(norms, clip, max_norm, total_norm)
        _adagrad_step_foreach(params, grads, sums, minus_lrs, delay, eps, per_tensor(coefs, grads))
        return stats
    clipped, stats = clip_tensors_unchecked(grads, clip, max_norm, foreach, norms, total_norm)
    if norm:
        update_norm = stats.clipped_norm if group_update_norm is None else group_update_norm
        _adagrad_norm_step(params, clipped, sums[0], update_norm, minus_lrs[0], delay, eps, foreach)
    elif foreach:
        _adagrad_step_foreach(params, clipped, sums, minus_lrs, delay, eps)
    else:
        _adagrad_step_loop(params, clipped, sums, minus_lrs, delay, eps)
    return stats


def _fused_clip_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    eps: float,
    weight_decay: float,
    lr_decay: float,
    maximize: bool,
    norms: Tensor | None,
    total_norm: Tensor | None,
) -> ClipStats:
    """torch's fused Adagrad (``torch.optim.adagrad.adagrad``) on ``u_t``."""
    updates, stats, fused_decay, fused_maximize = clipped_for_torch(
        params, grads, clip=clip, max_norm=max_norm, weight_decay=weight_decay, maximize=maximize,
        norms=norms, total_norm=total_norm,
    )
    torch_adagrad(
        params, updates, sums, steps, fused=True, lr=lr, weight_decay=fused_decay,
        lr_decay=lr_decay, eps=eps, maximize=fused_maximize,
    )
    return stats


def _adagrad_step_foreach(
    params: list[Tensor],
    clipped: list[Tensor],
    sums: list[Tensor],
    minus_lrs: list[float | Tensor],
    delay: bool,
    eps: float,
    scales: list[Tensor] | None = None,
) -> None:
    """Per-coordinate step, in the operation order of torch's ``_multi_tensor_adagrad``.

    ``scales`` (one 0-dim factor per tensor, or ``None``): the clipped gradient is
    ``scale * clipped``, formed block by block just before its use (:func:`cpu_blocks`).
    """
    for index, (p, u, state_sums) in cpu_blocks([params, clipped, sums]):
        if scales is not None:
            u = torch._foreach_mul(u, [scales[i] for i in index])
        if not delay:
            torch._foreach_addcmul_(state_sums, u, u, value=1)
        std = torch._foreach_sqrt(state_sums)
        torch._foreach_add_(std, eps)
        if delay:
            torch._foreach_addcmul_(state_sums, u, u, value=1)
        numerator = torch._foreach_mul(u, [minus_lrs[i] for i in index])
        torch._foreach_addcdiv_(p, numerator, std)


def _adagrad_step_loop(
    params: list[Tensor], clipped: list[Tensor], sums: list[Tensor], minus_lrs: list[float | Tensor],
    delay: bool, eps: float,
) -> None:
    """Per-coordinate step, in the operation order of torch's ``_single_tensor_adagrad``."""
    for param, u, state_sum, minus_lr in zip(params, clipped, sums, minus_lrs, strict=True):
        if not delay:
            state_sum.addcmul_(u, u, value=1)
        std = state_sum.sqrt().add_(eps)
        if delay:
            state_sum.addcmul_(u, u, value=1)
        param.addcdiv_(u, std, value=minus_lr)


def _adagrad_norm_step(
    params: list[Tensor],
    clipped: list[Tensor],
    norm_sq_sum: Tensor,
    clipped_norm: Tensor,
    minus_lr: float | Tensor,
    delay: bool,
    eps: float,
    foreach: bool,
) -> None:
    """AdaGrad-Norm step: one scalar ``b_t^2 = b_{t-1}^2 + ||u_t||^2`` (``norm_sq_sum``)."""
    squared_norm = clipped_norm.to(norm_sq_sum.device, norm_sq_sum.dtype).square()
    if not delay:
        norm_sq_sum.add_(squared_norm)
    minus_step = minus_lr / (norm_sq_sum.sqrt() + eps)
    if delay:
        norm_sq_sum.add_(squared_norm)
    add_scaled_(params, clipped, minus_step, foreach)


class ClipAdaGrad(ClipOptimizer):
    """AdaGrad / AdaGrad-Norm with clipping and an optional delayed step size.

    Args:
        params: parameters or param groups.
        lr: step size (>= 0; a number or a one-element tensor), default ``1e-2`` as ``Adagrad``.
        norm: ``False``: per-coordinate accumulator (AdaGrad); ``True``: one scalar ``b``
            (AdaGrad-Norm) fed with the model-wide norm of the clipped gradient (one per group,
            fed with the group's norm, with ``clip="group"``).
        delay: divide by the previous accumulator ``b_{t-1}`` (the step size does not depend
            on the current sample), then update ``b``. Needs ``b0 > 0``.
        clip: ``"global"`` (model-wide norm), ``"group"`` (the group's norm), ``"layer"`` (each
            tensor), ``"coord"`` (elementwise clamp) or ``None`` (default).
        max_norm: threshold ``tau > 0``, or an adaptive :class:`~tailclip.clip.ThresholdPolicy`
            (``clip="global"`` or ``"group"``). Ignored when ``clip=None``.
        b0: initial accumulator ``b_0 >= 0`` (the accumulator starts at ``b0**2``).
        eps: added to ``b`` in the denominator, default 1e-10 as ``torch.optim.Adagrad``; > 0,
            or 0 with a positive initial accumulator (torch allows 0 with a zero accumulator,
            which writes ``0 / 0 = NaN`` on an all-zero gradient: rejected here).
        weight_decay: coupled L2 factor, ``g_t + wd x_t`` before clipping (as ``Adagrad``).
        lr_decay: ``lr_t = lr / (1 + (t - 1) lr_decay)`` (>= 0, as ``Adagrad``).
        initial_accumulator_value: torch's name for the accumulator's start ``b_0^2`` (>= 0);
            give it or ``b0``, not both.
        maximize: ascend, ``u_t = clip(-g_t + wd x_t)``.
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        fused: torch's fused Adagrad kernel on ``u_t`` (``norm=False``, not delayed).
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    State: every parameter stepped has ``"step"`` (float32 CPU tensor, as ``Adagrad``; on the
    parameter's device with ``fused``); with ``norm=False`` also ``"sum"`` (``b_t^2`` per
    coordinate, as ``Adagrad``). With ``norm=True`` the scalar accumulator ``b_t^2`` is
    ``"norm_sq_sum"`` (0-dim, float32, or float64 for float64 groups), stored once, in the state
    of the first parameter of the first ``norm=True`` group (with ``clip="group"``: once per
    group, in the state of its first parameter).

    References: Duchi, Hazan, Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011 (AdaGrad); Ward, Wu, Bottou, "AdaGrad Stepsizes: Sharp
    Convergence Over Nonconvex Landscapes", ICML 2019 (AdaGrad-Norm); Chezhegov, Klyukin,
    Semenov, Beznosikov, Gasnikov, Horvath, Takac, Gorbunov, "Clipping Improves Adam-Norm and
    AdaGrad-Norm when the Noise Is Heavy-Tailed" (clipping and the delayed variants).
    """

    GROUP_STATE_KEYS = ("norm_sq_sum",)
    FORMAT_1_OPTIONS = {"lr_decay": 0.0, "initial_accumulator_value": None, "maximize": False, "fused": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        norm: bool = False,
        delay: bool = False,
        clip: ClipMode = None,
        max_norm: float | ThresholdPolicy = 1.0,
        b0: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        lr_decay: float = 0.0,
        initial_accumulator_value: float | None = None,
        *,
        maximize: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr, norm=norm, delay=delay, clip=clip, max_norm=max_norm,
            b0=b0, eps=eps, weight_decay=weight_decay, lr_decay=lr_decay,
            initial_accumulator_value=initial_accumulator_value, maximize=maximize, fused=bool(fused),
        )
        super().__init__(params, defaults, foreach=foreach is not False, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        for name in ("norm", "delay", "maximize", "fused"):
            check_flag(name, group[name])
        check_clipping(group["clip"], group["max_norm"])
        b0 = group["b0"]
        check_nonnegative("b0", b0)
        initial = group["initial_accumulator_value"]
        if initial is not None:
            check_nonnegative("initial_accumulator_value", initial)
            if b0 != 0:
                unsupported("initial_accumulator_value", initial, "allowed: it or b0, not both")
        if group["delay"] and not _initial_sum(group) > 0:
            raise ValueError(f"Invalid b0: {b0} with delay=True; allowed: b0 > 0")
        check_nonnegative("eps", group["eps"])
        if group["eps"] == 0 and not _initial_sum(group) > 0:
            raise ValueError("Invalid eps: 0 with a zero initial accumulator; allowed: eps > 0, or b0 > 0 "
                             "(an all-zero gradient would divide 0 by 0)")
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("lr_decay", group["lr_decay"])
        if group["fused"] and (group["norm"] or group["delay"]):
            unsupported("fused", True, "allowed only with norm=False, delay=False")

    def _shares_group_state(self, group: dict[str, Any]) -> bool:
        return group["norm"] and group["clip"] != "group"

    def _model_wide(self, group: dict[str, Any]) -> bool:
        return group["clip"] == "global" or self._shares_group_state(group)

    def _model_norms(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], norms: Tensor
    ) -> Tensor:
        """Norms of the clipped quantity ``s g + wd x`` (``s = -1`` with ``maximize``)."""
        if group["weight_decay"] == 0:
            return norms  # ||-g|| = ||g||
        signs = signed(grads, group["maximize"], group["foreach"])
        decayed = coupled_decay(signs, params, group["weight_decay"], group["foreach"])
        return tensor_norms(decayed, group["foreach"])

    def _init_group_state(self, group: dict[str, Any], params: list[Tensor]) -> dict[str, Any]:
        group_state = self._group_state(group)
        if "norm_sq_sum" not in group_state:
            dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
            group_state["norm_sq_sum"] = torch.full(
                (), group["b0"] ** 2, dtype=dtype, device=group["params"][0].device
            )
        return group_state

    def _prepare_model_step(
        self, model: list[tuple[dict[str, Any], list[Tensor], list[Tensor], Tensor]], model_norm: Tensor
    ) -> None:
        """AdaGrad-Norm's model-wide ``||u_t||`` over the ``norm=True`` groups, before any update."""
        shared = [entry for entry in model if entry[0]["norm"]]
        if len(shared) < 2:
            return
        state = self._init_group_state(shared[0][0], shared[0][1])
        update_norms = []
        for group, params, grads, norms in shared:
            if group["weight_decay"] != 0:
                grads = signed(grads, group["maximize"], group["foreach"])
                grads = coupled_decay(grads, params, group["weight_decay"], group["foreach"])
                norms = tensor_norms(grads, group["foreach"])
            update_norm = clipped_norm(group, grads, norms, self._threshold(group), model_norm)
            update_norms.append(update_norm.to(model_norm.device))
        self._record.shared = {
            "start": {"norm_sq_sum": state["norm_sq_sum"].clone()},
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
        b0_sq = _initial_sum(group)
        for p in params:
            state = self.state[p]
            if "step" not in state:
                device = p.device if group["fused"] else "cpu"
                state["step"] = torch.tensor(0.0, dtype=torch.float32, device=device)
            if not group["norm"] and "sum" not in state:
                state["sum"] = torch.full_like(p, b0_sq, memory_format=torch.preserve_format)
        if group["norm"]:
            self._init_group_state(group, params)
            scalars = self._group_scalars(group)
            sums = [scalars["norm_sq_sum"]]
        else:
            sums = [self.state[p]["sum"] for p in params]
        stats = clip_adagrad(
            params, grads, sums, [self.state[p]["step"] for p in params],
            lr=group["lr"], norm=group["norm"], delay=group["delay"], clip=group["clip"],
            max_norm=self._threshold(group), eps=group["eps"],
            weight_decay=group["weight_decay"], foreach=group["foreach"], norms=norms,
            lr_decay=group["lr_decay"], maximize=group["maximize"], fused=group["fused"],
            total_norm=model_norm, group_update_norm=self._shared_update_norm(group),
        )
        if group["norm"]:
            self._store_group_scalars(group, scalars)
        return stats


def _initial_sum(hp: Mapping[str, Any]) -> float:
    """The accumulator's start ``b_0^2``: ``initial_accumulator_value`` if given, else ``b0**2``."""
    initial = hp.get("initial_accumulator_value")
    return hp["b0"] ** 2 if initial is None else initial


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per run: the accumulator ``b0^2`` (per coordinate, or with ``norm=True`` one scalar per
    run, float64 for float64 iterates, else float32); shared: the step counter."""
    b0_sq = _initial_sum(hp)
    if hp["norm"]:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        state = {"norm_sq_sum": torch.full((x.shape[0],), b0_sq, dtype=dtype, device=x.device)}
    else:
        state = {"sum": torch.full_like(x, b0_sq)}
    return state, {"step": torch.tensor(0.0, dtype=torch.float32)}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    def core(x: Tensor, g: Tensor, accumulator: Tensor) -> ClipStats:
        return clip_adagrad(
            [x], [g], [accumulator], [shared["step"]],
            lr=lr, norm=hp["norm"], delay=hp["delay"], clip=hp["clip"], max_norm=threshold,
            eps=hp["eps"], weight_decay=hp["weight_decay"], foreach=False,
            lr_decay=hp["lr_decay"], maximize=hp["maximize"],
        )

    return core


register_optimizer(
    "clip_adagrad", ClipAdaGrad, VectorizedRule(_init_runs, _run_core, threshold_key="max_norm")
)
