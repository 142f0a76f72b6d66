"""noisy-quadratic: the objective, the stochastic gradient and the data position."""

from __future__ import annotations

import math

import pytest
import torch

from tailclip.engine.config import parse_config, task_context
from tailclip.problems import TASKS
from tailclip.problems.quadratic import NoisyQuadratic, eigenvalues
from tailclip.problems.samplers import sample_noise


def make_task(seed: int = 0, batch_size: int = 1, **options: object) -> NoisyQuadratic:
    config = parse_config(
        {
            "name": "q",
            "task": {"name": "noisy-quadratic", "options": {"dim": 6, "dtype": "float64", **options}},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"steps": 10, "batch_size": batch_size, "seed": seed},
        }
    )
    opts = NoisyQuadratic.Options.model_validate(config.task.options)
    return NoisyQuadratic(opts, task_context(config, torch.device("cpu")))


def test_registered() -> None:
    assert TASKS["noisy-quadratic"] is NoisyQuadratic


def test_eigenvalues_are_geometric_from_one_to_inverse_condition() -> None:
    a = eigenvalues(5, 16.0)
    assert a.tolist() == pytest.approx([16.0 ** (-i / 4) for i in range(5)], rel=1e-15)
    assert eigenvalues(1, 16.0).tolist() == [1.0]


def test_gradient_is_exact_plus_noise() -> None:
    task = make_task(condition_number=4.0)
    model = task.model
    with torch.no_grad():
        model.x.copy_(torch.arange(6, dtype=torch.float64))
    xi = task.train_batch()
    loss, metrics = task.loss(xi)
    loss.backward()
    a, x_star = model.eigenvalues, model.x_star
    expected = a * (model.x.detach() - x_star) + xi
    assert torch.allclose(model.x.grad, expected, rtol=0, atol=1e-12)
    f = 0.5 * sum(float(a[i]) * (i - float(x_star[i])) ** 2 for i in range(6))
    assert float(metrics["loss"]) == pytest.approx(f, rel=1e-12)
    with torch.no_grad():
        evaluation = task.evaluate()
    assert float(evaluation["loss"]) == pytest.approx(f, rel=1e-12)
    distance = math.sqrt(sum((i - float(x_star[i])) ** 2 for i in range(6)))
    assert float(evaluation["distance"]) == pytest.approx(distance, rel=1e-12)


def test_noise_is_scaled_mean_of_batch_draws() -> None:
    task = make_task(seed=5, batch_size=4, noise="student_t", df=1.5, scale=0.5)
    first, second = task.train_batch(), task.train_batch()
    generator = torch.Generator().manual_seed(5)
    draws = sample_noise("student_t", (4, 6), df=1.5, generator=generator)
    assert torch.equal(first, 0.5 * draws.mean(dim=0))
    draws = sample_noise("student_t", (4, 6), df=1.5, generator=generator)
    assert torch.equal(second, 0.5 * draws.mean(dim=0))


def test_instance_is_fixed_across_training_seeds_and_noise_is_not() -> None:
    a, b = make_task(seed=1), make_task(seed=2)
    assert torch.equal(a.model.x_star, b.model.x_star)
    assert not torch.equal(a.train_batch(), b.train_batch())
    c = make_task(seed=1, instance_seed=3)
    assert not torch.equal(a.model.x_star, c.model.x_star)


def test_data_state_restores_the_stream() -> None:
    task = make_task(seed=9)
    task.train_batch()
    state = task.state_dict()
    expected = [task.train_batch() for _ in range(3)]
    other = make_task(seed=9)
    other.load_state_dict(state)
    assert all(torch.equal(e, other.train_batch()) for e in expected)


def test_sgd_without_noise_follows_the_closed_form() -> None:
    """x_t,i = x*_i (1 - (1 - lr a_i)^t) from x_0 = 0 when scale = 0."""
    task = make_task(scale=0.0, condition_number=10.0)
    lr, steps = 0.3, 7
    opt = torch.optim.SGD(task.model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = task.loss(task.train_batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    a, x_star = task.model.eigenvalues.tolist(), task.model.x_star.tolist()
    expected = [s * (1 - (1 - lr * ai) ** steps) for ai, s in zip(a, x_star)]
    assert task.model.x.detach().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_invalid_family_parameter_is_a_config_error() -> None:
    from tailclip.engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"task.options: Invalid alpha: 2.5"):
        make_task(noise="stable", alpha=2.5)


def test_start_puts_the_optimum_at_zero_and_starts_at_start() -> None:
    task = make_task(start=2.5)
    assert torch.equal(task.model.x_star, torch.zeros(6, dtype=torch.float64))
    assert torch.equal(task.model.x.detach(), torch.full((6,), 2.5, dtype=torch.float64))
    default = make_task()
    assert not torch.equal(default.model.x_star, torch.zeros(6, dtype=torch.float64))
    assert not default.model.x.detach().any()


def test_isotropic_noise_has_the_family_norm_and_uniform_directions() -> None:
    import numpy as np
    import scipy.stats as st

    task = make_task(seed=1, dim=5, noise="pareto", alpha=1.5, isotropic=True)
    xi = np.stack([task.train_batch().numpy() for _ in range(3000)])
    norms = np.linalg.norm(xi, axis=1)
    assert st.kstest(norms, st.lomax(1.5).cdf).pvalue > 0.01
    assert st.kstest(norms, st.lomax(2.0).cdf).pvalue < 0.01
    assert np.abs((xi / norms[:, None]).mean(axis=0)).max() < 4 / math.sqrt(3000 * 5)
    with pytest.raises(ValueError, match="isotropic: true with noise 'skewed'"):
        make_task(noise="skewed", alpha=3.0, isotropic=True)
