"""ACClip: adaptive coordinate-wise clipping of the momentum (Algorithm 1 of Zhang et al.).

Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra, "Why are Adaptive Methods Good for
Attention Models?", NeurIPS 2020, Algorithm 1. With ``m_0 = 0``, ``tau_0 = 0``, step size
``eta`` (``lr``) and moment exponent ``alpha`` (all operations elementwise)::

    x_{k-1} <- x_{k-1} (1 - eta wd)                       (decoupled weight decay, as AdamW)
    m_k       = beta_1 m_{k-1} + (1 - beta_1) g_k
    tau_k^alpha = beta_2 tau_{k-1}^alpha + (1 - beta_2) |g_k|^alpha
    ghat_k    = min(tau_k / (|m_k| + eps), 1) m_k
    x_k       = x_{k-1} - eta ghat_k

The clipping threshold ``tau_k`` is an EMA estimate of the ``alpha``-th moment of each
coordinate of the gradient; the state holds ``m_k`` (``"exp_avg"``) and ``tau_k^alpha``
(``"tau_alpha"``), and ``tau_k = (tau_k^alpha)^(1/alpha)`` is recomputed each step. The paper
uses ``alpha = 1``, lr 1e-4, betas (0.9, 0.99), eps 1e-5, weight decay 1e-5.

This is the paper's rule, not the public implementation's variant, which also divides the
clipped momentum by an Adam-style ``sqrt(beta_2 v_k) + eps`` and defaults to ``alpha = 2``:
here the step scales with the gradient (``ghat_k`` is homogeneous in ``g`` when ``eps`` is
negligible), as for clipped SGD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from tailclip.clip import ClipStats, tensor_norms
from tailclip.optim._base import (
    ClipOptimizer,
    check_betas,
    check_flag,
    check_lr,
    check_nonnegative,
    check_positive,
    unsupported,
)
from tailclip.optim._kernels import cpu_blocks, signed
from tailclip.optim._registry import VectorizedRule, register_optimizer


def acclip(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    tau_alphas: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    alpha: float,
    weight_decay: float,
    foreach: bool,
    norms: Tensor | None = None,
    maximize: bool = False,
) -> ClipStats:
    """Functional ACClip; updates ``params``, ``exp_avgs`` (``m``) and ``tau_alphas`` in place.

    ``exp_avgs`` and ``tau_alphas`` start as zeros (``m_0 = 0``, ``tau_0^alpha = 0``).
    ``norms`` are the per-tensor norms of ``grads`` if already known.

    Returns statistics with ``grad_norm = ||g_k||`` (the group's raw gradient) and
    ``clipped_norm = ||ghat_k||``, the norm of the applied direction
    ``min(tau_k / (|m_k| + eps), 1) m_k``. Their ratio ``clip_factor`` is a summary only: it
    compares the clipped momentum with the current gradient and may exceed 1.
    """
    grads = signed(grads, maximize, foreach)
    if norms is None:
        norms = tensor_norms(grads, foreach)
    grad_norm = torch.linalg.vector_norm(norms)
    if foreach:
        direction_norms = []
        for _, (p, g, m, v) in cpu_blocks([params, grads, exp_avgs, tau_alphas]):
            d = _foreach_directions(p, g, m, v, lr, beta1, beta2, eps, alpha, weight_decay)
            torch._foreach_add_(p, d, alpha=-lr)
            direction_norms += tensor_norms(d, True).unbind()
        clipped_norm = torch.linalg.vector_norm(torch.stack(direction_norms))
        return ClipStats.of(grad_norm, clipped_norm)
    directions = []
    for p, g, m, v in zip(params, grads, exp_avgs, tau_alphas, strict=True):
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        if alpha == 2:
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            tau = v.sqrt()
        else:
            moment = g.abs()
            if alpha != 1:
                moment.pow_(alpha)
            v.lerp_(moment, 1 - beta2)
            tau = v if alpha == 1 else v.pow(1 / alpha)
        denominator = m.abs().add_(eps)
        torch.maximum(denominator, tau, out=denominator)
        d = torch.div(tau, denominator).mul_(m)
        p.add_(d, alpha=-lr)
        directions.append(d)
    clipped_norm = torch.linalg.vector_norm(tensor_norms(directions, foreach))
    return ClipStats.of(grad_norm, clipped_norm)


def _foreach_directions(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    tau_alphas: list[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    alpha: float,
    weight_decay: float,
) -> list[Tensor]:
    """Multi-tensor form of the loop in :func:`acclip`: decay, moments, and ``ghat_k``.

    ``min(tau / (|m| + eps), 1) = tau / max(|m| + eps, tau)`` (the same number: both sides are
    ``tau / (|m| + eps)`` or exactly 1), which takes one pass less than the clamp.
    """
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    if alpha == 2:
        torch._foreach_mul_(tau_alphas, beta2)
        torch._foreach_addcmul_(tau_alphas, grads, grads, value=1 - beta2)
        taus = list(torch._foreach_sqrt(tau_alphas))
    else:
        moments = torch._foreach_abs(grads)
        if alpha != 1:
            torch._foreach_pow_(moments, alpha)
        torch._foreach_lerp_(tau_alphas, moments, 1 - beta2)
        taus = tau_alphas if alpha == 1 else list(torch._foreach_pow(tau_alphas, 1 / alpha))
    denominators = torch._foreach_abs(exp_avgs)
    torch._foreach_add_(denominators, eps)
    torch._foreach_maximum_(denominators, taus)
    directions = list(torch._foreach_div(taus, denominators))
    torch._foreach_mul_(directions, exp_avgs)
    return directions


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 2.0:
        raise ValueError(
            f"Invalid alpha: {alpha!r}; allowed: 0 < alpha <= 2 (the paper's moment exponent range)"
        )


class ACClip(ClipOptimizer):
    """Adaptive coordinate-wise clipping of the momentum, Algorithm 1 of Zhang et al. (2020).

    ``x -= lr min(tau / (|m| + eps), 1) m`` with ``m`` the EMA of ``g`` and ``tau^alpha`` the
    EMA of ``|g|^alpha``; decoupled weight decay ``x <- x (1 - lr wd)`` first.

    Args:
        params: parameters or param groups.
        lr: step size ``eta`` (>= 0); paper 1e-4.
        betas: ``(beta_1, beta_2)`` in [0, 1), the EMA factors of ``m`` and ``tau^alpha``.
        eps: added to ``|m|`` in the clipping ratio (> 0).
        alpha: moment exponent of the threshold estimate, in (0, 2]; the paper's tail index
            range is (1, 2] and it found ``alpha = 1`` best.
        weight_decay: decoupled decay factor (>= 0), as ``torch.optim.AdamW``.
        maximize: ascend: ``-g_k`` takes the gradient's place.
        fused: no fused kernel: ``True`` is rejected (accepted for torch.optim signatures).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.
        nonfinite: ``"raise"`` or ``"skip"`` a step whose gradient holds NaN/Inf.

    State per parameter: ``"exp_avg"`` (``m_k``) and ``"tau_alpha"`` (``tau_k^alpha``, not
    ``tau_k``). After a step, ``group_stats`` hold ``grad_norm = ||g||`` and
    ``clipped_norm = ||min(tau / (|m| + eps), 1) m||``.

    References: Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra, "Why are Adaptive Methods
    Good for Attention Models?", NeurIPS 2020.
    """

    FORMAT_1_OPTIONS = {"maximize": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-5,
        alpha: float = 1.0,
        weight_decay: float = 1e-5,
        *,
        maximize: bool = False,
        foreach: bool | None = True,
        fused: bool | None = False,
        nonfinite: str = "raise",
    ) -> None:
        if fused:
            unsupported("fused", fused, f"{type(self).__name__} has no fused kernel; allowed: False or None")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, alpha=alpha, weight_decay=weight_decay)
        super().__init__(params, {**defaults, "maximize": maximize}, foreach=foreach is not False,
                         nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_flag("maximize", group["maximize"])
        check_betas(group["betas"])
        check_positive("eps", group["eps"])
        _check_alpha(group["alpha"])
        check_nonnegative("weight_decay", group["weight_decay"])

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        """Per-coordinate clipping has no model-wide quantity: ``model_norm`` is always ``None``."""
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["tau_alpha"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        return acclip(
            params, grads,
            [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["tau_alpha"] for p in params],
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], alpha=group["alpha"],
            weight_decay=group["weight_decay"], foreach=group["foreach"], norms=norms,
            maximize=group["maximize"],
        )


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per run: ``exp_avg`` (``m_0 = 0``) and ``tau_alpha`` (``tau_0^alpha = 0``)."""
    return {"exp_avg": torch.zeros_like(x), "tau_alpha": torch.zeros_like(x)}, {}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    beta1, beta2 = hp["betas"]

    def core(x: Tensor, g: Tensor, exp_avg: Tensor, tau_alpha: Tensor) -> ClipStats:
        return acclip(
            [x], [g], [exp_avg], [tau_alpha],
            lr=lr, beta1=beta1, beta2=beta2, eps=hp["eps"], alpha=hp["alpha"],
            weight_decay=hp["weight_decay"],
            foreach=False, maximize=hp["maximize"],
        )

    return core


register_optimizer("acclip", ACClip, VectorizedRule(_init_runs, _run_core))
