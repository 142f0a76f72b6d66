"""torch.optim parity: every configuration torch tests its own SGD, AdamW and Adagrad with.

The configurations are read from torch at test time (``optim_inputs_func_*`` of
``torch.testing._internal.common_optimizers``), so new torch configurations are picked up.
Each runs through the tailclip optimizer with ``clip=None`` and must match the torch optimizer
bit for bit in float64 over several steps, on the loop, foreach and fused paths; with
``clip="global"`` it must match ``clip_grad_norm_`` followed by the torch optimizer.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

# torch's own optimizer test configurations (needs expecttest, in the dev extra): a hard
# import, so a missing dependency fails the suite instead of skipping the comparison
import torch.testing._internal.common_optimizers as common_optimizers  # noqa: E402

from tailclip.optim import ClipAdaGrad, ClipAdam, ClipSGD  # noqa: E402

STEPS = 5
SHAPES = ((4, 3), (5,), ())

# torch optimizer, tailclip optimizer, the configurations' source; the defaults of torch's
# constructor that tailclip's differ in (AdamW's weight decay, see ClipAdam).
RULES = {
    "sgd": (torch.optim.SGD, ClipSGD, common_optimizers.optim_inputs_func_sgd, {}),
    "adamw": (torch.optim.AdamW, ClipAdam, common_optimizers.optim_inputs_func_adamw, {"weight_decay": 1e-2}),
    "adagrad": (torch.optim.Adagrad, ClipAdaGrad, common_optimizers.optim_inputs_func_adagrad, {}),
}


def _configurations() -> list[Any]:
    out = []
    for rule, (_, _, inputs, _) in RULES.items():
        for oi in inputs(device="cpu"):
            out.append(pytest.param(rule, oi.kwargs, id=f"{rule}-{oi.desc.replace(' ', '_')}"))
    return out


CONFIGURATIONS = _configurations()


def test_every_torch_configuration_is_collected() -> None:
    assert len(CONFIGURATIONS) >= 21


def _params(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    # heavy-tailed: a few large coordinates, so global clipping is active on some steps
    return [
        torch.randn(s, generator=gen, dtype=torch.float64) / torch.rand(s, generator=gen, dtype=torch.float64)
        for s in SHAPES
    ]


def _kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy (a Tensor lr is state a scheduler would edit)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def _run(
    make: Any, clip_first: float | None = None, coupled: tuple[bool, float] = (False, 0.0)
) -> list[torch.Tensor]:
    """Steps of ``make(params)``; with ``clip_first``, each gradient (first made ``s g + wd x``
    when ``coupled = (maximize, wd)``) is clipped to ``clip_first`` before the step."""
    params = _params(0)
    opt = make(params)
    maximize, wd = coupled
    for t in range(STEPS):
        for p, g in zip(params, _grads(t)):
            g = -g if maximize else g
            p.grad = g.add(p.detach(), alpha=wd) if wd else g.clone()
        if clip_first is not None:
            _clip_grad_norm_exact_(params, clip_first)
        opt.step()
    return [p.detach() for p in params]


def _clip_grad_norm_exact_(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` with the factor ``min(1, tau / ||g||)``: torch's divides by
    ``||g|| + 1e-6``, which moves the result by about 1e-10 relative (1e-7 after Adagrad)."""
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, foreach=False)
    coef = torch.clamp(max_norm / total, max=1.0)
    for g in grads:
        g.mul_(coef)


FLAGS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize(("rule", "kwargs"), CONFIGURATIONS)
def test_clip_none_matches_torch_bitwise(rule: str, kwargs: dict[str, Any], path: str) -> None:
    torch_cls, cls, _, defaults = RULES[rule]
    expected = _run(lambda ps: torch_cls(ps, **_kwargs(kwargs), **FLAGS[path]))
    got = _run(lambda ps: cls(ps, **{**defaults, **_kwargs(kwargs)}, clip=None, **FLAGS[path]))
    for e, g in zip(expected, got):
        assert torch.equal(e, g), (e - g).abs().max()


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize(("rule", "kwargs"), CONFIGURATIONS)
def test_global_clipping_matches_clip_grad_norm_then_torch(
    rule: str, kwargs: dict[str, Any], path: str
) -> None:
    """``clip="global"`` (one group: one norm) is ``clip_grad_norm_`` then torch's update.

    SGD and Adagrad clip the quantity their update takes, ``s g + wd x`` (coupled decay, sign
    ``s = -1`` with ``maximize``): the reference clips that and runs torch without decay and
    sign. AdamW's decay is decoupled and ``clip(-g) = -clip(g)``: the reference is torch as is.
    The reference clips with ``get_total_norm`` and the factor ``min(1, tau / ||g||)``.
    """
    torch_cls, cls, _, defaults = RULES[rule]
    max_norm = 1.5
    reference = _kwargs(kwargs)
    coupled = (False, 0.0)
    if rule != "adamw":
        coupled = (reference.pop("maximize", False), reference.pop("weight_decay", 0.0))
    expected = _run(lambda ps: torch_cls(ps, **reference, **FLAGS[path]), max_norm, coupled)
    got = _run(lambda ps: cls(ps, **{**defaults, **_kwargs(kwargs)}, clip="global", max_norm=max_norm,
                              **FLAGS[path]))
    # fused AdamW takes the factor as a float32 grad_scale (relative error about 6e-8)
    fused_adamw = rule == "adamw" and path == "fused"
    tol = {"rtol": 1e-6, "atol": 1e-9} if fused_adamw else {"rtol": 1e-13, "atol": 1e-15}
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, **tol)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_tensor_lr_and_betas_match_adamw(foreach: bool) -> None:
    """Tensor ``lr`` and betas (what ``torch.compile`` users pass): AdamW's numbers. torch's own
    foreach path refuses a Tensor ``lr`` without ``capturable``; ClipAdam takes its loop path."""
    def hyper() -> dict[str, Any]:
        return {"lr": torch.tensor(0.01), "betas": (torch.tensor(0.8), torch.tensor(0.99)), "amsgrad": True}

    expected = _run(lambda ps: torch.optim.AdamW(ps, **hyper(), foreach=False))
    got = _run(lambda ps: ClipAdam(ps, **hyper(), weight_decay=1e-2, clip=None, foreach=foreach))
    assert all(torch.equal(e, g) for e, g in zip(expected, got))
