"""Noise families for synthetic heavy-tailed problems, sampled in torch from a ``torch.Generator``.

Each sampler returns a tensor of the requested shape, every entry an independent draw:

* ``stable``: alpha-stable with skewness ``beta`` by Chambers, Mallows and Stuck (1976), in the
  S1 parametrisation with unit scale (scipy's ``levy_stable`` default). For ``beta = 0``,
  ``X = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / W)^((1 - alpha)/alpha)`` with
  ``V ~ U(-pi/2, pi/2)``, ``W ~ Exp(1)``. Moments of order ``p < alpha`` are finite; alpha = 2 is
  Gaussian with variance 2.
* ``pareto``: symmetric Pareto type, density ``alpha/2 (1 + |x|)^-(1 + alpha)`` (|x| is Lomax with
  shape alpha: ``U^(-1/alpha) - 1``). The clipped-Adam repository's ``3/4 (1 + |x|)^-2.5`` is
  ``alpha = 1.5``. Moments of order ``p < alpha`` are finite.
* ``student_t``: Student's t with ``df`` degrees of freedom by Bailey's polar method (1994), exact
  and driven by uniforms only, so it takes a generator.
* ``gaussian``: standard normal.
* ``skewed``: mean-zero and asymmetric: a one-sided Lomax(alpha) draw minus its mean
  ``1/(alpha - 1)`` (alpha > 1), for the clipping-bias experiment of Koloskova et al. (2023).

``isotropic_stable_vectors`` gives rotation-invariant heavy-tailed vectors (a Gaussian direction
scaled by a positive stable variable: the sub-Gaussian alpha-stable law), as opposed to
independent coordinates. ``sample_noise_vectors`` gives the noise vectors of the quadratic tasks:
independent coordinates, or a uniformly random direction whose length is one draw of the family.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NOISE_FAMILIES = ("stable", "pareto", "student_t", "gaussian", "skewed")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
    """U(0, 1) draws that are never exactly 0 (safe for logs and negative powers)."""
    u = torch.rand(shape, generator=generator, dtype=dtype)
    return u.clamp_(min=torch.finfo(dtype).tiny)


def sample_stable(
    shape: tuple[int, ...],
    alpha: float,
    beta: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """alpha-stable draws (S1, unit scale) by Chambers-Mallows-Stuck; alpha in (0, 2], beta in [-1, 1]."""
    if not 0.0 < alpha <= 2.0:
        raise ValueError(f"Invalid alpha: {alpha}; allowed: 0 < alpha <= 2")
    if not -1.0 <= beta <= 1.0:
        raise ValueError(f"Invalid beta: {beta}; allowed: -1 <= beta <= 1")
    v = (_uniform(shape, generator, dtype) - 0.5) * math.pi
    w = -torch.log(_uniform(shape, generator, dtype))
    if alpha == 1.0:
        half = math.pi / 2
        return (2 / math.pi) * ((half + beta * v) * torch.tan(v)
                                - beta * torch.log(half * w * torch.cos(v) / (half + beta * v)))
    zeta = -beta * math.tan(math.pi * alpha / 2)
    xi = math.atan(-zeta) / alpha
    scale = (1 + zeta**2) ** (1 / (2 * alpha))
    return (
        scale
        * torch.sin(alpha * (v + xi))
        / torch.cos(v) ** (1 / alpha)
        * (torch.cos(v - alpha * (v + xi)) / w) ** ((1 - alpha) / alpha)
    )


def sample_pareto(
    shape: tuple[int, ...], alpha: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Symmetric Pareto-type draws with density ``alpha/2 (1 + |x|)^-(1 + alpha)``; alpha > 0."""
    if not alpha > 0.0:
        raise ValueError(f"Invalid alpha: {alpha}; allowed: alpha > 0")
    magnitude = _uniform(shape, generator, dtype) ** (-1.0 / alpha) - 1.0
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).to(dtype)
    return sign * magnitude


