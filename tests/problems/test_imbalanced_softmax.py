"""imbalanced-softmax: power-law classes, ill-conditioned inputs, epochs, and a run through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from tailclip.engine.config import parse_config, task_context
from tailclip.engine.runner import run_one
from tailclip.engine.store import ResultsStore
from tailclip.problems import TASKS
from tailclip.problems.imbalanced_softmax import ImbalancedSoftmax, ImbalancedSoftmaxOptions, imbalanced_data

SMALL = {"classes": 16, "examples": 512, "dim": 8}


def make_config(batch_size: int = 32, seed: int = 0, **options: object):  # noqa: ANN201
    return parse_config(
        {
            "name": "imb",
            "task": {"name": "imbalanced-softmax", "options": {**SMALL, **options}},
            "optimizer": {"name": "sgd", "lr": 1.0},
            "train": {"epochs": 2, "batch_size": batch_size, "seed": seed, "eval_every": 8},
        }
    )


def make_task(**kwargs: object) -> ImbalancedSoftmax:
    config = make_config(**kwargs)
    options = ImbalancedSoftmaxOptions.model_validate(config.task.options)
    return ImbalancedSoftmax(options, task_context(config, torch.device("cpu")))


def test_registered() -> None:
    assert TASKS["imbalanced-softmax"] is ImbalancedSoftmax


def test_class_frequencies_follow_the_power_law() -> None:
    options = ImbalancedSoftmaxOptions(classes=10, examples=20_000, dim=4, zipf_exponent=1.0)
    _, y = imbalanced_data(options)
    counts = torch.bincount(y, minlength=10).double()
    expected = 1.0 / torch.arange(1, 11, dtype=torch.float64)
    expected = expected / expected.sum() * 20_000
    assert bool((counts >= 1).all())
    assert torch.allclose(counts, expected, rtol=0.1)  # multinomial sampling spread: ~3% at the tail


def test_features_are_scaled_from_one_to_inverse_condition_number() -> None:
    options = ImbalancedSoftmaxOptions(classes=4, examples=20_000, dim=3, condition_number=100.0)
    x, _ = imbalanced_data(options)
    ratio = x[:, 0].std() / x[:, 2].std()
    assert 60 < float(ratio) < 160  # class means add spread, so not exactly 100


def test_same_instance_seed_same_data() -> None:
    options = ImbalancedSoftmaxOptions(**SMALL)
    a, b = imbalanced_data(options), imbalanced_data(options)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_starts_at_uniform_prediction_and_full_batch_is_one_step_per_epoch() -> None:
    task = make_task(batch_size=512)
    assert task.steps_per_epoch() == 1
    with torch.no_grad():
        metrics = task.evaluate()
    assert float(metrics["loss"]) == pytest.approx(math.log(16), rel=1e-6)  # zero weights: uniform
    x, y = task.train_batch()
    assert x.shape == (512, 8) and sorted(y.tolist()) == sorted(task.labels.tolist())


def test_runs_through_the_engine_and_improves(tmp_path) -> None:  # noqa: ANN001
    store = ResultsStore(tmp_path / "runs.sqlite")
    run_id = run_one(make_config(), store)
    series = store.metrics([run_id], ["eval/loss", "eval/rare_loss"])[run_id]
    steps, loss = series["eval/loss"]
    assert steps[-1] == 32  # 2 epochs of 16 steps
    assert loss[-1] < 0.8 * loss[0] and all(math.isfinite(v) for v in loss)
    assert series["eval/rare_loss"][1][-1] > loss[-1]  # SGD lags on the rare classes
