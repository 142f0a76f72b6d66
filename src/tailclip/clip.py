"""Clipping operators shared by every tailclip optimizer, and adaptive threshold policies.

The operators follow ``../shared/papers.md`` (tailclip's contract), for a group of gradient
tensors ``g = (g_1, ..., g_K)`` and a threshold ``tau > 0``:

* ``"global"``: ``g * min(1, tau / ||g||)`` with ``||g||^2 = sum_k ||g_k||^2`` (GClip). In an
  optimizer, ``||g||`` is the model-wide norm: every parameter of every param group whose mode
  is ``"global"`` (as ``torch.nn.utils.clip_grad_norm_(model.parameters())``).
* ``"group"``: the same operator with ``||g||`` over the tensors given, in an optimizer the
  param group's own tensors.
* ``"layer"``: ``g_k * min(1, tau / ||g_k||)`` for each tensor (the repositories' "local").
* ``"coord"``: ``clamp(g, -tau, tau)`` elementwise (CClip).
* ``None``: no clipping.

A zero gradient keeps factor 1: ``tau / 0 = inf`` is clamped to 1, so no branch and no
host synchronisation is needed (as ``torch.nn.utils.clip_grad_norm_``). Norms are taken once
per tensor with ``torch._foreach_norm`` and combined, never inside a per-parameter loop, and
accumulated in float32 (float64 for float64 tensors) so bfloat16 gradients do not lose the norm.

The split API ``total_norm`` + ``clip_grads_with_norm_`` lets sharded or pipeline-parallel
setups reduce the norm across ranks themselves before scaling.

This module imports nothing but torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ClipMode = Literal["global", "group", "layer", "coord"] | None
CLIP_MODES: tuple[ClipMode, ...] = ("global", "group", "layer", "coord", None)
NORM_MODES = ("global", "group", "layer")  # the modes that clip by a norm (clip_coefficients)

__all__ = [
    "CLIP_MODES",
    "AutoClip",
    "ClipMode",
    "ClipStats",
    "ThresholdPolicy",
    "ZClip",
    "check_clip_mode",
    "check_max_norm",
    "clip_coefficients",
    "clip_grads_",
    "clip_grads_with_norm_",
    "clip_tensors",
    "clip_tensors_unchecked",
    "clip_threshold",
    "scaled_tensor_norms",
    "tensor_norms",
    "total_norm",
]


def check_clip_mode(mode: object, name: str = "clip") -> ClipMode:
    """Return ``mode`` if it is a clipping mode, else raise a one-line ``ValueError``."""
    if mode not in CLIP_MODES:
        raise ValueError(
            f"Invalid {name}: {mode!r}; allowed: 'global', 'group', 'layer', 'coord' or None"
        )
    return mode  # type: ignore[return-value]


def device_dtype_buckets(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in order of first appearance.

    A multi-tensor (``_foreach``) call takes one such bucket; the optimizers' kernels
    (:mod:`tailclip.optim._kernels`) group by it too.
    """
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return list(buckets.values())


def _accumulation_dtype(tensors: list[Tensor]) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# CPU tensors of at least ROW_NORM_NUMEL elements are normed as NORM_ROWS rows, then the row
# norms combined: torch reduces a flat tensor on one thread but the rows of a 2-D one in
# parallel (7.8 ms instead of 13.6 ms for one tensor of 91.6M float32 on 2 threads). A
# fixed row count keeps the result independent of the number of threads.
ROW_NORM_NUMEL = 1 << 18
NORM_ROWS = 16


