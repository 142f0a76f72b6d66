"""stochastic-quadratic: the problem, the noise, schedules, averaging, and run r = the optimizer class."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.stats as st
import torch

from tailclip.engine.config import ConfigError, parse_config, task_context
from tailclip.engine.runner import run_one
from tailclip.engine.store import ResultsStore
from tailclip.optim import ClipAdaGrad, ClipAdam, ClipSGD
from tailclip.problems import TASKS
from tailclip.problems.samplers import sample_noise
from tailclip.problems.synthetic import StochasticQuadratic, theory_threshold_factor


def config_dict(options: dict[str, Any], optimizer: dict[str, Any], steps: int = 10, **train: Any) -> dict:
    return {
        "name": "sq",
        "task": {"name": "stochastic-quadratic", "options": options},
        "optimizer": optimizer,
        "train": {"steps": steps, "seed": 3, "checkpoint_every": None, **train},
    }


def make_task(options: dict[str, Any], optimizer: dict[str, Any], **train: Any) -> StochasticQuadratic:
    config = parse_config(config_dict(options, optimizer, **train))
    opts = StochasticQuadratic.Options.model_validate(config.task.options)
    return StochasticQuadratic(opts, task_context(config, torch.device("cpu")))


SGD = {"name": "clip_sgd", "lr": 0.1, "clip": None}


def test_registered_as_a_vectorized_task() -> None:
    assert TASKS["stochastic-quadratic"] is StochasticQuadratic
    assert StochasticQuadratic.kind == "vectorized"
    task = make_task({"runs": 7, "dim": 3}, SGD)
    assert task.runs == 7 and task.x.shape == (7, 3) and task.x.dtype == torch.float64


def test_gradient_step_without_noise_is_exact() -> None:
    """x_1 = x_0 - lr A x_0 with A = diag(kappa^(-(i-1)/(d-1)))."""
    task = make_task({"runs": 2, "dim": 3, "condition_number": 4.0, "x0": 2.0, "noise": "none"}, SGD)
    metrics = task.step(0.5)
    a = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    expected = 2.0 - 0.05 * a * 2.0
    assert torch.equal(task.x, expected.expand(2, 3))
    assert torch.allclose(metrics["error"], 0.5 * (a * expected**2).sum().expand(2), rtol=1e-15, atol=0)
    assert torch.allclose(metrics["sq_dist"], (expected**2).sum().expand(2), rtol=1e-15, atol=0)
    assert torch.equal(metrics["clipped"], torch.zeros(2, dtype=torch.float64))


def test_noise_is_the_sampler_stream_of_the_seed() -> None:
    task = make_task({"runs": 5, "dim": 2, "noise": "stable", "alpha": 1.3, "noise_scale": 2.0}, SGD)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        expected = 2.0 * sample_noise("stable", (1, 5, 2), alpha=1.3, generator=generator)[0]
        assert torch.equal(task.noise(), expected)


def test_batch_size_averages_draws() -> None:
    task = make_task({"runs": 4, "dim": 2, "noise": "pareto", "alpha": 2.5}, SGD, batch_size=3)
    expected = sample_noise("pareto", (3, 4, 2), alpha=2.5, generator=torch.Generator().manual_seed(3)).mean(
        dim=0
    )
    assert torch.equal(task.noise(), expected)


def test_isotropic_noise_has_the_family_norm_and_uniform_directions() -> None:
    task = make_task({"runs": 3000, "dim": 5, "noise": "pareto", "alpha": 1.5, "isotropic": True}, SGD)
    xi = task.noise().numpy()
    norms = np.linalg.norm(xi, axis=1)
    assert st.kstest(norms, st.lomax(1.5).cdf).pvalue > 0.01
    assert st.kstest(norms, st.lomax(2.0).cdf).pvalue < 0.01
    directions = xi / norms[:, None]
    assert np.abs(directions.mean(axis=0)).max() < 4 / math.sqrt(3000 * 5)


def test_independent_coordinates_are_the_default() -> None:
    task = make_task({"runs": 3000, "dim": 2, "noise": "student_t", "df": 3.0}, SGD)
    xi = task.noise().numpy()
    assert st.kstest(xi[:, 0], st.t(3.0).cdf).pvalue > 0.01
    assert st.kstest(xi[:, 1], st.t(3.0).cdf).pvalue > 0.01
    assert abs(np.corrcoef(np.abs(xi[:, 0]), np.abs(xi[:, 1]))[0, 1]) < 0.1


def replay(cls: type, hp: dict[str, Any], options: dict[str, Any], steps: int) -> None:
    """Run r of the task against the optimizer class fed the same noise (same seed, same stream)."""
    task = make_task(
        options,
        {"name": {ClipSGD: "clip_sgd", ClipAdam: "clip_adam", ClipAdaGrad: "clip_adagrad"}[cls], **hp},
    )
    stream = make_task(options, {"name": "clip_sgd", "lr": 0.1})
    noises = [stream.noise() for _ in range(steps)]
    for _ in range(steps):
        task.step(1.0)
    a = task.eigenvalues
    for r in range(options["runs"]):
        p = torch.nn.Parameter(torch.full((options["dim"],), float(options["x0"]), dtype=torch.float64))
        optimizer = cls([p], foreach=False, **hp)
        for t in range(steps):
            p.grad = a * p.detach() + noises[t][r]
            optimizer.step()
        assert torch.equal(task.x[r], p.detach()), f"run {r}"


def test_run_r_is_clip_sgd_fed_the_same_noise() -> None:
    replay(
        ClipSGD,
        {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 0.5},
        {"runs": 5, "dim": 3, "condition_number": 10.0, "x0": 1.0, "noise": "pareto", "alpha": 1.5},
        30,
    )


def test_run_r_is_clip_adam_norm_fed_the_same_noise() -> None:
    replay(
        ClipAdam,
        {"lr": 0.1, "norm": True, "clip": "global", "max_norm": 0.5},
        {"runs": 5, "dim": 3, "x0": 2.0, "noise": "stable", "alpha": 1.5},
        30,
    )


def test_run_r_is_delayed_clipped_adagrad_norm_fed_the_same_noise() -> None:
    replay(
        ClipAdaGrad,
        {"lr": 0.5, "norm": True, "delay": True, "clip": "global", "max_norm": 0.5, "b0": 3.0, "eps": 0.0},
        {"runs": 5, "dim": 1, "x0": 2.0, "noise": "pareto", "alpha": 1.5},
        30,
    )


def test_inverse_step_size_follows_lr_over_k_plus_one() -> None:
    task = make_task(
        {"runs": 1, "dim": 1, "x0": 1.0, "noise": "none", "step_size": "inverse"},
        {"name": "clip_sgd", "lr": 0.5, "clip": None},
    )
    x = 1.0
    for k in range(1, 8):
        task.step(1.0)
        x = x - 0.5 / (k + 1) * x
        assert task.x.item() == pytest.approx(x, rel=1e-15)


@pytest.mark.parametrize("clip,dim_factor", [("global", True), ("coord", False)])
def test_theory_threshold_is_b_times_dimension_factor_times_k_to_the_one_over_alpha(
    clip: str, dim_factor: bool
):
    """With a huge x every coordinate's gradient is clipped: the step is exactly lr * tau_k."""
    dim, alpha, b = 4, 1.6, 0.3
    task = make_task(
        {"runs": 2, "dim": dim, "x0": 1e9, "noise": "none", "threshold": "theory", "alpha": alpha},
        {"name": "clip_sgd", "lr": 0.1, "clip": clip, "max_norm": b},
    )
    for k in range(1, 6):
        before = task.x.clone()
        metrics = task.step(1.0)
        tau = b * (dim ** (1 / alpha) if dim_factor else 1.0) * k ** (1 / alpha)
        assert tau == pytest.approx(b * theory_threshold_factor(clip, dim, alpha, k), rel=1e-15)
        moved = before - task.x
        length = torch.linalg.vector_norm(moved, dim=1) if clip == "global" else moved.abs().max(dim=1).values
        torch.testing.assert_close(
            length, torch.full((2,), 0.1 * tau, dtype=torch.float64), rtol=1e-6, atol=0
        )
        assert torch.equal(metrics["clipped"], torch.ones(2, dtype=torch.float64))


