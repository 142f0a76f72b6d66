"""Collect a sample of gradient noise at fixed parameters (``../shared/papers.md``, Diagnostics).

At the current parameters ``x``, in training mode (dropout on):

1. ``gbar = (1/M) sum_{i<=M} g_i``, the mean of ``M = mean_batches`` minibatch gradients;
2. ``xi_j = g_j - gbar`` for ``noise_batches`` further batches, disjoint from the first ones and
   from each other, at the training batch size ``B`` (Zhang et al., NeurIPS 2020, Section 2).

With ``per_sample=True`` every example of a noise batch gives one sample
``xi_j = grad loss(x; z_j) - gbar`` (noise at batch size 1), computed with ``torch.func``
(``vmap(grad(functional_call))`` over chunks of examples). Per-example gradients are undefined
when BatchNorm mixes the examples of a batch, so such models are refused in that mode.

The collection streams: ``gbar`` is computed first, then each noise gradient is reduced at
once to its norm ``||xi_j||``, the norm ``||g_j||``, a fixed random projection ``P xi_j``
(:mod:`tailclip.noise.projection`; the vectors themselves when ``d <= projection_dim``) and
running per-coordinate sums; memory is a few parameter-sized vectors whatever ``noise_batches``.
Parameters are never written; the model's train/eval flags, buffers and the global RNG state
are restored afterwards, and ``.grad`` is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from tailclip.noise._model import (
    LossFn,
    batch_gradient,
    batchnorm_modules,
    model_device,
    move_to,
    preserved_state,
    trainable_parameters,
)
from tailclip.noise.batches import Batch, BatchLoss, BatchSource
from tailclip.noise.estimators import TailIndex, tail_index
from tailclip.noise.projection import RandomProjection
from tailclip.noise.statistics import NoiseScale, noise_scale_from_squared_norms

NOISE_MODES = ("minibatch", "per_sample")


@dataclass
class NoiseSample:
    """A gradient-noise sample and how it was taken.

    Arrays (numpy, float64): ``norms`` ``||xi_j||`` (n,), ``grad_norms`` ``||g_j||`` (n,),
    ``projections`` ``P xi_j`` (n, k), ``coord_variance`` the per-coordinate mean of
    ``xi_j^2`` over the sample (d,). ``batch_size`` is the batch size of one noise sample ``B``
    (1 in per-sample mode), ``mean_batches`` ``M`` and ``mean_batch_size`` the batches behind
    ``gbar`` (``mean_grad_norm = ||gbar||``); ``mode`` is ``"minibatch"`` or ``"per_sample"``.
    """

    norms: np.ndarray
    grad_norms: np.ndarray
    projections: np.ndarray
    coord_variance: np.ndarray
    mean_grad_norm: float
    noise_mean_norm: float
    batch_size: int
    mean_batches: int
    mean_batch_size: int
    noise_batches: int
    mode: str
    step: int | None
    seed: int
    num_params: int
    projection: str

    @property
    def n(self) -> int:
        """Number of noise samples."""
        return int(self.norms.shape[0])

    def tail_index(self, method: str = "mohammadi", **kwargs: Any) -> TailIndex:
        """Vector-mode tail index: Mohammadi on the projected vectors, Hill on the exact norms.

        Mohammadi's estimator centres the vectors by their sample mean (``center=True`` unless
        given): every ``xi_j`` shares the error ``e = gbar - grad F`` of the mean gradient, of
        norm about ``||xi|| / sqrt(M)``, and uncentred block sums would carry ``K1 e``.
        """
        if method == "mohammadi":
            kwargs.setdefault("center", True)
            return tail_index(self.projections, method, **kwargs)
        return tail_index(self.norms, method, **kwargs)

    def noise_scale(self) -> NoiseScale:
        """``B_simple`` from ``|G_B|^2 = mean ||g_j||^2`` and ``|G_{MB'}|^2 = ||gbar||^2``.

        The two come from disjoint batches, so they are independent estimates (McCandlish et al.).
        """
        return noise_scale_from_squared_norms(
            float(np.mean(self.grad_norms**2)),
            self.mean_grad_norm**2,
            self.batch_size,
            self.mean_batches * self.mean_batch_size,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no per-coordinate arrays)."""
        return {
            "n": self.n,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "mean_batches": self.mean_batches,
            "mean_batch_size": self.mean_batch_size,
            "noise_batches": self.noise_batches,
            "step": self.step,
            "seed": self.seed,
            "num_params": self.num_params,
            "projection": self.projection,
            "projection_dim": int(self.projections.shape[1]),
            "mean_grad_norm": self.mean_grad_norm,
            "noise_mean_norm": self.noise_mean_norm,
            "noise_norm_mean": float(np.mean(self.norms)),
            "noise_norm_median": float(np.median(self.norms)),
            "noise_norm_max": float(np.max(self.norms)),
        }


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; allowed: an integer >= 1")
    return value


def _finite(grads: Tensor, where: str) -> Tensor:
    """``grads``, after checking they are finite: a NaN or Inf loss has no gradient noise."""
    if not bool(torch.isfinite(grads).all()):
        raise ValueError(
            f"Invalid model state: the gradient of {where} is not finite (the loss is NaN or Inf there); "
            "allowed: a model whose loss is finite on every batch"
        )
    return grads


def _batch_size(target: Tensor) -> int:
    if not isinstance(target, Tensor) or target.dim() == 0:
        raise ValueError("Invalid batch: per-sample mode needs a target tensor with a batch dimension")
    return int(target.shape[0])


def _slice(obj: Any, index: slice) -> Any:
    if isinstance(obj, Tensor):
        return obj[index]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(o, index) for o in obj)
    if isinstance(obj, dict):
        return {k: _slice(v, index) for k, v in obj.items()}
    return obj