def _norm(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``||t||`` accumulated in ``dtype``; large contiguous CPU tensors row by row."""
    n = t.numel()
    if n < ROW_NORM_NUMEL or not t.is_cpu or not t.is_contiguous():
        return torch.linalg.vector_norm(t, dtype=dtype)
    flat = t.view(-1)
    body = n - n % NORM_ROWS
    rows = torch.linalg.vector_norm(flat[:body].view(NORM_ROWS, -1), dim=1, dtype=dtype)
    if body < n:
        rows = torch.cat([rows, torch.linalg.vector_norm(flat[body:], dtype=dtype).reshape(1)])
    return torch.linalg.vector_norm(rows)


def tensor_norms(tensors: list[Tensor], foreach: bool = True) -> Tensor:
    """Euclidean norm of each tensor, stacked into a 1-D tensor (float32, or float64).

    One read of every tensor. With ``foreach`` the norms of small tensors come from
    ``torch._foreach_norm`` per (device, dtype) bucket; large CPU tensors are normed row by row
    on all threads (:data:`ROW_NORM_NUMEL`), on both paths. The result lives on the device of
    ``tensors[0]``.
    """
    if not tensors:
        return torch.zeros(0)
    dtype = _accumulation_dtype(tensors)
    device = tensors[0].device
    if not foreach:
        return torch.stack([_norm(t, dtype).to(device) for t in tensors])
    norms: list[Tensor | None] = [None] * len(tensors)
    small = []
    for i, t in enumerate(tensors):
        if t.is_cpu and t.numel() >= ROW_NORM_NUMEL:
            norms[i] = _norm(t, dtype).to(device)
        else:
            small.append(i)
    for bucket in device_dtype_buckets([tensors[i] for i in small]):
        index = [small[k] for k in bucket]
        bucket_norms = torch._foreach_norm([tensors[i] for i in index], 2, dtype=dtype)
        for i, n in zip(index, bucket_norms):
            norms[i] = n.to(device)
    return torch.stack(norms)  # type: ignore[arg-type]


def scaled_tensor_norms(tensors: list[Tensor]) -> Tensor:
    """Euclidean norm of each tensor in float64, finite for every finite tensor.

    ``||t|| = m ||t / m||`` with ``m = max |t_i|``: nothing is squared past its range (a float32
    gradient of 1e30 has a norm of float32 range whose square overflows float32, about 2e19,
    and float64 gradients past 1e154 would overflow a float64 square). Slower than
    :func:`tensor_norms` (float64 arithmetic, two reads): the optimizers call it only for a
    step whose :func:`tensor_norms` came out non-finite, to tell an overflow from NaN/Inf.
    """
    norms = []
    for t in tensors:
        wide = t.detach().to(torch.float64)
        largest = wide.abs().amax() if wide.numel() else torch.zeros((), dtype=torch.float64, device=t.device)
        scale = torch.where(largest > 0, largest, torch.ones_like(largest))
        norms.append((scale * torch.linalg.vector_norm(wide / scale)).to(tensors[0].device))
    return torch.stack(norms)


def total_norm(tensors: Iterable[Tensor], foreach: bool = True) -> Tensor:
    """``||g|| = sqrt(sum_k ||g_k||^2)`` over all tensors, as a 0-dim tensor.

    Accepts gradients or parameters (their ``.grad`` is *not* taken: pass gradients).
    """
    tensors = list(tensors)
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(tensor_norms(tensors, foreach))


def check_max_norm(max_norm: object) -> None:
    """A clipping threshold: a number ``tau > 0``, a 0-dim tensor, or a :class:`ThresholdPolicy`.

    The one check of a threshold's value (a negative one would flip the gradients' sign): the
    public functions below call it, the optimizers call it in their constructors and
    ``add_param_group``. A tensor is taken as given (checking it would read it on the host).
    """
    if isinstance(max_norm, (Tensor, ThresholdPolicy)):
        return
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ValueError(
            f"Invalid max_norm: {max_norm!r}; allowed: max_norm > 0 (a number) or a ThresholdPolicy "
            "(AutoClip, ZClip)"
        )


def clip_threshold(max_norm: float | Tensor | ThresholdPolicy, grad_norm: Tensor) -> float | Tensor:
    """This step's ``tau``: ``max_norm`` itself, or an adaptive policy's ``tau_t`` for ``grad_norm``.

    ``grad_norm`` is the pre-clip norm of the quantity being clipped; the policy records it.
    """
    if isinstance(max_norm, ThresholdPolicy):
        return max_norm.threshold(grad_norm)
    return max_norm


def _ratio(tau: float | Tensor, norms: Tensor) -> Tensor:
    """``tau / norms`` by true division: a Python number over a tensor is computed by torch as
    ``tau * (1 / norms)``, which gives 0.99999994 for ``tau == ||g||`` (a spurious clip)."""
    if not isinstance(tau, Tensor):
        tau = torch.full_like(norms, tau)
    return tau / norms


def clip_coefficients(
    norms: Tensor,
    mode: ClipMode,
    threshold: float | Tensor | ThresholdPolicy,
    total_norm: Tensor | None = None,
) -> tuple[list[Tensor], ClipStats]:
    """Factors ``c_k`` of norm clipping, ``u_k = c_k g_k``, from the tensor norms ``||g_k||``.

    ``"global"`` and ``"group"``: ``c_k = min(1, tau / N)`` with ``N = total_norm`` if given
    (the model-wide norm, of which these tensors are a part) and otherwise
    ``N = ||g|| = sqrt(sum_k ||g_k||^2)``; ``"layer"``: ``c_k = min(1, tau / ||g_k||)``. The
    statistics are those of these tensors: ``||g||`` before and ``||u||`` after.
    ``tau / 0 = inf`` clamps to 1 and a NaN norm stays NaN, with no branch and no host
    synchronisation. Returns one 0-dim factor per tensor (in the norms' dtype and device) and
    the group's :class:`ClipStats`. An adaptive ``threshold`` is resolved on the norm clipped by
    (``N``, or ``||g_k||``) (:func:`clip_threshold`). Every clipping by a norm in
    tailclip takes its factors from here: :func:`clip_tensors_unchecked` scales by them, and
    the optimizers' foreach paths multiply them into their own first op instead of writing a
    clipped copy of every gradient. The threshold is not checked here (see
    :func:`check_max_norm`).
    """
    grad_norm = torch.linalg.vector_norm(norms)
    if mode in ("global", "group"):
        clipped_by = grad_norm if total_norm is None else total_norm
        coef = torch.clamp(_ratio(clip_threshold(threshold, clipped_by), clipped_by), max=1.0)
        return [coef] * norms.shape[0], ClipStats.of(grad_norm, grad_norm * coef)
    tau = clip_threshold(threshold, grad_norm)
    if mode == "layer":
        coefs = torch.clamp(_ratio(tau, norms), max=1.0)
        return list(coefs.unbind()), ClipStats.of(grad_norm, torch.linalg.vector_norm(norms * coefs))
    raise ValueError(f"Invalid mode: {mode!r}; allowed: 'global', 'group' or 'layer' (clipping by a norm)")


def clip_grads_with_norm_(
    tensors: Iterable[Tensor], max_norm: float | Tensor, norm: Tensor, foreach: bool = True
) -> None:
    """Scale ``tensors`` in place by ``min(1, max_norm / norm)`` for a given total ``norm``.

    The second half of the split API: compute ``norm`` with :func:`total_norm` (and reduce it
    across ranks if the tensors are sharded), then call this.
    """
    check_max_norm(max_norm)
    tensors = list(tensors)
    if not tensors:
        return
    coef = torch.clamp(_ratio(max_norm, norm), max=1.0)  # tau / 0 = inf clamps to 1
    if foreach:
        for index in device_dtype_buckets(tensors):
            group = [tensors[i] for i in index]
            torch._foreach_mul_(group, coef.to(group[0].device))
    else:
        for t in tensors:
            t.mul_(coef.to(t.device))  # the coefficient keeps its precision, as in the foreach path


@dataclass
class ClipStats:
    """Statistics of one clipping of a group, all 0-dim tensors (no host sync to make them).

    ``grad_norm`` is the norm *before* clipping, ``clipped_norm`` the norm *after*;
    ``clip_factor = clipped_norm / grad_norm`` (1 for a zero gradient) and ``clipped`` is
    ``clip_factor < 1``. For ``"layer"`` and ``"coord"`` the factor is the ratio of the
    group norms, a summary of the per-tensor or per-coordinate factors.
    """

    grad_norm: Tensor
    clipped_norm: Tensor
    clip_factor: Tensor
    clipped: Tensor

    @staticmethod
    def of(grad_norm: Tensor, clipped_norm: Tensor) -> ClipStats:
        factor = torch.where(grad_norm > 0, clipped_norm / grad_norm, torch.ones_like(grad_norm))
        return ClipStats(grad_norm, clipped_norm, factor, factor < 1)

    @staticmethod
    def combine(stats: list[ClipStats]) -> ClipStats:
        """Statistics of the union of several groups (norms add in squares)."""
        if not stats:
            zero = torch.zeros(())
            return ClipStats.of(zero, zero)
        grad = torch.linalg.vector_norm(torch.stack([s.grad_norm for s in stats]))
        clipped = torch.linalg.vector_norm(torch.stack([s.clipped_norm for s in stats]))
        return ClipStats.of(grad, clipped)


def clip_tensors(
    grads: list[Tensor],
    mode: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    foreach: bool = True,
    norms: Tensor | None = None,
) -> tuple[list[Tensor], ClipStats]:
    """Return ``u = clip(g; mode, max_norm)`` as new tensors (``grads`` untouched) and stats.

    ``norms`` may pass precomputed per-tensor norms of ``grads`` (from :func:`tensor_norms`)
    to avoid a second read. With ``mode=None`` the returned list *is* ``grads`` (no copy).
    Pure torch, no host synchronisation, no data-dependent branching: the per-tensor path
    (``foreach=False``) is usable under ``torch.func.vmap``. An adaptive ``max_norm``
    (:class:`ThresholdPolicy`) is fed the pre-clip norm of ``grads`` and gives this step's
    threshold (the policy keeps state: not for use under ``vmap``). Checks ``mode`` and
    ``max_norm``, then is :func:`clip_tensors_unchecked`.
    """
    check_clip_mode(mode)
    if mode is not None:
        check_max_norm(max_norm)
    return clip_tensors_unchecked(grads, mode, max_norm, foreach, norms)


def clip_tensors_unchecked(
    grads: list[Tensor],
    mode: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    foreach: bool = True,
    norms: Tensor | None = None,
    total_norm: Tensor | None = None,
) -> tuple[list[Tensor], ClipStats]:
    """:func:`clip_tensors` without its argument checks: the optimizers' functional cores call
    it with a mode and threshold their constructors validated (once, not at every step).
    ``total_norm``: the model-wide norm global clipping divides by (:func:`clip_coefficients`)."""
    if norms is None:
        norms = tensor_norms(grads, foreach)
    if mode in NORM_MODES:
        coefs, stats = clip_coefficients(norms, mode, max_norm, total_norm)
        return _scale(grads, coefs, foreach), stats
    grad_norm = torch.linalg.vector_norm(norms)
    tau = clip_threshold(max_norm, grad_norm)
    if mode is None:
        return grads, ClipStats.of(grad_norm, grad_norm)
    if isinstance(tau, Tensor):
        clipped = [torch.clamp(g, -tau.to(g.dtype), tau.to(g.dtype)) for g in grads]
    elif foreach and grads:
        clipped = torch._foreach_clamp_max(torch._foreach_clamp_min(grads, -tau), tau)
    else:
        clipped = [torch.clamp(g, -tau, tau) for g in grads]
    return clipped, ClipStats.of(grad_norm, torch.linalg.vector_norm(tensor_norms(clipped, foreach)))


def _scale(tensors: list[Tensor], coefs: list[Tensor], foreach: bool) -> list[Tensor]:
    """``[t * c for t, c]`` with each 0-dim coefficient cast to its tensor's dtype/device."""
    coefs = [c.to(t.device, t.dtype) for t, c in zip(tensors, coefs)]
    if foreach and tensors:
        return list(torch._foreach_mul(tensors, coefs))
    return [t * c for t, c in zip(tensors, coefs)]


def clip_grads_(
    params: Iterable[Tensor] | Tensor,
    mode: ClipMode = "global",
    max_norm: float | Tensor = 1.0,
    foreach: bool = True,
) -> Tensor:
    """Clip the ``.grad`` of ``params`` in place; return the total norm *before* clipping.

    A drop-in for ``torch.nn.utils.clip_grad_norm_`` (``mode="global"``) that also offers
    layer-wise and coordinate clipping. Parameters without a gradient are ignored.
    """
    check_clip_mode(mode, "mode")
    if isinstance(params, Tensor):
        params = [params]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    clipped, stats = clip_tensors(grads, mode, max_norm, foreach)
    if mode is not None:
        if foreach:
            torch._foreach_copy_(grads, clipped)
        else:
            for g, c in zip(grads, clipped):
                g.copy_(c)
    return stats.grad_norm


class ThresholdPolicy(ABC):
    """A clipping threshold that adapts to the history of gradient norms.

    ``threshold(grad_norm)`` returns the threshold ``tau_t`` for this step's pre-clip norm
    and records the observation; state is held in tensors and saved by ``state_dict``. Use
    with any optimizer through :meth:`clip_`, or pass the policy as ``max_norm`` to a
    tailclip optimizer with ``clip="global"``.
    """

    @abstractmethod
    def threshold(self, grad_norm: Tensor) -> Tensor:
        """Return ``tau_t`` for the pre-clip norm ``grad_norm`` and record the observation."""

    def clip_(self, params: Iterable[Tensor], foreach: bool = True) -> Tensor:
        """Global-norm clip of ``params``' gradients at the adaptive threshold; returns the norm."""
        if isinstance(params, Tensor):
            params = [params]
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros(())
        norm = total_norm(grads, foreach)
        clip_grads_with_norm_(grads, self.threshold(norm), norm, foreach)
        return norm

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in vars(self).items() if isinstance(v, Tensor)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            if not isinstance(getattr(self, key, None), Tensor):
                raise KeyError(f"Unknown state key for {type(self).__name__}: {key!r}")
            setattr(self, key, value.clone())


class AutoClip(ThresholdPolicy):
    """AutoClip (Seetharaman et al., 2020): clip at the ``percentile`` of all norms seen.

    ``tau_t = quantile_p({||g_1||, ..., ||g_t||})``: the current norm joins the history first,
    as in the paper. The history lives in a tensor (grown by one entry per step) so the policy
    needs no host synchronisation; ``history`` bounds it to the most recent norms if set.
    """

    def __init__(self, percentile: float = 10.0, history: int | None = None) -> None:
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"Invalid percentile: {percentile}; allowed: (0, 100]")
        if history is not None and history < 1:
            raise ValueError(f"Invalid history: {history}; allowed: an integer >= 1 or None")
        self.percentile = percentile
        self.history = history
        self.norms = torch.zeros(0)
        self.count = torch.zeros((), dtype=torch.int64)

    def threshold(self, grad_norm: Tensor) -> Tensor:
        norm = grad_norm.detach().reshape(1).to(self.norms.dtype if self.norms.numel() else torch.float32)
        self.norms = torch.cat([self.norms.to(norm.device), norm])
        if self.history is not None:
            self.norms = self.norms[-self.history :]
        self.count = self.count + 1
        return torch.quantile(self.norms, self.percentile / 100.0)


