"""AGNI's functional core: the kernels of :class:`~tailclip.optim.noise_injection.NoiseInjection`.

The two variance estimators' updates (micro-batch sums ``S1``, ``S2`` and the sample standard
deviation; the EMA mean and variance with its weight sum ``W_t``), the noise arithmetic
``g += z * sqrt(eta) * r * ||g|| * sigma``, and :class:`NormalStream`, which hands out one flat
normal draw piece by piece. The math and its reference are in ``noise_injection``'s docstring;
each kernel works on lists of tensors, with a multi-tensor (``foreach``) path and a per-tensor
loop giving the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor


def accumulation_dtype(t: Tensor) -> torch.dtype:
    """The dtype AGNI keeps a tensor's buffers and noise in: float64 for float64, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def record_microbatch_(
    grads: list[Tensor], sums: list[Tensor], sums_sq: list[Tensor], foreach: bool
) -> None:
    """Record ``d = g - S1`` (``g`` the accumulated gradient, ``S1`` the previous one):
    ``S2 += d^2`` (in ``S2``'s dtype, float64), then ``S1 = g``."""
    if foreach and grads:
        current = [g.to(s.dtype) for g, s in zip(grads, sums, strict=True)]
        increments = torch._foreach_sub(current, sums)
        torch._foreach_addcmul_(sums_sq, increments, increments)
        torch._foreach_copy_(sums, current)
        return
    for g, s1, s2 in zip(grads, sums, sums_sq, strict=True):
        g = g.to(s1.dtype)
        d = g - s1
        s2.addcmul_(d, d)
        s1.copy_(g)


def microbatch_std_(sums: list[Tensor], sums_sq: list[Tensor], count: int, foreach: bool) -> list[Tensor]:
    """``sigma = sqrt(max(0, S2 - S1^2 / n) / (n - 1))`` for ``n = count >= 2``, written into ``S2``."""
    if foreach and sums:
        torch._foreach_addcmul_(sums_sq, sums, sums, value=-1.0 / count)
        torch._foreach_clamp_min_(sums_sq, 0.0)
        torch._foreach_mul_(sums_sq, 1.0 / (count - 1))
        torch._foreach_sqrt_(sums_sq)
        return sums_sq
    for s1, s2 in zip(sums, sums_sq, strict=True):
        s2.addcmul_(s1, s1, value=-1.0 / count).clamp_min_(0.0).mul_(1.0 / (count - 1)).sqrt_()
    return sums_sq


def ema_variance_update_(
    means: list[Tensor], variances: list[Tensor], grads: list[Tensor], betas: list[float], foreach: bool
) -> None:
    """``delta = g - mu``; ``mu += (1 - beta) delta``; ``s = beta (s + (1 - beta) delta^2)``.

    ``betas`` holds one factor per tensor (0 at a tensor's first observation: ``mu = g``, ``s = 0``).
    """
    weights = [1.0 - b for b in betas]
    if foreach and means:
        deltas = torch._foreach_sub(grads, means)
        torch._foreach_add_(means, torch._foreach_mul(deltas, weights))
        torch._foreach_addcmul_(variances, deltas, deltas, weights)
        torch._foreach_mul_(variances, betas)
        return
    for mean, var, g, w, b in zip(means, variances, grads, weights, betas, strict=True):
        delta = g - mean
        mean.add_(delta * w)
        var.addcmul_(delta, delta, value=w)
        var.mul_(b)


def ema_weight_sum_sq(steps: int, beta: float) -> float:
    """``W_t = sum_k w_k^2`` of the EMA weights after ``t = steps`` observations (``W_1 = 1``)."""
    decay = beta ** (2 * (steps - 1))
    return decay + (1.0 - beta) / (1.0 + beta) * (1.0 - decay)


def noise_factors(norms: Tensor, eta: float, rescale: Tensor | None) -> Tensor:
    """``sqrt(eta) * r_k * ||g_k||`` per tensor (``r_k = rescale[k]``, default 1)."""
    factors = norms * eta**0.5
    if rescale is not None:
        factors = factors * rescale.to(factors.device, factors.dtype)
    return factors


def add_noise_(
    grads: list[Tensor], sigmas: list[Tensor], normals: list[Tensor], factors: list[Tensor], foreach: bool
) -> None:
    """``z_k <- z_k * f_k * sigma_k`` (in ``normals``, their dtype), then ``g_k += z_k``: AGNI's
    noise ``n_k = z_k * sqrt(eta) * r_k * ||g_k|| * sigma_k`` for 0-dim factors
    ``f_k = sqrt(eta) * r_k * ||g_k||`` (:func:`noise_factors`) already in ``z_k``'s dtype."""
    if foreach and grads:
        torch._foreach_mul_(normals, factors)
        torch._foreach_mul_(normals, sigmas)
        torch._foreach_add_(grads, normals)
    else:
        for g, sigma, z, f in zip(grads, sigmas, normals, factors, strict=True):
            g.add_(z.mul_(f).mul_(sigma))


class NormalStream:
    """The values of one flat ``torch.randn(total)`` draw, handed out in consecutive pieces.

    torch's sampler pairs the values of a draw within aligned runs of 16 and redraws the last
    16 when the length is not a multiple of 16. Drawing in runs whose lengths are multiples of
    16, the last one at least 16 long (or the whole draw), therefore gives exactly the values of
    the flat draw, in order, without ever holding all of them: each piece is drawn when it is
    needed (a few values left over from a run wait for the next piece).
    """

    def __init__(
        self, total: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.undrawn = total
        self.generator = generator
        self.spare = torch.empty(0, device=device, dtype=dtype)

    def take(self, n: int) -> Tensor:
        """The next ``n`` values, a contiguous 1-D tensor."""
        need = n - self.spare.numel()
        if need > 0:
            size = min(self.undrawn, -(-need // 16) * 16)
            if self.undrawn - size < 16:
                size = self.undrawn
            if size < need:
                raise ValueError(f"Invalid take: {n} values; {self.spare.numel() + self.undrawn} left")
            drawn = torch.empty(self.spare.numel() + size, device=self.spare.device, dtype=self.spare.dtype)
            drawn[: self.spare.numel()].copy_(self.spare)
            drawn[self.spare.numel():].normal_(generator=self.generator)
            self.undrawn -= size
            self.spare = drawn
        out, self.spare = self.spare[:n], self.spare[n:]
        return out

    def take_like(self, tensors: list[Tensor]) -> list[Tensor]:
        """The next values, one piece shaped like each of ``tensors`` (in this stream's dtype)."""
        sizes = [t.numel() for t in tensors]
        flat = self.take(sum(sizes))
        return [chunk.view(t.shape) for chunk, t in zip(flat.split(sizes), tensors, strict=True)]
