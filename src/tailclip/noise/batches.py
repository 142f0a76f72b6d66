"""What ``data`` means for the noise diagnostics, and how batches are drawn from it.

A batch is a pair ``(inputs, target)``: ``inputs`` is a tensor (the model is called as
``model(inputs)``), a tuple of tensors (``model(*inputs)``) or a dict of tensors
(``model(**inputs)``); ``loss_fn(model_output, target)`` returns the *mean* loss of the batch
(as ``torch.nn.CrossEntropyLoss()`` does). ``data`` is one of:

* a tuple of tensors ``(X, Y)`` (or ``(X1, X2, ..., Y)``) with a common first dimension, or a
  ``torch.utils.data.TensorDataset``;
* an indexable dataset (``len(data)`` and ``data[i] -> (x, y)`` or ``(x1, ..., y)``), whose
  items are collated with ``torch.utils.data.default_collate``;
* a batch sampler, a callable ``data(batch_size, generator) -> (inputs, target)`` that draws a
  fresh independent batch on each call from the ``torch.Generator`` it is given (streams,
  synthetic data, token corpora).

From a finite dataset the batches of one collection are disjoint: one seeded permutation is cut
into consecutive batches, so the mean-gradient batches and every noise batch are independent
draws without replacement. The dataset must hold enough examples for all of them.

When the loss is not ``loss_fn(model(inputs), target)`` (a VAE's ELBO, a training task's own
objective), wrap a function of the whole batch in :class:`BatchLoss`: ``BatchLoss(fn)`` with
``fn(batch) -> scalar`` (the mean loss, computed through the model's parameters) is passed where
``loss_fn`` goes. Batches are then handed to ``fn`` as drawn, whatever their structure (a
sampler may return any object; dataset rows stay a tuple). Per-example noise needs the
``(inputs, target)`` form, so ``per_sample`` mode refuses a :class:`BatchLoss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset, default_collate

Batch = tuple[Any, Tensor]
BatchSampler = Callable[[int, torch.Generator], Batch]


@dataclass(frozen=True)
class BatchLoss:
    """A loss of whole batches, ``fn(batch) -> scalar`` (see the module docstring).

    Passed as ``loss_fn`` to :func:`~tailclip.noise.collect_noise`,
    :class:`~tailclip.noise.TailMonitor` or :func:`~tailclip.noise.tails_report`, it replaces
    ``loss_fn(model(inputs), target)``: the noise is that of ``grad fn(batch)`` in the model's
    trainable parameters.
    """

    fn: Callable[[Any], Tensor]

    def __call__(self, batch: Any) -> Tensor:
        return self.fn(batch)


def _split(parts: Sequence[Any]) -> Batch:
    if len(parts) < 2:
        raise ValueError(
            f"Invalid data: items have {len(parts)} part(s); allowed: (inputs, target) or (x1, ..., target)"
        )
    inputs = parts[0] if len(parts) == 2 else tuple(parts[:-1])
    return inputs, parts[-1]


class BatchSource:
    """Draws batches of ``batch_size`` from ``data`` (see the module docstring), seeded by ``seed``.

    ``total_batches`` is how many batches will be drawn; a finite dataset smaller than
    ``total_batches * batch_size`` examples is a ``ValueError`` up front. With ``whole=True``
    (for a :class:`BatchLoss`) batches are returned as drawn instead of as ``(inputs, target)``.
    """

    def __init__(
        self, data: Any, batch_size: int, seed: int, total_batches: int, *, whole: bool = False
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r}; allowed: an integer >= 1")
        self.batch_size = batch_size
        self.whole = whole
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors: tuple[Tensor, ...] | None = None
        self.dataset: Any = None
        self.sampler: BatchSampler | None = None
        if isinstance(data, TensorDataset):
            data = data.tensors
        if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
            sizes = {t.shape[0] if t.dim() else -1 for t in data}
            if len(data) < 2 or len(sizes) != 1 or -1 in sizes:
                raise ValueError(
                    "Invalid data: a tuple of tensors must be (X, ..., Y) with at least 2 tensors "
                    f"and a common first dimension; got shapes {[tuple(t.shape) for t in data]}"
                )
            self.tensors = tuple(data)
            size = data[0].shape[0]
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
            size = len(data)
        elif callable(data):
            self.sampler = data
            return
        else:
            raise ValueError(
                f"Invalid data: {type(data).__name__}; allowed: a tuple of tensors (X, Y), an indexable "
                "dataset of (x, y) items, or a callable sampler(batch_size, generator)"
            )
        needed = total_batches * batch_size
        if size < needed:
            raise ValueError(
                f"Invalid data: {size} examples; allowed: at least {needed} = {total_batches} batches x "
                f"batch_size {batch_size} (lower the batch counts or pass a sampler)"
            )
        self.permutation = torch.randperm(size, generator=self.generator)
        self.position = 0

    def next(self) -> Any:
        """The next batch (``(inputs, target)`` unless ``whole``): a sampler's draw, else the next slice."""
        if self.sampler is not None:
            batch = self.sampler(self.batch_size, self.generator)
            if self.whole:
                return batch
            if not isinstance(batch, (tuple, list)):
                raise ValueError(
                    f"Invalid data: the sampler returned {type(batch).__name__}; allowed: (inputs, target)"
                )
            return _split(batch)
        index = self.permutation[self.position : self.position + self.batch_size]
        if index.numel() < self.batch_size:
            raise ValueError("Invalid data: the dataset ran out of disjoint batches")
        self.position += self.batch_size
        if self.tensors is not None:
            rows = tuple(t[index] for t in self.tensors)
            return rows if self.whole else _split(rows)
        collated = default_collate([self.dataset[int(i)] for i in index])
        if self.whole:
            return collated
        if not isinstance(collated, (tuple, list)):
            raise ValueError(
                f"Invalid data: items collate to {type(collated).__name__}; allowed: (inputs, target)"
            )
        return _split(collated)
