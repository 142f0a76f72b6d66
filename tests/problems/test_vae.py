"""vae: the negative ELBO against float64 loops, the model's shape, deterministic evaluation,
training through the engine, the built-in config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _real_tasks import assert_finite_and_improving, builtin, config, make_task, run

from tailclip.problems import TASKS
from tailclip.problems.vae import VAE, VariationalAutoencoder, negative_elbo

QUICK = {"size": "quick"}
ADAM = {"name": "adam", "lr": 1e-3}


def test_registered() -> None:
    assert TASKS["vae"] is VAE


@pytest.mark.parametrize("reconstruction", ["mse", "bce"])
def test_negative_elbo_matches_float64_loops(reconstruction: str) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    x = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    mu = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    log_var = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    error, kl = negative_elbo(logits, x, mu, log_var, reconstruction)
    for b in range(3):
        expected = 0.0
        for i in range(7):
            p, t = 1.0 / (1.0 + math.exp(-float(logits[b, i]))), float(x[b, i])
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            expected += (p - t) ** 2 if reconstruction == "mse" else bce
        divergence = 0.0
        for j in range(4):
            m, lv = float(mu[b, j]), float(log_var[b, j])
            divergence += 0.5 * (math.exp(lv) + m * m - 1.0 - lv)
        assert float(error[b]) == pytest.approx(expected, rel=1e-12)
        assert float(kl[b]) == pytest.approx(divergence, rel=1e-12)


def test_model_follows_the_published_notebook() -> None:
    task = make_task(config("vae", {}, ADAM, steps=1, batch_size=8))
    model = task.model
    assert isinstance(model, VariationalAutoencoder)
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [50, 50, 50, 50, 50, 50, 784]  # encoder 2, mean, log variance, decoder 3
    assert sum(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in model.modules()) == 4
    assert len(task.train_images) == 60000 and len(task.test_images) == 10000
    logits, mu, log_var = model(task.train_batch(), torch.zeros(8, 50))
    assert logits.shape == (8, 784) and mu.shape == log_var.shape == (8, 50)


def test_sum_reduction_scales_the_gradient_by_the_batch_size() -> None:
    grads = {}
    for reduction in ("sum", "mean"):
        options = {**QUICK, "reduction": reduction}
        task = make_task(config("vae", options, ADAM, steps=1, batch_size=16, seed=4))
        batch = task.train_batch()
        torch.manual_seed(11)
        loss, metrics = task.loss(batch)
        loss.backward()
        grads[reduction] = torch.cat([p.grad.flatten() for p in task.model.parameters()])
        per_image = float(loss.detach()) / (16 if reduction == "sum" else 1)
        assert float(metrics["loss"]) == pytest.approx(per_image, rel=1e-6)
    assert torch.allclose(grads["sum"], 16 * grads["mean"], rtol=1e-5, atol=1e-6)


def test_evaluation_is_deterministic_and_averages_over_images() -> None:
    task = make_task(config("vae", QUICK, ADAM, steps=1, batch_size=8))
    task.model.eval()
    with torch.no_grad():
        first, second = task.evaluate(), task.evaluate()
        assert all(float(first[k]) == float(second[k]) for k in first)
        assert float(first["loss"]) == pytest.approx(float(first["reconstruction"] + first["kl"]), rel=1e-12)
        # The untrained decoder outputs about 1/2 per pixel: R is near sum_i (1/2 - x_i)^2.
        x = task.test_images.double() / 255.0
        half = float((0.5 - x).square().sum(dim=1).mean())
        assert abs(float(first["reconstruction"]) - half) < 0.1 * half


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
    assert [p.optimizer.name for p in points].count("adam") == 1 and deltas[-2:] == [0.0, 0.1]
    for i, point in enumerate(points):
        metrics = run(point, tmp_path / str(i))
        assert np.isfinite(metrics["eval/loss"][1]).all(), point.optimizer
