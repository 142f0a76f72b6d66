"""``imbalanced-softmax``: a linear softmax classifier on heavy-tailed class frequencies.

The setting of Kunstner, Yadav, Milligan, Schmidt and Bietti (NeurIPS 2024), "Heavy-tailed class
imbalance and why Adam outperforms gradient descent on language models": with class frequencies
``pi_k`` following a power law, the gradient and the Hessian block of class ``k``'s weights scale
with ``pi_k``, so (stochastic) gradient descent makes almost no progress on the rare classes while
sign-like methods (Adam) do, **even at full batch**: the gap is not caused by gradient noise.

Data (fixed by ``instance_seed``): ``n`` examples with labels ``y`` drawn from
``pi_k = k^(-s) / sum_j j^(-s)`` (``k = 1..K``, ``s = zipf_exponent``), every class present at
least once; inputs ``x = D (mu_y + z)`` with class means ``mu_k ~ N(0, I_d)``, ``z ~ N(0, I_d)`` and
``D = diag(kappa^(-(i-1)/(d-1)))`` (``kappa = condition_number``: ill-conditioned features). The
model is ``logits = W x + b``, ``W`` and ``b`` zero at the start; the loss is the mean cross-entropy.
Minibatches are drawn without replacement per epoch (``train.batch_size = n`` is full batch).

Metrics: ``train/loss`` of the batch; ``eval/loss`` and ``eval/accuracy`` over all ``n``
examples (the optimisation objective, as in the paper), ``eval/rare_loss`` over the examples of
the rarer half of the classes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from tailclip.problems.datasets import EpochSampler
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = ["ImbalancedSoftmax", "ImbalancedSoftmaxOptions", "imbalanced_data"]


class ImbalancedSoftmaxOptions(TaskOptions):
    """Options of ``imbalanced-softmax`` (see the module docstring)."""

    classes: int = Field(256, ge=2, le=100_000)
    examples: int = Field(4096, ge=2, le=10_000_000)
    dim: int = Field(32, ge=1, le=100_000)
    zipf_exponent: float = Field(1.0, ge=0.0)
    condition_number: float = Field(300.0, ge=1.0)
    instance_seed: int = Field(0, ge=0, lt=2**63)


def imbalanced_data(options: ImbalancedSoftmaxOptions) -> tuple[Tensor, Tensor]:
    """``(x, y)``: float32 inputs ``(n, d)`` and int64 labels ``(n,)`` (see the module docstring)."""
    o = options
    if o.examples < o.classes:
        raise ValueError(f"task.options.examples: {o.examples}; allowed: >= classes ({o.classes})")
    generator = torch.Generator().manual_seed(o.instance_seed)
    ranks = torch.arange(1, o.classes + 1, dtype=torch.float64)
    frequencies = ranks ** (-o.zipf_exponent)
    drawn = torch.multinomial(
        frequencies / frequencies.sum(), o.examples - o.classes, True, generator=generator
    )
    y = torch.cat([torch.arange(o.classes), drawn])[torch.randperm(o.examples, generator=generator)]
    means = torch.randn(o.classes, o.dim, generator=generator, dtype=torch.float64)
    z = torch.randn(o.examples, o.dim, generator=generator, dtype=torch.float64)
    exponents = torch.arange(o.dim, dtype=torch.float64) / max(o.dim - 1, 1)
    scales = torch.tensor(o.condition_number, dtype=torch.float64) ** (-exponents)
    return ((means[y] + z) * scales).float(), y


@register_task("imbalanced-softmax")
class ImbalancedSoftmax(ModelTask):
    """A linear softmax model on power-law class frequencies (see the module docstring)."""

    Options = ImbalancedSoftmaxOptions
    options: ImbalancedSoftmaxOptions
    supports_epochs = True

    def __init__(self, options: ImbalancedSoftmaxOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        x, y = imbalanced_data(options)
        self.inputs, self.labels = x.to(self.device), y.to(self.device)
        counts = torch.bincount(y, minlength=options.classes)
        rare = torch.argsort(counts, stable=True)[: options.classes // 2]
        self.rare = torch.isin(y, rare).to(self.device)
        self.sampler = EpochSampler(options.examples, context.batch_size, context.seed)
        self.model = nn.Linear(options.dim, options.classes).to(self.device)
        nn.init.zeros_(self.model.weight)
        nn.init.zeros_(self.model.bias)

    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def train_batch(self, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        index = self.sampler.next(batch_size).to(self.device)
        return self.inputs[index], self.labels[index]

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        return loss, {"loss": loss.detach()}

    def evaluate(self) -> dict[str, Any]:
        logits = self.model(self.inputs)
        losses = F.cross_entropy(logits, self.labels, reduction="none")
        accuracy = (logits.argmax(dim=1) == self.labels).double().mean()
        return {"loss": losses.mean(), "accuracy": accuracy, "rare_loss": losses[self.rare].mean()}

    def data_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
