"""``vae``: a variational autoencoder on Fashion-MNIST (the delta-GClip paper's second experiment).

Tucat et al. (TMLR 2025, "Regularized Gradient Clipping Provably Trains Wide and Deep Neural
Networks") train a VAE with a 50-dimensional latent space on Fashion-MNIST and compare
delta-GClip with GClip, SGD and Adam. The model and loss follow their published notebook
(``resnet_vae/VAE_Fashion_MNIST.ipynb`` of github.com/mingfeisun/delta-gclip): fully connected,
two hidden layers of width ``H`` (50 there) with LeakyReLU(0.2)::

    encoder   h = a(W2 a(W1 x)),  mu = W_mu h,  log sigma^2 = W_s h            (784 -> H -> H -> 2 x 50)
    sample    z = mu + sigma * eps,  eps ~ N(0, I)                            (reparameterisation)
    decoder   xhat = sigmoid(W5 a(W4 a(W3 z)))                                (50 -> H -> H -> 784)

(biases omitted, ``a`` = LeakyReLU(0.2)), with ``x`` the pixel intensities in [0, 1]. Per image,
the loss is a reconstruction error plus the KL divergence of ``q(z|x)`` from ``N(0, I)``::

    L(x) = R(x, xhat) + KL,   KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
    R = sum_i (xhat_i - x_i)^2                                      (reconstruction "mse", the notebook's)
    R = -sum_i [x_i log xhat_i + (1 - x_i) log(1 - xhat_i)]         (reconstruction "bce", Kingma and Welling)

The differentiated objective is the SUM of ``L`` over the batch (``reduction: sum``, the
notebook's; ``mean`` divides by ``B``). The reduction scales the gradient by ``B``, which
matters for delta-GClip: its step ``lr min(1, max(delta, gamma / ||g||))`` reaches the floor
``delta`` only when ``||g|| > gamma / delta``. Training draws ``eps`` from the global torch
generator (seeded and checkpointed by the runner).

Metrics, always per image: ``train/loss`` (mean ``L`` of the batch), ``train/reconstruction``,
``train/kl``; ``eval/loss``, ``eval/reconstruction``, ``eval/kl`` over the first
``eval_examples`` test images, with ``eps`` from a generator seeded with 0 at every evaluation
(two evaluations of the same parameters agree exactly).

Sizes (``size``; ``hidden``, ``latent``, ``train_examples``, ``eval_examples`` override):
``default``: all 60,000 training and 10,000 test images; ``quick``: 2,048 training and 512 test
images. H = 50 and the latent size 50 in both.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from tailclip.problems.datasets import EpochSampler, fashion_mnist
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = ["VAE", "VAEOptions", "VariationalAutoencoder", "negative_elbo"]

SUBSET_SEED = 0
EVAL_NOISE_SEED = 0
_EVAL_BATCH = 250
_PIXELS = 28 * 28

_SIZES: dict[str, dict[str, int | None]] = {
    "default": {"train_examples": None, "eval_examples": None},
    "quick": {"train_examples": 2048, "eval_examples": 512},
}


class VariationalAutoencoder(nn.Module):
    """Fully connected VAE ``784 -> H -> H -> 2 x latent`` / ``latent -> H -> H -> 784`` (LeakyReLU 0.2)."""

    def __init__(self, hidden: int = 50, latent: int = 50, pixels: int = _PIXELS) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)
        )
        self.mean = nn.Linear(hidden, latent)
        self.log_variance = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, pixels),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log sigma^2)`` of ``q(z | x)`` for flat images ``x`` (B, 784)."""
        h = self.encoder(x)
        return self.mean(h), self.log_variance(h)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder logits at ``z = mu + sigma eps`` (``xhat = sigmoid(logits)``), ``mu``, ``log sigma^2``."""
        mu, log_var = self.encode(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        return self.decoder(z), mu, log_var


def negative_elbo(
    logits: Tensor, x: Tensor, mu: Tensor, log_var: Tensor, reconstruction: str = "mse"
) -> tuple[Tensor, Tensor]:
    """Per-image ``(R, KL)`` (each shape ``(B,)``); ``L = R + KL`` (see the module docstring)."""
    if reconstruction == "mse":
        error = (torch.sigmoid(logits) - x).square().sum(dim=1)
    else:
        error = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    kl = -0.5 * (1.0 + log_var - mu.square() - log_var.exp()).sum(dim=1)
    return error, kl


class VAEOptions(TaskOptions):
    """Options of ``vae``; ``None`` takes the value of the ``size`` preset."""

    size: Literal["default", "quick"] = "default"
    data_dir: str | None = None
    hidden: int = Field(50, ge=1, le=16384)
    latent: int = Field(50, ge=1, le=4096)
    reconstruction: Literal["mse", "bce"] = "mse"
    reduction: Literal["sum", "mean"] = "sum"
    train_examples: int | None = Field(None, ge=1)
    eval_examples: int | None = Field(None, ge=1)

    def resolved(self, key: str) -> Any:
        """The option ``key``, or the ``size`` preset's value when it is ``None``."""
        value = getattr(self, key)
        return _SIZES[self.size][key] if value is None else value


@register_task("vae")
class VAE(ModelTask):
    """The Fashion-MNIST VAE (see the module docstring)."""

    Options = VAEOptions
    options: VAEOptions
    supports_epochs = True

    def __init__(self, options: VAEOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        train_x, _ = fashion_mnist("train", options.data_dir)
        test_x, _ = fashion_mnist("test", options.data_dir)
        keep = options.resolved("train_examples")
        if keep is not None and keep < len(train_x):
            train_x = train_x[np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(train_x))[:keep])]
        n_eval = min(options.resolved("eval_examples") or len(test_x), len(test_x))
        self.train_images = torch.tensor(train_x.reshape(len(train_x), _PIXELS))
        self.test_images = torch.tensor(test_x[:n_eval].reshape(n_eval, _PIXELS))
        self.sampler = EpochSampler(len(self.train_images), context.batch_size, context.seed)
        self.model = VariationalAutoencoder(options.hidden, options.latent).to(self.device)

    def _pixels(self, images: Tensor) -> Tensor:
        return (images.float() / 255.0).to(self.device)

    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def train_batch(self, batch_size: int | None = None) -> Tensor:
        return self._pixels(self.train_images[self.sampler.next(batch_size)])

    def loss(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        eps = torch.randn(len(batch), self.options.latent, device=self.device)
        logits, mu, log_var = self.model(batch, eps)
        reconstruction, kl = negative_elbo(logits, batch, mu, log_var, self.options.reconstruction)
        per_image = reconstruction + kl
        objective = per_image.sum() if self.options.reduction == "sum" else per_image.mean()
        metrics = {"loss": per_image.detach().mean(), "reconstruction": reconstruction.detach().mean()}
        return objective, {**metrics, "kl": kl.detach().mean()}

    def evaluate(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        for start in range(0, len(self.test_images), _EVAL_BATCH):
            x = self._pixels(self.test_images[start : start + _EVAL_BATCH])
            eps = torch.randn(len(x), self.options.latent, generator=generator).to(self.device)
            logits, mu, log_var = self.model(x, eps)
            reconstruction, kl = negative_elbo(logits, x, mu, log_var, self.options.reconstruction)
            totals += torch.stack([reconstruction.sum(), kl.sum()]).double()
        totals /= len(self.test_images)
        return {"loss": totals.sum(), "reconstruction": totals[0], "kl": totals[1]}

    def data_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