def _unsqueeze(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.unsqueeze(0)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unsqueeze(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unsqueeze(v) for k, v in obj.items()}
    return obj


def _per_sample_grad_tuples(
    model: nn.Module, loss_fn: LossFn, batch: Batch, chunk_size: int
) -> Iterator[tuple[Tensor, ...]]:
    """Per-example gradients, one tensor of shape ``(c, *p.shape)`` per trainable parameter."""
    _check_count("chunk_size", chunk_size)
    if model.training and batchnorm_modules(model):
        raise ValueError(
            "Invalid model for per-sample gradients: BatchNorm in training mode "
            f"({', '.join(batchnorm_modules(model))}) mixes the examples of a batch; "
            "use per_sample=False or model.eval()"
        )
    named = trainable_parameters(model)
    names = [name for name, _ in named]
    values = tuple(p.detach() for _, p in named)
    fixed = {name: t for name, t in model.named_parameters() if not t.requires_grad}
    fixed.update(dict(model.named_buffers()))

    def example_loss(params: tuple[Tensor, ...], inputs: Any, target: Tensor) -> Tensor:
        state = {**fixed, **dict(zip(names, params))}
        inputs = _unsqueeze(inputs)
        if isinstance(inputs, dict):
            output = functional_call(model, state, (), inputs)
        elif isinstance(inputs, (tuple, list)):
            output = functional_call(model, state, tuple(inputs))
        else:
            output = functional_call(model, state, (inputs,))
        return loss_fn(output, target.unsqueeze(0))

    compute = vmap(grad(example_loss), in_dims=(None, 0, 0), randomness="different")
    inputs, target = batch
    n = _batch_size(target)
    for start in range(0, n, chunk_size):
        index = slice(start, min(n, start + chunk_size))
        # the fused attention kernels have no vmap batching rule (vmap would loop over the
        # examples); the math backend is plain batched matmuls and softmax
        with sdpa_kernel([SDPBackend.MATH]):
            grads = compute(values, _slice(inputs, index), target[index])
        yield grads


def per_sample_grad_chunks(
    model: nn.Module, loss_fn: LossFn, batch: Batch, *, chunk_size: int = 32
) -> Iterator[Tensor]:
    """Per-example flat gradients of ``batch``, ``chunk_size`` examples at a time, shape ``(c, d)``.

    Each example's loss is ``loss_fn(model(x_j[None]), y_j[None])``; the parameters are those
    with ``requires_grad`` in ``model.named_parameters()`` order. Dropout draws a different mask
    per example (``vmap(randomness="different")``). Models with BatchNorm in training mode are
    refused: their per-example gradient does not exist.
    """
    for grads in _per_sample_grad_tuples(model, loss_fn, batch, chunk_size):
        yield torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)


def per_sample_grads(model: nn.Module, loss_fn: LossFn, batch: Batch, *, chunk_size: int = 32) -> Tensor:
    """All per-example flat gradients of ``batch``, shape ``(batch size, d)``.

    See :func:`per_sample_grad_chunks`.
    """
    return torch.cat(list(per_sample_grad_chunks(model, loss_fn, batch, chunk_size=chunk_size)))


def per_sample_grad_norms(model: nn.Module, loss_fn: LossFn, batch: Batch, *, chunk_size: int = 32) -> Tensor:
    """Per-example gradient norms ``||grad loss(x; z_j)||`` of ``batch``, shape ``(batch size,)`` in float64.

    Summed per parameter in squares, without building the flat ``(n, d)`` matrix.
    """
    norms = []
    for grads in _per_sample_grad_tuples(model, loss_fn, batch, chunk_size):
        per_param = [
            torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim())), dtype=torch.float64)
            if g.dim() > 1
            else g.abs().double()
            for g in grads
        ]
        norms.append(torch.linalg.vector_norm(torch.stack(per_param), dim=0))
    return torch.cat(norms)


