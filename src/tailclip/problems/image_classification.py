"""``image-classification``: a CIFAR-style ResNet on Fashion-MNIST (or CIFAR-10 where the files exist).

The network is the CIFAR ResNet of He et al. (CVPR 2016, Section 4.2): a 3x3 convolution to
``w`` channels, three stages of ``n`` basic blocks (two 3x3 convolutions with batch norm and a
residual connection) at widths ``w, 2w, 4w`` and strides 1, 2, 2, global average pooling and a
linear classifier: ``6n + 2`` weighted layers (ResNet-8, -14, -20, ...). A shortcut that changes
shape is a 1x1 convolution with batch norm (He et al.'s option B). It stands in, at CPU scale,
for the ResNet-18 on CIFAR-10 of the delta-GClip paper (Tucat et al., TMLR 2025) and the
ResNet of Zhang et al. (NeurIPS 2020, Figure 1), written here because ``torchvision`` does not
import beside this torch build.

Data: Fashion-MNIST (:func:`tailclip.problems.datasets.fashion_mnist`, 60,000 train and 10,000
test images, one channel, 28x28) or CIFAR-10 (:func:`~tailclip.problems.datasets.cifar10`, three
channels, 32x32). Pixels are scaled to [0, 1] and standardised per channel with the training
split's mean and standard deviation. ``train_examples`` keeps a fixed random subset of the
training split (drawn with seed 0, the same for every training seed); minibatches are shuffled
epochs (:class:`~tailclip.problems.datasets.EpochSampler`, seeded with ``train.seed``). With
``augment`` each training image is randomly shifted (zero padding of 4 pixels, a random crop
back to size) and flipped horizontally with probability 1/2, the standard CIFAR protocol.

Metrics: ``train/loss`` (mean cross-entropy of the batch) and ``train/accuracy``; ``eval/loss``
and ``eval/accuracy`` over the first ``eval_examples`` images of the test split (all of it by
default), in evaluation mode (batch norm running statistics).

Sizes (``size``; any of ``depth``, ``width``, ``train_examples``, ``eval_examples`` overrides):

* ``default``: ResNet-8 (``depth`` 8) at width 16 (78k parameters), all training and test images;
* ``quick``: ResNet-8 at width 4, 2,048 training and 512 test images (for tests).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from tailclip.problems.datasets import EpochSampler, cifar10, fashion_mnist
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ImageClassification",
    "ImageClassificationOptions",
    "random_crop_flip",
]

SUBSET_SEED = 0
_EVAL_BATCH = 250
_PAD = 4

_SIZES: dict[str, dict[str, int | None]] = {
    "default": {"depth": 8, "width": 16, "train_examples": None, "eval_examples": None},
    "quick": {"depth": 8, "width": 4, "train_examples": 2048, "eval_examples": 512},
}


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3x3 convolutions (He et al., 2016)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet with ``depth = 6n + 2`` layers and stage widths ``(w, 2w, 4w)``."""

    def __init__(self, depth: int = 20, width: int = 16, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"Invalid depth: {depth}; allowed: 6n + 2 with n >= 1 (8, 14, 20, 32, ...)")
        if width < 1:
            raise ValueError(f"Invalid width: {width}; allowed: >= 1")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        channels = width
        for stage, stride in enumerate((1, 2, 2)):
            out = width * 2**stage
            for b in range(blocks):
                layers.append(BasicBlock(channels, out, stride if b == 0 else 1))
                channels = out
        self.stages = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        features = self.stages(self.stem(x))
        return self.classifier(features.mean(dim=(2, 3)))


def random_crop_flip(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a random crop of its ``pad``-pixel zero padding; flip half of them.

    For an image ``x`` (C, H, W): ``y[c, i, j] = xp[c, i + dy, j + dx]`` with ``xp`` the padded
    image and ``dy, dx`` uniform in ``{0, ..., 2 pad}``, then ``y[..., ::-1]`` with probability 1/2.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h)).to(images.device)
    cols = (offsets[1, :, None] + torch.arange(w)).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