def test_weighted_average_is_theorem_4s_output() -> None:
    """xbar_k = sum_{j=1..k} j x_{j-1} / sum_j j, from the recorded iterates."""
    task = make_task({"runs": 3, "dim": 2, "noise": "gaussian", "average": "weighted"}, SGD)
    iterates = [task.x.clone()]
    for k in range(1, 7):
        metrics = task.step(1.0)
        iterates.append(task.x.clone())
        xbar = sum(j * iterates[j - 1] for j in range(1, k + 1)) / sum(range(1, k + 1))
        torch.testing.assert_close(task.averaged(), xbar, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(metrics["avg_error"], 0.5 * (xbar**2).sum(dim=1), rtol=1e-13, atol=1e-15)


def test_uniform_average_starts_after_average_start() -> None:
    task = make_task(
        {"runs": 3, "dim": 2, "noise": "gaussian", "average": "uniform", "average_start": 3}, SGD
    )
    iterates = []
    for k in range(1, 8):
        task.step(1.0)
        iterates.append(task.x.clone())
        if k <= 3:
            assert torch.equal(task.averaged(), task.x)
        else:
            torch.testing.assert_close(
                task.averaged(), torch.stack(iterates[3:]).mean(dim=0), rtol=1e-14, atol=1e-15
            )


def test_clip_fraction_counts_the_clipped_steps_of_each_run() -> None:
    task = make_task(
        {"runs": 50, "dim": 1, "noise": "pareto", "alpha": 1.2},
        {"name": "clip_sgd", "lr": 0.1, "clip": "global", "max_norm": 1.0},
    )
    clipped = torch.stack([task.step(1.0)["clipped"] for _ in range(20)])
    evaluation = task.evaluate()
    assert torch.equal(evaluation["clip_fraction"], clipped.mean(dim=0))
    assert 0 < clipped.mean() < 1
    assert set(evaluation) == {"error", "sq_dist", "clip_fraction"}


def test_state_dict_resumes_exactly() -> None:
    options = {"runs": 4, "dim": 2, "noise": "stable", "alpha": 1.5, "average": "weighted"}
    optimizer = {"name": "clip_adam", "lr": 0.05, "clip": "global", "max_norm": 1.0}
    task = make_task(options, optimizer)
    for _ in range(5):
        task.step(1.0)
    saved = task.state_dict()
    finish = [task.step(1.0) for _ in range(5)]
    other = make_task(options, optimizer)
    other.load_state_dict(saved)
    again = [other.step(1.0) for _ in range(5)]
    assert torch.equal(task.x, other.x)
    for a, b in zip(finish, again):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "options,optimizer,message",
    [
        (
            {},
            {"name": "noise_injection", "base_optimizer": {"name": "adamw", "lr": 0.1}},
            "no vectorized form",
        ),
        ({}, {"name": "adam", "lr": 0.1}, "no vectorized form"),
        ({"threshold": "theory"}, {"name": "acclip", "lr": 0.1}, "threshold"),
        ({"threshold": "theory"}, {"name": "clip_sgd", "lr": 0.1, "clip": None}, "threshold"),
        ({"threshold": "theory", "alpha": 2.5}, {"name": "clip_sgd", "lr": 0.1}, "alpha"),
        ({"isotropic": True, "noise": "skewed"}, SGD, "isotropic"),
        ({"average_start": 5}, SGD, "average_start"),
        ({"noise": "cauchy"}, SGD, "noise"),
        ({"runs": 0}, SGD, "runs"),
        ({"noise": "skewed", "alpha": 1.0}, SGD, "alpha"),
        ({}, {"name": "clip_sgd", "lr": 0.1, "max_norm": {"policy": "zclip"}}, "max_norm"),
    ],
)
def test_config_errors_are_one_line(options: dict, optimizer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(config_dict(options, optimizer))
    assert "\n" not in str(info.value)


def test_runner_logs_quantiles_over_independent_runs(tmp_path) -> None:
    """The engine's quantiles at the last step are those of the R per-run final values."""
    config = parse_config(
        {
            **config_dict(
                {"runs": 300, "dim": 1, "noise": "pareto", "alpha": 1.5, "x0": 2.0},
                {
                    "name": "clip_adagrad",
                    "lr": 0.5,
                    "norm": True,
                    "b0": 3.0,
                    "clip": "global",
                    "max_norm": 0.5,
                },
                steps=40,
                log_every=10,
            ),
            "output": {"store": str(tmp_path / "s.sqlite")},
        }
    )
    store = ResultsStore(tmp_path / "s.sqlite")
    run_id = run_one(config, store)
    series = store.metrics(run_ids=[run_id])[run_id]
    steps, q99 = series["train/sq_dist/q99"]
    assert steps.tolist() == [10, 20, 30, 40]
    (artifact,) = store.artifacts(run_id=run_id, kind="per_run/train/sq_dist")
    final = np.load(artifact.path)
    assert final.shape == (300,)
    assert q99[-1] == pytest.approx(float(torch.quantile(torch.from_numpy(final), 0.99)), rel=1e-12)
    assert series["train/sq_dist/mean"][1][-1] == pytest.approx(final.mean(), rel=1e-12)
    (evaluated,) = store.artifacts(run_id=run_id, kind="per_run/eval/clip_fraction")
    assert np.load(evaluated.path).shape == (300,)
    assert {"train/error/q10", "train/clipped/mean", "eval/clip_fraction/q50"} <= set(series)


def test_model_twin_trains_one_run_of_the_problem() -> None:
    """noisy-quadratic with the twin's options, trained by the optimizer class through autograd,
    follows run 0 of the vectorized task exactly (same seed: the same noise stream)."""
    options = {"runs": 1, "dim": 4, "condition_number": 10.0, "x0": 2.0, "noise": "pareto", "alpha": 1.5}
    hp = {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 0.5}
    task = make_task(options, {"name": "clip_sgd", **hp})
    twin = StochasticQuadratic.model_twin(StochasticQuadratic.Options.model_validate(options))
    assert twin.task == "noisy-quadratic" and twin.resets == {}
    config = parse_config(
        {
            "name": "twin",
            "task": {"name": twin.task, "options": twin.options},
            "optimizer": {"name": "clip_sgd", **hp},
            "train": {"steps": 10, "seed": 3},
        }
    )
    cls = TASKS[twin.task]
    context = task_context(config, torch.device("cpu"))
    model_task = cls(cls.Options.model_validate(config.task.options), context)
    assert torch.equal(model_task.model.x.detach(), task.x[0]) and not model_task.model.x_star.any()
    optimizer = ClipSGD(model_task.model.parameters(), foreach=False, **hp)
    for _ in range(30):
        task.step(1.0)
        loss, _ = model_task.loss(model_task.train_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(model_task.model.x.detach(), task.x[0])


def test_model_twin_lists_what_it_does_not_carry() -> None:
    options = StochasticQuadratic.Options.model_validate(
        {"runs": 50, "dim": 3, "noise": "stable", "alpha": 1.6, "step_size": "inverse",
         "threshold": "theory", "average": "uniform", "average_start": 5}
    )
    twin = StochasticQuadratic.model_twin(options)
    assert [line.split(":")[0] for line in twin.not_carried] == [
        "runs", "step_size", "threshold", "average", "average_start"
    ]
    assert twin.resets == {
        "step_size": "constant", "threshold": "constant", "average": "none", "average_start": 0
    }
    assert (twin.options["start"], twin.options["scale"], twin.options["dtype"]) == (1.0, 1.0, "float64")
    with pytest.raises(ValueError, match="task.options.noise: 'none' has no gradient noise"):
        StochasticQuadratic.model_twin(StochasticQuadratic.Options.model_validate({"noise": "none"}))
