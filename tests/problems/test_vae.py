"""vae: the negative ELBO against float64 loops, the model's shape, deterministic evaluation,
training through the engine, the built-in config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _real_tasks import assert_finite_and_improving, builtin, config, make_task, run

from tailclip.engine.tasks import TASKS
from tailclip.problems.vae import VAE, VariationalAutoencoder, negative_elbo

QUICK = {"size": "quick"}
ADAM = {"name": "adam", "lr": 1e-3}


def test_registered() -> None:
    assert TASKS["vae"] is VAE


def test_negative_elbo_matches_float64_loops() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    x = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    mu = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    log_var = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    reconstruction, kl = negative_elbo(logits, x, mu, log_var)
    for b in range(3):
        bce = 0.0
        for i in range(7):
            p = 1.0 / (1.0 + math.exp(-float(logits[b, i])))
            bce -= float(x[b, i]) * math.log(p) + (1.0 - float(x[b, i])) * math.log(1.0 - p)
        divergence = 0.0
        for j in range(4):
            m, lv = float(mu[b, j]), float(log_var[b, j])
            divergence += 0.5 * (math.exp(lv) + m * m - 1.0 - lv)
        assert float(reconstruction[b]) == pytest.approx(bce, rel=1e-12)
        assert float(kl[b]) == pytest.approx(divergence, rel=1e-12)


def test_model_has_the_papers_latent_size() -> None:
    task = make_task(config("vae", {}, ADAM, steps=1, batch_size=8))
    model = task.model
    assert isinstance(model, VariationalAutoencoder)
    assert model.mean.out_features == 50 and model.encoder.out_features == 400
    assert len(task.train_images) == 60000 and len(task.test_images) == 10000
    logits, mu, log_var = model(task.train_batch(), torch.zeros(8, 50))
    assert logits.shape == (8, 784) and mu.shape == log_var.shape == (8, 50)


def test_evaluation_is_deterministic_and_averages_over_images() -> None:
    task = make_task(config("vae", QUICK, ADAM, steps=1, batch_size=8))
    task.model.eval()
    with torch.no_grad():
        first, second = task.evaluate(), task.evaluate()
        assert all(float(first[k]) == float(second[k]) for k in first)
        assert float(first["loss"]) == pytest.approx(float(first["reconstruction"] + first["kl"]), rel=1e-12)
        # An untrained decoder predicts ~0.5 per pixel: about 784 ln 2 nats of reconstruction error.
        assert abs(float(first["reconstruction"]) - 784 * math.log(2)) < 60


def test_data_position_round_trip() -> None:
    task = make_task(config("vae", QUICK, ADAM, steps=1, batch_size=100, seed=5))
    state = task.data_state()
    expected = [task.train_batch() for _ in range(25)]  # 20 batches per epoch: crosses an epoch
    task.load_data_state(state)
    assert all(torch.equal(e, task.train_batch()) for e in expected)


def test_training_through_the_engine(tmp_path: Path) -> None:
    cfg = config("vae", QUICK, ADAM, steps=30, batch_size=64, eval_every=10, seed=0)
    metrics = run(cfg, tmp_path)
    assert_finite_and_improving(metrics, ["reconstruction", "kl"])
    assert set(metrics) >= {"train/reconstruction", "train/kl", "opt/grad_norm", "time/step_seconds"}


def test_builtin_config_runs_every_optimizer_at_quick_size(tmp_path: Path) -> None:
    overrides = ["task.options.size=quick", "train.steps=5", "train.batch_size=32", "sweep.seeds=[0]",
                 "train.eval_every=null"]
    points = builtin("vae-delta-gclip", overrides)
    deltas = sorted(p.optimizer.hyperparameters.get("delta", -1.0) for p in points)
    assert [p.optimizer.name for p in points].count("adam") == 1 and deltas[1] == 0.0 and deltas[2] > 0.0
    for i, point in enumerate(points):
        metrics = run(point, tmp_path / str(i))
        assert np.isfinite(metrics["eval/loss"][1]).all(), point.optimizer