class ZClip(ThresholdPolicy):
    """ZClip (Kumar et al., 2025): clip norms whose z-score against an EMA exceeds ``z_thresh``.

    With EMA mean ``mu`` and variance ``sigma^2`` of past norms (smoothing ``alpha``), the
    threshold is ``tau_t = mu_{t-1} + z_thresh * sigma_{t-1}``; the first ``warmup`` steps
    only collect statistics (``tau = inf``) and initialise ``mu, sigma^2`` from their sample
    mean and variance. After that the EMA is updated with the *clipped* norm
    ``min(||g_t||, tau_t)``, so one spike does not inflate the statistics.
    """

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, warmup: int = 25) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"Invalid alpha: {alpha}; allowed: [0, 1)")
        if not z_thresh > 0.0:
            raise ValueError(f"Invalid z_thresh: {z_thresh}; allowed: > 0")
        if warmup < 1:
            raise ValueError(f"Invalid warmup: {warmup}; allowed: an integer >= 1")
        self.alpha = alpha
        self.z_thresh = z_thresh
        self.warmup = warmup
        self.count = torch.zeros((), dtype=torch.int64)
        self.mean = torch.zeros((), dtype=torch.float64)
        self.var = torch.zeros((), dtype=torch.float64)
        self.sum = torch.zeros((), dtype=torch.float64)
        self.sum_sq = torch.zeros((), dtype=torch.float64)

    def threshold(self, grad_norm: Tensor) -> Tensor:
        norm = grad_norm.detach().to(torch.float64)
        if self.mean.device != norm.device:
            for key in ("count", "mean", "var", "sum", "sum_sq"):
                setattr(self, key, getattr(self, key).to(norm.device))
        warming = self.count < self.warmup
        tau = torch.where(warming, math.inf, self.mean + self.z_thresh * self.var.sqrt())
        observed = torch.minimum(norm, tau)
        self.count = self.count + 1
        self.sum = self.sum + torch.where(warming, norm, 0.0)
        self.sum_sq = self.sum_sq + torch.where(warming, norm * norm, 0.0)
        n = self.count.to(torch.float64)
        warm_mean = self.sum / n
        warm_var = (self.sum_sq / n - warm_mean**2).clamp(min=0.0)
        ema_mean = self.alpha * self.mean + (1 - self.alpha) * observed
        ema_var = self.alpha * self.var + (1 - self.alpha) * (observed - ema_mean) ** 2
        self.mean = torch.where(warming, warm_mean, ema_mean)
        self.var = torch.where(warming, warm_var, ema_var)
        return tau.to(grad_norm.device, grad_norm.dtype)