def sample_student_t(
    shape: tuple[int, ...], df: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Student-t(df) draws by Bailey's polar method: ``T = U sqrt(df (W^(-2/df) - 1) / W)``."""
    if not df > 0.0:
        raise ValueError(f"Invalid df: {df}; allowed: df > 0")
    n = math.prod(shape)
    out = torch.empty(0, dtype=dtype)
    while out.numel() < n:
        need = n - out.numel()
        u = 2 * torch.rand(int(need * 1.3) + 16, generator=generator, dtype=dtype) - 1
        v = 2 * torch.rand(u.shape, generator=generator, dtype=dtype) - 1
        w = u * u + v * v
        keep = (w <= 1) & (w > 0)
        u, w = u[keep], w[keep]
        out = torch.cat([out, u * torch.sqrt(df * (w ** (-2.0 / df) - 1) / w)])
    return out[:n].reshape(shape)


def sample_skewed(
    shape: tuple[int, ...], alpha: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Mean-zero, right-skewed draws: Lomax(alpha) minus its mean ``1/(alpha - 1)``; alpha > 1."""
    if not alpha > 1.0:
        raise ValueError(f"Invalid alpha: {alpha}; allowed: alpha > 1 (the mean must exist)")
    return _uniform(shape, generator, dtype) ** (-1.0 / alpha) - 1.0 - 1.0 / (alpha - 1.0)


def sample_noise(
    family: str,
    shape: tuple[int, ...],
    *,
    alpha: float = 1.5,
    df: float = 3.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Draws of one of :data:`NOISE_FAMILIES`; ``alpha`` is the tail index, ``df`` Student's dof."""
    if family == "stable":
        return sample_stable(shape, alpha, 0.0, generator, dtype)
    if family == "pareto":
        return sample_pareto(shape, alpha, generator, dtype)
    if family == "student_t":
        return sample_student_t(shape, df, generator, dtype)
    if family == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype)
    if family == "skewed":
        return sample_skewed(shape, alpha, generator, dtype)
    raise ValueError(f"Invalid noise family: {family!r}; allowed: {', '.join(NOISE_FAMILIES)}")


def sample_noise_vectors(
    family: str,
    shape: tuple[int, ...],
    *,
    isotropic: bool = False,
    alpha: float = 1.5,
    df: float = 3.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Vectors along the last dimension of ``shape``: iid coordinates from ``family``, or
    (``isotropic``) ``z = |x| u`` with ``x`` one draw of the family and ``u`` uniform on the sphere,
    so that ``||z||`` has exactly the family's tail in any dimension (``skewed`` has no isotropic form).
    """
    if not isotropic:
        return sample_noise(family, shape, alpha=alpha, df=df, generator=generator, dtype=dtype)
    if family == "skewed":
        raise ValueError("isotropic: true with noise 'skewed'; allowed: isotropic false for skewed noise")
    length = sample_noise(family, (*shape[:-1], 1), alpha=alpha, df=df, generator=generator, dtype=dtype)
    length = length.abs()
    direction = torch.randn(shape, generator=generator, dtype=dtype)
    return length * direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)


def isotropic_stable_vectors(
    n: int, d: int, alpha: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` rotation-invariant alpha-stable vectors in R^d: ``sqrt(A) G``, ``A`` positive
    (alpha/2)-stable (totally skewed, ``beta = 1``, scale ``cos(pi alpha / 4)^(2/alpha)``), ``G``
    standard Gaussian (Samorodnitsky & Taqqu 1994, Def. 2.5.1)."""
    if not 0.0 < alpha < 2.0:
        if alpha == 2.0:
            return math.sqrt(2.0) * torch.randn((n, d), generator=generator, dtype=dtype)
        raise ValueError(f"Invalid alpha: {alpha}; allowed: 0 < alpha <= 2")
    a = sample_stable((n, 1), alpha / 2, 1.0, generator, dtype)
    a = a * math.cos(math.pi * alpha / 4) ** (2 / alpha)
    return torch.sqrt(a) * math.sqrt(2.0) * torch.randn((n, d), generator=generator, dtype=dtype)
