"""A fixed, seeded random projection that keeps noise vectors small enough to store.

The vector-mode tail index needs norms of sums of noise vectors, ``||xi_1 + ... + xi_K1||``, so
the vectors (not only their norms) must be kept; a model with ``d`` parameters would need
``n d`` floats. A linear map ``P: R^d -> R^k`` with ``E||P x||^2 = ||x||^2`` commutes with the
sums (``P(sum xi) = sum P xi``) and, by the Johnson-Lindenstrauss lemma, keeps every norm of a
set of ``N`` vectors within a factor ``1 +- eps`` with high probability once
``k >= C log(N) / eps^2``; for one vector the relative error of ``||Px||^2`` has standard
deviation ``sqrt(2/k)`` (9% at ``k = 256``). The tail index is a difference of mean log-norms,
so this error enters only as a small symmetric perturbation of each log-norm, and
heavy-tailedness (a few huge norms) survives any fixed ``1 +- eps`` distortion.

* ``d <= k``: the identity, the vectors are kept exactly.
* ``k d <= dense_limit``: a dense Gaussian ``P`` with iid ``N(0, 1/k)`` entries.
* larger models: a sparse sign sketch (Clarkson and Woodruff 2013; the sparse JL family of
  Kane and Nelson 2014): coordinate ``i`` goes to bucket ``h(i)`` with sign ``s(i) = +-1``,
  ``(P x)_b = sum_{h(i)=b} s(i) x_i``. Also ``E||Px||^2 = ||x||^2`` with relative variance at
  most ``2/k``; it costs ``O(d)`` per vector and ``d`` bytes of state instead of ``k d`` floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PROJECTION_KINDS = ("identity", "gaussian", "sketch")
DENSE_LIMIT = 1 << 24  # 16M entries, 64 MiB in float32


class RandomProjection:
    """``P: R^dim -> R^k`` with ``k = min(projection_dim, dim)``, fixed by ``seed``.

    Call it on a tensor of shape ``(..., dim)``; the result has shape ``(..., k)`` in float32
    (float64 inputs stay float64). ``kind`` is ``"identity"``, ``"gaussian"`` or ``"sketch"``
    (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        projection_dim: int = 256,
        seed: int = 0,
        *,
        device: torch.device | str | None = None,
        dense_limit: int = DENSE_LIMIT,
    ) -> None:
        if dim < 1:
            raise ValueError(f"Invalid dim: {dim}; allowed: an integer >= 1")
        if projection_dim < 1:
            raise ValueError(f"Invalid projection_dim: {projection_dim}; allowed: an integer >= 1")
        self.dim = int(dim)
        self.k = min(int(projection_dim), self.dim)
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.matrix: Tensor | None = None
        self.bucket: Tensor | None = None
        self.sign: Tensor | None = None
        if self.dim <= projection_dim:
            self.kind = "identity"
        elif self.k * self.dim <= dense_limit:
            self.kind = "gaussian"
            self.matrix = (torch.randn(self.k, self.dim, generator=generator) / math.sqrt(self.k)).to(device)
        else:
            self.kind = "sketch"
            self.bucket = torch.randint(0, self.k, (self.dim,), generator=generator).to(device)
            sign = torch.randint(0, 2, (self.dim,), generator=generator, dtype=torch.int8) * 2 - 1
            self.sign = sign.to(device)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"Invalid x: last dimension {x.shape[-1]}; allowed: {self.dim}")
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        if self.kind == "identity":
            return x.clone()
        if self.kind == "gaussian":
            return x @ self.matrix.to(x.device, dtype).T  # type: ignore[union-attr]
        flat = x.reshape(-1, self.dim) * self.sign.to(x.device, dtype)  # type: ignore[union-attr]
        out = torch.zeros(flat.shape[0], self.k, dtype=dtype, device=x.device)
        out.index_add_(1, self.bucket.to(x.device), flat)  # type: ignore[union-attr]
        return out.reshape(*x.shape[:-1], self.k)
