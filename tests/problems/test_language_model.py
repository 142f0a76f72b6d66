"""language-model: the character data and split, causality of the Transformer, the evaluation
windows, the data position, training through the engine, the built-in config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _real_tasks import assert_finite_and_improving, builtin, config, make_task, run

from tailclip.problems import TASKS
from tailclip.problems.datasets import shakespeare
from tailclip.problems.language_model import CharTransformer, LanguageModel

QUICK = {"size": "quick"}
ADAM = {"name": "adam", "lr": 3e-3}


def test_registered() -> None:
    assert TASKS["language-model"] is LanguageModel


def test_characters_split_and_eval_windows() -> None:
    task = make_task(config("language-model", QUICK, ADAM, steps=1, batch_size=4))
    text = shakespeare()
    assert len(task.vocabulary) == 84 and task.vocabulary == "".join(sorted(set(text)))
    split = round(len(text) * 0.95)
    decode = lambda ids: "".join(task.vocabulary[i] for i in ids.tolist())  # noqa: E731
    assert len(task.train_tokens) == split and decode(task.train_tokens[:40]) == text[:40]
    # 4,096 validation characters in 128 windows of 32, each target the input shifted by one.
    assert task.eval_inputs.shape == (128, 32) == task.eval_targets.shape
    assert decode(task.eval_inputs[0]) == text[split : split + 32]
    assert decode(task.eval_targets[-1]) == text[split + 4064 + 1 : split + 4096 + 1]


def test_train_windows_are_contiguous_training_text() -> None:
    task = make_task(config("language-model", QUICK, ADAM, steps=1, batch_size=6, seed=3))
    inputs, targets = task.train_batch()
    assert inputs.shape == targets.shape == (6, 32)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    training_text = shakespeare()[: len(task.train_tokens)]
    for row in range(6):
        window = "".join(task.vocabulary[i] for i in [*inputs[row].tolist(), int(targets[row, -1])])
        assert window in training_text


def test_transformer_is_causal_and_ties_its_embedding() -> None:
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=11, context=9, d_model=16, layers=2, heads=4)
    assert model.head.weight is model.token_embedding.weight
    tokens = torch.randint(0, 11, (2, 9))
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-3)


def test_evaluation_is_mean_cross_entropy_over_the_windows() -> None:
    task = make_task(config("language-model", QUICK, ADAM, steps=1, batch_size=4))
    task.model.eval()
    with torch.no_grad():
        metrics = task.evaluate()
        total, count = 0.0, 0
        for i in range(len(task.eval_inputs)):
            logits = task.model(task.eval_inputs[i : i + 1])[0].double()
            total += float(F.cross_entropy(logits, task.eval_targets[i], reduction="sum"))
            count += task.eval_targets.shape[1]
    assert float(metrics["loss"]) == pytest.approx(total / count, rel=1e-5)
    assert float(metrics["perplexity"]) == pytest.approx(math.exp(total / count), rel=1e-5)
    assert float(metrics["bits_per_character"]) == pytest.approx(total / count / math.log(2), rel=1e-5)
    # At initialisation the model is close to uniform over the 84 characters.
    assert abs(float(metrics["loss"]) - math.log(84)) < 0.2


def test_data_position_round_trip() -> None:
    task = make_task(config("language-model", QUICK, ADAM, steps=1, batch_size=4, seed=7))
    task.train_batch()
    state = task.data_state()
    expected = [task.train_batch()[0] for _ in range(3)]
    task.load_data_state(state)
    assert all(torch.equal(e, task.train_batch()[0]) for e in expected)


def test_options_check_heads_and_windows() -> None:
    with pytest.raises(Exception, match="heads"):
        config("language-model", {"size": "quick", "heads": 3}, ADAM, steps=1)
    with pytest.raises(ValueError, match="eval_characters"):
        make_task(config("language-model", {"size": "quick", "eval_characters": 20}, ADAM, steps=1))


def test_training_through_the_engine(tmp_path: Path) -> None:
    cfg = config("language-model", QUICK, ADAM, steps=30, batch_size=16, eval_every=10, seed=0)
    metrics = run(cfg, tmp_path)
    assert_finite_and_improving(metrics, ["perplexity", "bits_per_character"])
    loss, perplexity = metrics["eval/loss"][1], metrics["eval/perplexity"][1]
    assert np.allclose(perplexity, np.exp(loss), rtol=1e-9)


def test_builtin_config_runs_every_optimizer_at_quick_size(tmp_path: Path) -> None:
    overrides = ["task.options.size=quick", "train.steps=4", "train.batch_size=8", "sweep.seeds=[0]",
                 "train.eval_every=null"]
    points = builtin("lm-acclip", overrides)
    labels = {(p.optimizer.name, p.optimizer.hyperparameters.get("clip")) for p in points}
    expected = {("sgd", None), ("clip_sgd", "global"), ("clip_sgd", "coord"), ("acclip", None)}
    assert labels == expected | {("adam", None)}
    for i, point in enumerate(points):
        metrics = run(point, tmp_path / str(i))
        assert np.isfinite(metrics["eval/loss"][1]).all(), point.optimizer