class ImageClassificationOptions(TaskOptions):
    """Options of ``image-classification``; ``None`` takes the value of the ``size`` preset."""

    size: Literal["default", "quick"] = "default"
    dataset: Literal["fashion-mnist", "cifar10"] = "fashion-mnist"
    data_dir: str | None = None
    depth: int | None = Field(None, ge=8)
    width: int | None = Field(None, ge=1, le=512)
    train_examples: int | None = Field(None, ge=1)
    eval_examples: int | None = Field(None, ge=1)
    augment: bool = False

    @model_validator(mode="after")
    def _check_depth(self) -> ImageClassificationOptions:
        if self.depth is not None and (self.depth - 2) % 6:
            raise ValueError(f"depth: {self.depth} is not 6n + 2; allowed: 8, 14, 20, 32, 44, 56, 110")
        return self

    def resolved(self, key: str) -> Any:
        """The option ``key``, or the ``size`` preset's value when it is ``None``."""
        value = getattr(self, key)
        return _SIZES[self.size][key] if value is None else value


def _subset(n: int, keep: int | None) -> np.ndarray:
    """The first ``keep`` indices of a fixed permutation of ``range(n)`` (seed 0), sorted; all if None."""
    if keep is None or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:keep])


@register_task("image-classification")
class ImageClassification(ModelTask):
    """A CIFAR-style ResNet trained with cross-entropy (see the module docstring)."""

    Options = ImageClassificationOptions
    options: ImageClassificationOptions
    supports_epochs = True

    def __init__(self, options: ImageClassificationOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        load = fashion_mnist if options.dataset == "fashion-mnist" else cifar10
        train_x, train_y = load("train", options.data_dir)
        test_x, test_y = load("test", options.data_dir)
        keep = _subset(len(train_x), options.resolved("train_examples"))
        train_x, train_y = train_x[keep], train_y[keep]
        n_eval = min(options.resolved("eval_examples") or len(test_x), len(test_x))
        test_x, test_y = test_x[:n_eval], test_y[:n_eval]
        if train_x.ndim == 3:
            train_x, test_x = train_x[:, None], test_x[:, None]
        scaled = train_x.astype(np.float32) / 255.0
        mean = scaled.mean(axis=(0, 2, 3), keepdims=True)
        std = scaled.std(axis=(0, 2, 3), keepdims=True)
        self.mean, self.std = torch.from_numpy(mean[0]), torch.from_numpy(std[0])
        self.train_images = torch.tensor(train_x)
        self.train_labels = torch.tensor(train_y)
        self.test_images = torch.tensor(test_x)
        self.test_labels = torch.tensor(test_y)
        self.sampler = EpochSampler(len(self.train_labels), context.batch_size, context.seed)
        self.augment_generator = torch.Generator().manual_seed(context.seed + 1)
        self.model = CifarResNet(
            options.resolved("depth"), options.resolved("width"), in_channels=self.train_images.shape[1]
        ).to(self.device)

    def _standardise(self, images: Tensor) -> Tensor:
        return ((images.float() / 255.0 - self.mean) / self.std).to(self.device)

    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def train_batch(self, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        index = self.sampler.next(batch_size)
        images = self._standardise(self.train_images[index])
        if self.options.augment:
            images = random_crop_flip(images, _PAD, self.augment_generator)
        return images, self.train_labels[index].to(self.device)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return loss, {"accuracy": accuracy}

    def evaluate(self) -> dict[str, Any]:
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(self.test_labels), _EVAL_BATCH):
            images = self._standardise(self.test_images[start : start + _EVAL_BATCH])
            labels = self.test_labels[start : start + _EVAL_BATCH].to(self.device)
            logits = self.model(images)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=1) == labels).sum()
        n = len(self.test_labels)
        return {"loss": total_loss / n, "accuracy": correct.double() / n}

    def data_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "augment": self.augment_generator.get_state()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.augment_generator.set_state(state["augment"])
