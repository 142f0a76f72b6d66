"""Data fixtures the rule tests share: parameters in two groups, heavy-tailed gradient noise.

Every rule test drives its optimizer on ``g = c x + xi`` (the gradient of ``c ||x||^2 / 2``) with
Student-t noise ``xi`` of 1.5 degrees of freedom (infinite variance), from fixed seeds, and
compares with a plain float64 reference. Shapes are given as ``[[shape, ...], ...]``, one list
per param group; noise as ``noise[t][group][k]``. The generic battery's own data helpers are in
``cases.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

Shapes = Sequence[Sequence[tuple[int, ...]]]


def initial_params(shapes: Shapes, dtype: torch.dtype, seed: int = 0) -> list[list[Tensor]]:
    """Standard normal tensors (drawn in float64 from a torch generator), cast to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in group] for group in shapes]


def make_params(shapes: Shapes, dtype: torch.dtype, seed: int = 0) -> list[list[Tensor]]:
    """Leaf copies of :func:`initial_params` that require grad."""
    return [[x.clone().requires_grad_(True) for x in group] for group in initial_params(shapes, dtype, seed)]


def torch_student_t(
    shapes: Shapes, steps: int, dtype: torch.dtype, seed: int, df: float = 1.5
) -> list[list[list[Tensor]]]:
    """``noise[t][group][k]`` from ``torch.distributions.StudentT`` under a forked, seeded RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dist = torch.distributions.StudentT(torch.tensor(df, dtype=torch.float64))
        return [[[dist.sample(s).to(dtype) for s in group] for group in shapes] for _ in range(steps)]


def numpy_student_t(
    shapes: Shapes, steps: int, dtype: torch.dtype, seed: int, df: float = 1.5
) -> list[list[list[Tensor]]]:
    """``noise[t][group][k]`` from one ``numpy.random.default_rng(seed)`` stream."""
    rng = np.random.default_rng(seed)
    return [
        [[torch.from_numpy(rng.standard_t(df, size=s)).to(dtype) for s in group] for group in shapes]
        for _ in range(steps)
    ]


def student_t_lists(
    shapes: Shapes, steps: int, seed: int, scale: float = 1.0
) -> list[list[list[list[float]]]]:
    """``noise[t][group][k]`` as flat float64 lists (for plain-Python references), df 1.5."""
    rng = np.random.default_rng(seed)
    return [
        [[list(scale * rng.standard_t(1.5, size=math.prod(s))) for s in group] for group in shapes]
        for _ in range(steps)
    ]


def normal_lists(shapes: Shapes, seed: int) -> list[list[list[float]]]:
    """Initial values as flat float64 lists, standard normal."""
    rng = np.random.default_rng(seed)
    return [[list(rng.normal(size=math.prod(s))) for s in group] for group in shapes]


def params_from_lists(
    values: list[list[list[float]]], shapes: Shapes, dtype: torch.dtype = torch.float64
) -> list[list[Tensor]]:
    """Leaf tensors holding ``values`` (flat lists) in ``shapes``."""
    return [
        [torch.tensor(v, dtype=dtype).reshape(s).requires_grad_() for v, s in zip(vg, sg, strict=True)]
        for vg, sg in zip(values, shapes, strict=True)
    ]


def set_grads(params: list[list[Tensor]], noise_t: list[list[Tensor]], curvature: float = 1.0) -> None:
    """``p.grad = c x + xi`` as new tensors; ``xi`` a tensor or a flat list."""
    for group, group_noise in zip(params, noise_t, strict=True):
        for p, xi in zip(group, group_noise, strict=True):
            if not isinstance(xi, Tensor):
                xi = torch.tensor(xi, dtype=p.dtype).reshape(p.shape)
            p.grad = (p.detach().clone() if curvature == 1.0 else curvature * p.detach()) + xi


def param_groups(params: list[list[Tensor]], group_options: list[dict]) -> list[dict]:
    return [{"params": group, **opts} for group, opts in zip(params, group_options, strict=True)]


def flat(params: list[list[Tensor]]) -> list[Tensor]:
    return [p.detach() for group in params for p in group]


def flat_lists(groups: list[list[Tensor]]) -> list[list[list[float]]]:
    return [[t.flatten().tolist() for t in group] for group in groups]
