"""Local smoothness along a training trajectory ((L0, L1)-smoothness probe).

Zhang, He, Sra and Jadbabaie (ICLR 2020) observe that the local smoothness of neural-network
losses grows with the gradient norm, ``L(x) <= L0 + L1 ||grad F(x)||``, which is why clipped and
normalized steps beat fixed steps. After a step ``d = x_{t+1} - x_t`` the probe estimates::

    L_t = max_{gamma in {1/4, 1/2, 3/4, 1}} ||grad F(x_t + gamma d) - grad F(x_t)|| / (gamma ||d||)

with ``grad F`` the gradient of the loss averaged over a fixed list of batches (the same data at
every point, so ``F`` is one deterministic function). Plotting ``L_t`` against
``||grad F(x_t)||`` over training shows the (L0, L1) relation (their Figure 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tailclip.noise._model import (
    LossFn,
    batch_gradient,
    flat_parameters,
    model_device,
    move_to,
    preserved_state,
    seed_rng,
    set_flat_parameters,
    trainable_parameters,
)
from tailclip.noise.batches import Batch

DEFAULT_GAMMAS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class SmoothnessProbe:
    """``smoothness`` is ``L_t``; ``grad_norm`` is ``||grad F(x_t)||``; ``ratios[i]`` is the
    difference quotient at ``gammas[i]``; ``step_norm`` is ``||d||``."""

    smoothness: float
    grad_norm: float
    step_norm: float
    gammas: tuple[float, ...]
    ratios: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_vector(x: Tensor | Sequence[Tensor], name: str, dim: int, device: torch.device) -> Tensor:
    vector = x if isinstance(x, Tensor) else torch.cat([t.detach().reshape(-1) for t in x])
    vector = vector.detach().reshape(-1)
    if vector.numel() != dim:
        raise ValueError(f"Invalid {name}: {vector.numel()} entries; allowed: {dim} (trainable parameters)")
    return vector.to(device)


def _mean_gradient(
    model: nn.Module, loss_fn: LossFn, batches: list[Batch], params: list[Tensor], seed: int
) -> Tensor:
    total = None
    for i, batch in enumerate(batches):
        seed_rng(model, seed + i)  # the same dropout masks at every point when train=True
        g = batch_gradient(model, loss_fn, batch, params).double()
        total = g if total is None else total + g
    return total / len(batches)  # type: ignore[operator]


def smoothness_probe(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    x_t: Tensor | Sequence[Tensor],
    x_next: Tensor | Sequence[Tensor],
    *,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    train: bool = False,
    seed: int = 0,
) -> SmoothnessProbe:
    """Estimate ``L_t`` between parameters ``x_t`` and ``x_next`` (see the module docstring).

    ``batches``: a fixed list of ``(inputs, target)`` batches defining ``F``. ``x_t`` and
    ``x_next``: flat vectors of the trainable parameters (as from
    :func:`tailclip.noise.flat_parameters`) or lists of tensors in ``model.parameters()``
    order. The model is evaluated in eval mode, or with ``train=True`` in training mode with
    the same dropout masks at every point. Parameters, modes, buffers and the RNG are restored.
    """
    if not batches:
        raise ValueError("Invalid batches: empty; allowed: a non-empty list of (inputs, target) batches")
    if not gammas or any(not 0.0 < g <= 1.0 for g in gammas):
        raise ValueError(f"Invalid gammas: {tuple(gammas)}; allowed: a non-empty list of values in (0, 1]")
    params = [p for _, p in trainable_parameters(model)]
    device = model_device(model)
    dim = sum(p.numel() for p in params)
    start = _as_vector(x_t, "x_t", dim, device)
    step = _as_vector(x_next, "x_next", dim, device) - start
    step_norm = float(torch.linalg.vector_norm(step, dtype=torch.float64))
    if step_norm == 0.0:
        raise ValueError("Invalid x_next: equal to x_t; allowed: parameters after a nonzero step")
    moved = [move_to(b, device) for b in batches]
    saved = flat_parameters(model)
    try:
        with preserved_state(model, seed):
            model.train(train)
            set_flat_parameters(model, start)
            base = _mean_gradient(model, loss_fn, moved, params, seed)
            ratios = []
            for gamma in gammas:
                set_flat_parameters(model, start + gamma * step)
                diff = _mean_gradient(model, loss_fn, moved, params, seed) - base
                ratios.append(float(torch.linalg.vector_norm(diff)) / (gamma * step_norm))
    finally:
        set_flat_parameters(model, saved)
    smoothness = max(ratios) if all(math.isfinite(r) for r in ratios) else math.nan
    grad_norm = float(torch.linalg.vector_norm(base))
    return SmoothnessProbe(smoothness, grad_norm, step_norm, tuple(float(g) for g in gammas), tuple(ratios))
