"""A toy update rule in one module: the worked example of adding an optimizer to tailclip.

Clipped sign momentum (a toy, not a published rule): with ``m_0 = 0`` and the clipping factors
``c_k`` of :func:`tailclip.clip.clip_coefficients` (``"global"``: ``min(1, tau / ||g||)``,
``"layer"``: ``min(1, tau / ||g_k||)``)::

    m_t = beta m_{t-1} + (1 - beta) sign(g_t)
    x_{t+1} = x_t - lr c_t m_t

This module is everything the rule needs: its functional core, its class, its registration
(with its vectorized form) and the cases the generic batteries run. Importing it registers
``"toy_sign_sgd"``; ``tests/optim/test_toy_rule.py`` loads it as a pytest plugin in a separate
pytest run and checks that the battery (``test_battery.py``) and the vectorized suite
(``tests/problems/test_vectorized.py``) pick it up with no other file touched. (A rule shipped in
``src/tailclip/optim/<rule>.py`` is imported by the package itself and keeps its cases in
``tests/optim/test_<rule>.py``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from cases import case
from torch import Tensor

from tailclip.clip import ClipMode, ClipStats, ThresholdPolicy, clip_coefficients, tensor_norms
from tailclip.optim import ClipOptimizer, VectorizedRule, register_optimizer
from tailclip.optim._base import check_clipping, check_lr, check_unit_interval
from tailclip.optim._kernels import per_tensor

NAME = "toy_sign_sgd"


def toy_sign_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    momentum: float,
    clip: ClipMode,
    max_norm: float | Tensor | ThresholdPolicy,
    foreach: bool,
    norms: Tensor | None = None,
    total_norm: Tensor | None = None,
) -> ClipStats:
    """Functional core: updates ``params`` and ``momentum_buffers`` (zeros at first) in place.

    ``total_norm``: the model-wide norm global clipping divides by (``None``: these tensors')."""
    if norms is None:
        norms = tensor_norms(grads, foreach)
    coefs, stats = clip_coefficients(norms, clip, max_norm, total_norm)
    scales = per_tensor(coefs, params)
    if foreach:
        torch._foreach_lerp_(momentum_buffers, torch._foreach_sign(grads), 1 - momentum)
        torch._foreach_add_(params, torch._foreach_mul(momentum_buffers, scales), alpha=-lr)
    else:
        for p, g, m, c in zip(params, grads, momentum_buffers, scales, strict=True):
            m.lerp_(torch.sign(g), 1 - momentum)
            p.add_(m * c, alpha=-lr)
    return stats


class ToySignSGD(ClipOptimizer):
    """Clipped sign momentum: ``x -= lr c m`` with ``m`` the EMA of ``sign(g)``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        clip: ClipMode = "global",
        max_norm: float | ThresholdPolicy = 1.0,
        *,
        foreach: bool = True,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, clip=clip, max_norm=max_norm)
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr(group["lr"])
        check_unit_interval("momentum", group["momentum"])
        if group["clip"] not in ("global", "group", "layer"):
            raise ValueError(f"Invalid clip: {group['clip']!r}; allowed: 'global', 'group' or 'layer'")
        check_clipping(group["clip"], group["max_norm"])

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return toy_sign_sgd(
            params, grads, [self.state[p]["momentum_buffer"] for p in params],
            lr=group["lr"], momentum=group["momentum"], clip=group["clip"], max_norm=self._threshold(group),
            foreach=group["foreach"], norms=norms, total_norm=model_norm,
        )


def _init_runs(x: Tensor, hp: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    return {"momentum_buffer": torch.zeros_like(x)}, {}


def _run_core(hp: Mapping[str, Any], shared: Mapping[str, Tensor], lr: float, threshold: float | None):
    def core(x: Tensor, g: Tensor, buffer: Tensor) -> ClipStats:
        return toy_sign_sgd(
            [x], [g], [buffer], lr=lr, momentum=hp["momentum"], clip=hp["clip"], max_norm=threshold,
            foreach=False,
        )

    return core


register_optimizer(NAME, ToySignSGD, VectorizedRule(_init_runs, _run_core, threshold_key="max_norm"))

# ---------------------------------------------------------------- cases of the generic batteries

BATTERY_CASES = [
    case(NAME, "global", default_clip="global", lr=0.1, clip="global", max_norm=1.0),
    case(NAME, "layer-no-momentum", default_clip="global", lr=0.1, momentum=0.0, clip="layer", max_norm=0.5),
]
INVALID_COMBINATIONS = [({"clip": "coord"}, "clip")]
VECTORIZED_CASES = [
    {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 0.5},
    {"lr": 0.1, "momentum": 0.5, "clip": "layer", "max_norm": 0.5},
]
