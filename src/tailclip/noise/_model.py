"""Model plumbing for the noise diagnostics: calling, flat gradients, and leaving no trace.

Gradients are taken with ``torch.autograd.grad``, never through ``.grad``, so a measurement does
not disturb gradients a training loop may hold. :func:`preserved_state` restores everything a
forward pass in training mode can change: module train/eval flags, buffers (BatchNorm running
statistics) and the global RNG streams (dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from tailclip.noise.batches import BatchLoss

LossFn = Callable[[Any, Tensor], Tensor]


def move_to(obj: Any, device: torch.device) -> Any:
    """``obj`` (tensor, or tuple / list / dict of them) moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    return obj


def call_model(model: Callable[..., Any], inputs: Any) -> Any:
    """``model(inputs)``, ``model(*inputs)`` for a tuple/list, ``model(**inputs)`` for a dict."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``; error if there is none."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("Invalid model: no parameter requires grad; allowed: a model with trainable weights")
    return named


def model_device(model: nn.Module) -> torch.device:
    return trainable_parameters(model)[0][1].device


def flat_parameters(model: nn.Module) -> Tensor:
    """The trainable parameters concatenated into one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for _, p in trainable_parameters(model)]).clone()


def set_flat_parameters(model: nn.Module, vector: Tensor) -> None:
    """Write ``vector`` (as from :func:`flat_parameters`) into the trainable parameters in place."""
    params = [p for _, p in trainable_parameters(model)]
    total = sum(p.numel() for p in params)
    if vector.numel() != total:
        raise ValueError(f"Invalid parameter vector: {vector.numel()} entries; allowed: {total}")
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(vector[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def batch_gradient(model: nn.Module, loss_fn: LossFn | BatchLoss, batch: Any, params: list[Tensor]) -> Tensor:
    """The flat gradient in ``params`` (zeros where unused) of the batch's loss.

    The loss is ``loss_fn(model(inputs), target)`` for a batch ``(inputs, target)``, or
    ``loss_fn(batch)`` for a :class:`~tailclip.noise.batches.BatchLoss`.
    """
    with torch.enable_grad():
        if isinstance(loss_fn, BatchLoss):
            loss = loss_fn(batch)
        else:
            inputs, target = batch
            loss = loss_fn(call_model(model, inputs), target)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def batchnorm_modules(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules of ``model`` (whose training-mode output mixes examples)."""
    return [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


def _cuda_devices(model: nn.Module) -> list[int]:
    tensors = [*model.parameters(), *model.buffers()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def seed_rng(model: nn.Module, seed: int) -> None:
    """Seed the CPU generator and the CUDA generators of ``model``'s devices (dropout masks)."""
    torch.default_generator.manual_seed(seed)
    for index in _cuda_devices(model):
        torch.cuda.default_generators[index].manual_seed(seed)


@contextmanager
def preserved_state(model: nn.Module, seed: int | None = None) -> Iterator[None]:
    """Run a block that may change ``model``'s mode, buffers or the RNG; restore them afterwards.

    With ``seed``, the CPU generator (and the CUDA generators of the model's devices) are
    seeded inside the block, so dropout masks are reproducible.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        if seed is not None:
            seed_rng(model, seed)
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training
            with torch.no_grad():
                for name, b in model.named_buffers():
                    if name in buffers:
                        b.copy_(buffers[name])
