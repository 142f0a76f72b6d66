"""image-classification: the CIFAR ResNet's shape and size, the augmentation against a plain loop,
the data position, Fashion-MNIST and a fake CIFAR-10 through the engine, the built-in configs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _real_tasks import assert_finite_and_improving, builtin, config, make_task, run

from tailclip.engine.runner import run_one
from tailclip.engine.store import ResultsStore
from tailclip.problems import TASKS
from tailclip.problems.datasets import DatasetMissingError
from tailclip.problems.image_classification import CifarResNet, ImageClassification, random_crop_flip

QUICK = {"size": "quick"}


def resnet_parameters(depth: int, width: int, in_channels: int, classes: int = 10) -> int:
    """Parameter count of the CIFAR ResNet by hand: convolutions, batch norms (2 per channel), FC."""
    n = (depth - 2) // 6
    total = in_channels * width * 9 + 2 * width
    channels = width
    for stage in range(3):
        out = width * 2**stage
        for b in range(n):
            total += channels * out * 9 + 2 * out + out * out * 9 + 2 * out
            if b == 0 and channels != out:
                total += channels * out + 2 * out
            channels = out
    return total + channels * classes + classes


def test_registered() -> None:
    assert TASKS["image-classification"] is ImageClassification


@pytest.mark.parametrize(("depth", "width", "channels"), [(8, 16, 1), (20, 16, 3), (14, 4, 1)])
def test_resnet_size_and_output(depth: int, width: int, channels: int) -> None:
    model = CifarResNet(depth, width, in_channels=channels)
    assert sum(p.numel() for p in model.parameters()) == resnet_parameters(depth, width, channels)
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convolutions) + 1 == depth  # 6n + 1 3x3 convolutions and the linear layer
    size = 28 if channels == 1 else 32
    assert model(torch.randn(2, channels, size, size)).shape == (2, 10)


def test_resnet20_has_the_papers_size() -> None:
    """He et al. (2016) give 0.27M parameters for ResNet-20 (their option A shortcuts add none)."""
    assert 0.265e6 < sum(p.numel() for p in CifarResNet(20, 16).parameters()) < 0.275e6


def test_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="depth"):
        CifarResNet(10, 16)
    with pytest.raises(Exception, match="depth"):
        config("image-classification", {"depth": 12}, {"name": "sgd", "lr": 0.1}, steps=1)


def test_random_crop_flip_matches_a_plain_loop() -> None:
    images = torch.randn(6, 2, 5, 7)
    pad = 2
    out = random_crop_flip(images, pad, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 2 * pad + 1, (2, 6), generator=generator)
    flips = torch.rand(6, generator=generator) < 0.5
    for k in range(6):
        padded = torch.zeros(2, 5 + 2 * pad, 7 + 2 * pad)
        padded[:, pad : pad + 5, pad : pad + 7] = images[k]
        dy, dx = int(offsets[0, k]), int(offsets[1, k])
        expected = padded[:, dy : dy + 5, dx : dx + 7]
        if flips[k]:
            expected = expected.flip(-1)
        assert torch.equal(out[k], expected)


def test_standardised_training_data_and_resumable_position() -> None:
    cfg = config("image-classification", {**QUICK, "augment": True}, {"name": "sgd", "lr": 0.1}, steps=5,
                 batch_size=256, seed=2)
    task = make_task(cfg)
    assert len(task.train_labels) == 2048 and len(task.test_labels) == 512
    assert task.steps_per_epoch() == 8
    pixels = (task.train_images.float() / 255.0 - task.mean) / task.std
    assert abs(float(pixels.mean())) < 1e-4 and abs(float(pixels.std()) - 1.0) < 1e-3
    task.train_batch()
    state = task.data_state()
    expected = [task.train_batch() for _ in range(9)]  # crosses an epoch boundary
    task.load_data_state(state)
    for images, labels in expected:
        again_images, again_labels = task.train_batch()
        assert torch.equal(images, again_images) and torch.equal(labels, again_labels)


def test_training_subset_is_the_same_for_every_seed() -> None:
    a = make_task(config("image-classification", QUICK, {"name": "sgd", "lr": 0.1}, steps=1, seed=0))
    b = make_task(config("image-classification", QUICK, {"name": "sgd", "lr": 0.1}, steps=1, seed=1))
    assert torch.equal(a.train_images, b.train_images)
    assert not torch.equal(a.train_batch()[1], b.train_batch()[1])


def test_fashion_mnist_through_the_engine(tmp_path: Path) -> None:
    cfg = config("image-classification", QUICK, {"name": "adam", "lr": 3e-3}, steps=30, batch_size=64,
                 eval_every=15, seed=0)
    metrics = run(cfg, tmp_path)
    assert_finite_and_improving(metrics, ["accuracy"])
    accuracy = metrics["eval/accuracy"][1]
    assert accuracy[-1] > accuracy[0], accuracy


def _fake_cifar(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, 8)
        data = rng.integers(0, 256, (8, 3072), dtype=np.uint8)
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, handle)


def test_cifar10_files_through_the_engine(tmp_path: Path) -> None:
    _fake_cifar(tmp_path)
    options = {"dataset": "cifar10", "data_dir": str(tmp_path), "width": 4, "augment": True}
    cfg = config("image-classification", options, {"name": "sgd", "lr": 0.01}, steps=3, batch_size=8)
    task = make_task(cfg)
    assert task.train_images.shape == (40, 3, 32, 32) and task.test_images.shape == (8, 3, 32, 32)
    metrics = run(cfg, tmp_path)
    assert np.isfinite(metrics["eval/loss"][1]).all() and len(metrics["train/loss"][1]) == 3


def test_missing_cifar10_fails_the_run_with_the_loader_message(tmp_path: Path) -> None:
    options = {"dataset": "cifar10", "data_dir": str(tmp_path / "absent")}
    cfg = config("image-classification", options, {"name": "sgd", "lr": 0.01}, steps=3, batch_size=8)
    store = ResultsStore(tmp_path / "store.sqlite")
    with pytest.raises(DatasetMissingError, match="cifar-10-batches-py"):
        run_one(cfg, store)
    (record,) = store.runs()
    assert record.status == "failed" and "DatasetMissingError" in (record.error or "")


@pytest.mark.parametrize(
    ("name", "schedule"),
    [("resnet-delta-gclip-grid", []), ("resnet-delta-gclip", ["schedule.milestones=[1, 2]"])],
)
def test_builtin_configs_run_at_quick_size(name: str, schedule: list[str], tmp_path: Path) -> None:
    overrides = ["task.options.size=quick", "train.steps=3", "train.batch_size=32", "sweep.seeds=[0]",
                 "train.eval_every=null", *schedule]
    points = builtin(name, overrides)
    assert all(p.task.name == "image-classification" for p in points)
    names = {p.optimizer.name for p in points}
    assert names == ({"delta_gclip"} if name.endswith("grid") else {"delta_gclip", "sgd", "adam"})
    metrics = run(points[0], tmp_path)
    assert np.isfinite(metrics["eval/loss"][1]).all()
