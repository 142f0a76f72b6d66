"""text-classification: the fixed split, whole-set metrics (reference formulas, the per-batch MCC
defect), the pretrained model, the data position, a few steps through the engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _real_tasks import assert_finite_and_improving, builtin, config, make_task, run
from safetensors.torch import load_file

from tailclip.engine.optimizer_spec import build_optimizer
from tailclip.problems import TASKS
from tailclip.problems.datasets import minilm_path, rotten_tomatoes
from tailclip.problems.text_classification import (
    VALIDATION_SIZE,
    TextClassification,
    binary_metrics,
    confusion_counts,
    rotten_tomatoes_split,
)

TINY = {"size": "quick", "max_length": 16, "train_examples": 64, "val_examples": 48}


def reference_metrics(y_true: list[int], y_pred: list[int]) -> tuple[float, float, float]:
    """Accuracy, F1 and MCC by plain loops over the examples, in float64."""
    tp = fp = fn = tn = 0
    for t, p in zip(y_true, y_pred):
        if p == 1 and t == 1:
            tp += 1
        elif p == 1:
            fp += 1
        elif t == 1:
            fn += 1
        else:
            tn += 1
    accuracy = (tp + tn) / len(y_true)
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / den if den else 0.0
    return accuracy, f1, mcc


def test_registered() -> None:
    assert TASKS["text-classification"] is TextClassification


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binary_metrics_match_reference_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    counts = confusion_counts(torch.from_numpy(p), torch.from_numpy(y))
    metrics = binary_metrics(counts)
    accuracy, f1, mcc = reference_metrics(y.tolist(), p.tolist())
    assert float(metrics["accuracy"]) == pytest.approx(accuracy, rel=1e-12)
    assert float(metrics["f1"]) == pytest.approx(f1, rel=1e-12)
    assert float(metrics["mcc"]) == pytest.approx(mcc, rel=1e-12)


def test_degenerate_predictions_give_zero_mcc_and_f1() -> None:
    y = torch.tensor([0, 0, 1, 1])
    metrics = binary_metrics(confusion_counts(torch.zeros(4, dtype=torch.int64), y))
    assert float(metrics["accuracy"]) == 0.5 and float(metrics["f1"]) == 0.0 and float(metrics["mcc"]) == 0.0
    metrics = binary_metrics(confusion_counts(y, y))
    assert float(metrics["mcc"]) == 1.0 and float(metrics["f1"]) == 1.0


def test_mcc_of_the_set_is_not_the_mean_of_batch_mccs() -> None:
    """The reference code averaged per-batch MCCs; the whole-set value differs (and is the right one)."""
    y = [1, 1, 0, 0, 1, 0, 0, 0]
    p = [1, 0, 0, 0, 1, 1, 0, 0]
    batches = [(y[:4], p[:4]), (y[4:], p[4:])]
    per_batch = sum(reference_metrics(t, q)[2] for t, q in batches) / 2
    whole = binary_metrics(confusion_counts(torch.tensor(p), torch.tensor(y)))
    assert float(whole["mcc"]) == pytest.approx(reference_metrics(y, p)[2], rel=1e-12)
    assert abs(float(whole["mcc"]) - per_batch) > 0.05


def test_split_is_fixed_disjoint_and_documented() -> None:
    train, val = rotten_tomatoes_split()
    assert len(val) == VALIDATION_SIZE == 500 and len(train) == 12308
    assert len(set(train.tolist()) | set(val.tolist())) == 12808
    expected = np.random.default_rng(0).permutation(12808)
    assert np.array_equal(val, expected[:500]) and np.array_equal(train, expected[500:])
    _, labels = rotten_tomatoes()
    assert 0.5 < labels[val].mean() < 0.65


def test_task_loads_pretrained_encoder_and_a_seeded_head() -> None:
    optimizer = {"name": "adamw", "lr": 1e-4}
    a = make_task(config("text-classification", TINY, optimizer, steps=2, batch_size=4, seed=0))
    b = make_task(config("text-classification", TINY, optimizer, steps=2, batch_size=4, seed=1))
    checkpoint = load_file(str(minilm_path() / "model.safetensors"))
    encoder = a.model.base_model.state_dict()
    keys = ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight", "pooler.dense.bias")
    for key in keys:
        assert torch.equal(encoder[key], checkpoint[key])
    assert not torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    assert a.model.training


def test_batches_are_padded_to_their_longest_member_and_resume_exactly() -> None:
    cfg = config("text-classification", TINY, {"name": "adamw", "lr": 1e-4}, steps=2, batch_size=8, seed=3)
    task = make_task(cfg)
    batch = task.train_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] <= 16 and ids.shape == mask.shape
    assert int(mask.sum(dim=1).max()) == ids.shape[1]
    assert torch.equal(ids[:, 0], torch.full((8,), 101))  # [CLS]
    lengths = mask.sum(dim=1)
    assert all(int(ids[i, lengths[i] - 1]) == 102 for i in range(8))  # [SEP] ends each example
    state = task.data_state()
    expected = [task.train_batch()["labels"] for _ in range(3)]
    task.load_data_state(state)
    assert all(torch.equal(e, task.train_batch()["labels"]) for e in expected)


@pytest.mark.slow
def test_fine_tuning_through_the_engine(tmp_path: Path) -> None:
    options = {**TINY, "train_examples": 128, "val_examples": 64}
    optimizer = {"name": "adamw", "lr": 1e-4}
    cfg = config("text-classification", options, optimizer, steps=12, batch_size=8, eval_every=6, seed=0)
    metrics = run(cfg, tmp_path)
    # Batches of 8 snippets make the train loss of 12 steps too noisy to compare; the whole
    # validation set is not.
    assert_finite_and_improving(metrics, ["accuracy", "f1", "mcc"], train_loss=False)
    assert -1.0 <= metrics["eval/mcc"][1].min() and metrics["eval/mcc"][1].max() <= 1.0
    assert metrics["eval/loss"][0].tolist() == [0, 6, 12]


@pytest.mark.parametrize("name", ["text-chezhegov", "text-agni"])
def test_builtin_configs_resolve(name: str) -> None:
    points = builtin(name, [])
    assert all(p.task.name == "text-classification" and p.task.options["size"] == "default" for p in points)
    assert {p.train.seed for p in points} == ({0, 1, 2, 3, 4} if name == "text-agni" else {0, 1, 2})


@pytest.mark.slow
def test_agni_config_runs_through_the_engine(tmp_path: Path) -> None:
    """The AGNI point of the built-in config, at the tiny size, for 3 steps."""
    overrides = [f"task.options={TINY}", "train.steps=3", "train.batch_size=4", "sweep.seeds=[0]"]
    points = [p for p in builtin("text-agni", overrides) if p.optimizer.name == "noise_injection"]
    assert len(points) == 1 and points[0].optimizer.hyperparameters["variance"] == "ema"
    metrics = run(points[0], tmp_path)
    assert np.isfinite(metrics["eval/mcc"][1]).all() and len(metrics["train/loss"][1]) == 3


def test_agni_config_injects_nonzero_noise_from_the_second_step() -> None:
    """With one micro-batch per step (the runner's loop) the EMA estimator still makes noise."""
    overrides = [f"task.options={TINY}", "train.batch_size=4", "sweep.seeds=[0]"]
    (point,) = [p for p in builtin("text-agni", overrides) if p.optimizer.name == "noise_injection"]
    task = make_task(point)
    optimizer = build_optimizer(point.optimizer, list(task.model.parameters()))
    noise, grads = [], []
    for _ in range(3):
        loss, _ = task.loss(task.train_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        noise.append(float(optimizer.last_noise_norm))
        grads.append(float(optimizer.last_grad_norm))
    assert noise[0] == 0.0 and noise[1] > 0.0 and noise[2] > 0.0
    assert all(math.isfinite(n) and math.isfinite(g) and g > 0 for n, g in zip(noise, grads))
