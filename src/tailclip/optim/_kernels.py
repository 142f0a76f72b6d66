"""Kernels the update rules share that are not clipping: cache blocks, scaled adds, weight decay.

Clipping itself (thresholds, factors, clipped copies) is :mod:`tailclip.clip`; this module holds
the plumbing around it, written once: :func:`cpu_blocks` (run an update's op sequence block
by block on the CPU), :func:`add_scaled_` (``x += s t`` for a 0-dim tensor ``s``, one
multi-tensor call per device and dtype), :func:`per_tensor` (0-dim factors cast to each
tensor's dtype and device), :func:`coupled_decay` (``g + wd x``) and :func:`signed` (``-g`` for
``maximize``). Each is pure torch with
no host synchronisation; the per-tensor forms also run under ``torch.func.vmap``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tailclip.clip import ClipMode, ClipStats, ThresholdPolicy, clip_tensors_unchecked, device_dtype_buckets

__all__ = [
    "CPU_BLOCK_NUMEL",
    "add_scaled_",
    "clipped_for_torch",
    "coupled_decay",
    "cpu_blocks",
    "device_dtype_buckets",
    "per_tensor",
    "signed",
]

# Elements per block of :func:`cpu_blocks`: 1 MiB per float32 stream, so the few tensors an update
# touches stay in the CPU's L2/L3 cache between its operations.
CPU_BLOCK_NUMEL = 1 << 18


def cpu_blocks(
    lists: list[list[Tensor]], block_numel: int | None = None
) -> list[tuple[list[int], list[list[Tensor]]]]:
    """Cut parallel lists of equally shaped tensors into blocks of about ``block_numel`` elements.

    Each block is ``(index, pieces)``: ``pieces[j]`` holds views (aliasing the originals, so
    in-place updates land in them) of ``lists[j]``; piece ``k`` belongs to tensor ``index[k]``.
    On the CPU a foreach op is a loop over its tensors, one pass over memory per op; running an
    update's op sequence block by block instead keeps each block in cache between the ops. The
    results are the same elementwise ops on the same elements. Non-CPU lists (multi-tensor
    kernels) form a single block of whole tensors; non-contiguous tensors are never cut.
    """
    if not lists or not lists[0]:
        return []
    if not all(t.is_cpu for t in lists[0]):
        return [(list(range(len(lists[0]))), [list(tensors) for tensors in lists])]
    limit = CPU_BLOCK_NUMEL if block_numel is None else block_numel
    blocks: list[tuple[list[int], list[list[Tensor]]]] = []
    index: list[int] = []
    pieces: list[list[Tensor]] = [[] for _ in lists]
    filled = 0
    for i in range(len(lists[0])):
        row = [tensors[i] for tensors in lists]
        numel = row[0].numel()
        if numel <= limit or not all(t.is_contiguous() for t in row):
            cuts = [row]
        else:
            flats = [t.view(-1) for t in row]
            cuts = [[f[start:start + limit] for f in flats] for start in range(0, numel, limit)]
        for cut in cuts:
            index.append(i)
            for j, piece in enumerate(cut):
                pieces[j].append(piece)
            filled += cut[0].numel()
            if filled >= limit:
                blocks.append((index, pieces))
                index, pieces, filled = [], [[] for _ in lists], 0
    if index:
        blocks.append((index, pieces))
    return blocks


def add_scaled_(params: list[Tensor], tensors: list[Tensor], scale: Tensor, foreach: bool) -> None:
    """``params[k] += tensors[k] * scale`` for a 0-dim ``scale`` (one multi-tensor call per bucket)."""
    if foreach:
        for index in device_dtype_buckets(params):
            device = params[index[0]].device
            scaled = torch._foreach_mul([tensors[i] for i in index], scale.to(device))
            torch._foreach_add_([params[i] for i in index], scaled)
    else:
        for param, t in zip(params, tensors, strict=True):
            param.add_(t * scale.to(param.device))


def per_tensor(factors: list[Tensor], tensors: list[Tensor]) -> list[Tensor]:
    """0-dim ``factors[k]`` (e.g. :func:`tailclip.clip.clip_coefficients`) cast to ``tensors[k]``'s
    dtype and device, ready for a multi-tensor multiply."""
    return [c.to(t.device, t.dtype) for t, c in zip(tensors, factors, strict=True)]


def coupled_decay(
    grads: list[Tensor], params: list[Tensor], weight_decay: float, foreach: bool
) -> list[Tensor]:
    """``g_k + wd x_k`` as new tensors (coupled L2 weight decay, as ``torch.optim.SGD``)."""
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=weight_decay))
    return [g.add(p, alpha=weight_decay) for g, p in zip(grads, params, strict=True)]


def signed(grads: list[Tensor], maximize: bool, foreach: bool) -> list[Tensor]:
    """``-g_k`` as new tensors when ``maximize`` (ascent, as ``torch.optim``'s ``maximize``), else
    ``grads``. Negation is exact, so negating first gives torch's numbers bit for bit."""
    if not maximize:
        return grads
    if foreach:
        return list(torch._foreach_neg(grads))
    return [torch.neg(g) for g in grads]


def clipped_for_torch(
    params: list[Tensor],
    grads: list[Tensor],
    *,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    weight_decay: float,
    maximize: bool,
    norms: Tensor | None,
    total_norm: Tensor | None,
) -> tuple[list[Tensor], ClipStats, float, bool]:
    """What a coupled-decay rule hands to torch's own kernel (fused SGD, fused Adagrad).

    Without clipping: the raw gradients, with torch's ``weight_decay`` and ``maximize``. With
    clipping: the clipped ``u_t = clip(s g_t + wd x_t)`` (``s = -1`` with ``maximize``), with
    decay and ``maximize`` already in it, so torch gets ``0.0`` and ``False``. Returns the
    tensors, the clipping statistics, and torch's ``weight_decay`` and ``maximize``.
    """
    if clip is None:
        _, stats = clip_tensors_unchecked(grads, None, max_norm, True, norms)
        return grads, stats, weight_decay, maximize
    updates = signed(grads, maximize, True)
    if weight_decay != 0:
        updates, norms = coupled_decay(updates, params, weight_decay, True), None
    updates, stats = clip_tensors_unchecked(updates, clip, max_norm, True, norms, total_norm)
    return updates, stats, 0.0, False