def collect_noise(
    model: nn.Module,
    loss_fn: LossFn | BatchLoss,
    data: Any,
    *,
    batch_size: int,
    mean_batches: int,
    noise_batches: int,
    per_sample: bool = False,
    seed: int = 0,
    projection_dim: int = 256,
    step: int | None = None,
    chunk_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    projection: RandomProjection | None = None,
) -> NoiseSample:
    """Sample the gradient noise of ``model`` at its current parameters.

    ``data`` and ``loss_fn`` follow :mod:`tailclip.noise.batches` (``loss_fn(output, target)``
    is the batch-mean loss; a :class:`~tailclip.noise.BatchLoss` is called on whole batches and
    allows ``per_sample=False`` only). ``mean_batches`` batches of ``batch_size`` give ``gbar``; each of
    ``noise_batches`` further disjoint batches gives one noise sample (``per_sample=False``, at
    batch size ``B = batch_size``) or ``batch_size`` per-example samples (``per_sample=True``,
    ``chunk_size`` examples per vmapped call). ``seed`` fixes the batches, the dropout masks and
    the projection (dimension ``min(projection_dim, d)``). ``step`` is recorded as given.
    ``progress(done, total)`` is called after every batch. A ``projection`` built earlier for
    this model (same ``d``) may be passed to reuse it across collections. A batch whose
    gradient is not finite (a NaN or Inf loss) raises ``ValueError`` naming the batch.
    """
    _check_count("batch_size", batch_size)
    _check_count("mean_batches", mean_batches)
    _check_count("noise_batches", noise_batches)
    _check_count("projection_dim", projection_dim)
    whole = isinstance(loss_fn, BatchLoss)
    if per_sample and whole:
        raise ValueError(
            "Invalid per_sample=True: a BatchLoss has no per-example form; allowed: per_sample=False, "
            "or loss_fn(output, target) with (inputs, target) batches"
        )
    if per_sample and batchnorm_modules(model):
        raise ValueError(
            f"Invalid per_sample=True: the model has BatchNorm ({', '.join(batchnorm_modules(model))}), "
            "whose training-mode output mixes the examples of a batch; use per_sample=False"
        )
    named = trainable_parameters(model)
    params = [p for _, p in named]
    device = model_device(model)
    dim = sum(p.numel() for p in params)
    source = BatchSource(data, batch_size, seed, mean_batches + noise_batches, whole=whole)
    if projection is None:
        projection = RandomProjection(dim, projection_dim, seed, device=device)
    elif projection.dim != dim:
        raise ValueError(f"Invalid projection: built for dim {projection.dim}; allowed: the model's {dim}")
    # noise vectors wait in a bounded buffer (about 128 MiB) so the projection reads P once per flush
    flush_rows = max(1, (1 << 25) // dim)
    total = mean_batches + noise_batches
    acc_dtype = torch.float64 if params[0].dtype == torch.float64 else torch.float32

    with preserved_state(model, seed):
        model.train()
        mean_grad = torch.zeros(dim, dtype=acc_dtype, device=device)
        for i in range(mean_batches):
            gradient = batch_gradient(model, loss_fn, move_to(source.next(), device), params)
            mean_grad += _finite(gradient, f"mean batch {i + 1} of {mean_batches}").to(acc_dtype)
            if progress is not None:
                progress(i + 1, total)
        mean_grad /= mean_batches

        norms, grad_norms, projected, pending = [], [], [], []
        first_moment = torch.zeros(dim, dtype=acc_dtype, device=device)
        second_moment = torch.zeros(dim, dtype=acc_dtype, device=device)
        for j in range(noise_batches):
            batch = move_to(source.next(), device)
            if per_sample:
                chunks: Any = per_sample_grad_chunks(model, loss_fn, batch, chunk_size=chunk_size)
            else:
                chunks = [batch_gradient(model, loss_fn, batch, params)[None]]
            for grads in chunks:
                grads = _finite(grads, f"noise batch {j + 1} of {noise_batches}").to(acc_dtype)
                noise = grads - mean_grad
                norms.append(torch.linalg.vector_norm(noise, dim=1, dtype=torch.float64))
                grad_norms.append(torch.linalg.vector_norm(grads, dim=1, dtype=torch.float64))
                if noise.shape[0] == 1:
                    first_moment.add_(noise[0])
                    second_moment.addcmul_(noise[0], noise[0])
                else:
                    first_moment.add_(noise.sum(0))
                    second_moment.add_((noise * noise).sum(0))
                pending.append(noise)
                if sum(p.shape[0] for p in pending) >= flush_rows:
                    projected.append(projection(torch.cat(pending)))
                    pending = []
            if progress is not None:
                progress(mean_batches + j + 1, total)
        if pending:
            projected.append(projection(torch.cat(pending)))

    norm_array = torch.cat(norms).cpu().numpy()
    n = norm_array.shape[0]
    return NoiseSample(
        norms=norm_array,
        grad_norms=torch.cat(grad_norms).cpu().numpy(),
        projections=torch.cat(projected).double().cpu().numpy(),
        coord_variance=(second_moment.double() / n).cpu().numpy(),
        mean_grad_norm=float(torch.linalg.vector_norm(mean_grad, dtype=torch.float64)),
        noise_mean_norm=float(torch.linalg.vector_norm(first_moment.double() / n)),
        batch_size=1 if per_sample else batch_size,
        mean_batches=mean_batches,
        mean_batch_size=batch_size,
        noise_batches=noise_batches,
        mode="per_sample" if per_sample else "minibatch",
        step=step,
        seed=seed,
        num_params=dim,
        projection=projection.kind,
    )
