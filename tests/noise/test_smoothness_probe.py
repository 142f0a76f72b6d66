"""smoothness_probe: exact on a quadratic, restores the model, fixed dropout masks in train mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailclip.noise import flat_parameters, smoothness_probe


def quadratic_setup() -> tuple[nn.Module, list, torch.Tensor]:
    """Least squares F(w) = mean over batches of mean((Xw - y)^2): Hessian H = 2 mean(X^T X / b)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False).double()
    gen = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(8, 4, generator=gen, dtype=torch.float64),
            torch.randn(8, 1, generator=gen, dtype=torch.float64),
        )
        for _ in range(3)
    ]
    hessian = sum(2 * x.T @ x / 8 for x, _ in batches) / 3
    return model, batches, hessian


def test_exact_on_a_quadratic() -> None:
    model, batches, hessian = quadratic_setup()
    x_t = flat_parameters(model)
    step = torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)
    probe = smoothness_probe(model, nn.MSELoss(), batches, x_t, x_t + step)
    expected = (torch.linalg.vector_norm(hessian @ step) / torch.linalg.vector_norm(step)).item()
    assert probe.smoothness == pytest.approx(expected, rel=1e-10)
    assert probe.ratios == pytest.approx((expected,) * 4, rel=1e-10)  # a quadratic: every gamma agrees
    assert probe.step_norm == pytest.approx(step.norm().item())
    w = x_t.reshape(1, 4)
    grad = sum(2 * x.T @ (x @ w.T - y) / 8 for x, y in batches) / 3
    assert probe.grad_norm == pytest.approx(grad.norm().item(), rel=1e-10)
    assert torch.equal(flat_parameters(model), x_t)


def test_takes_the_max_over_gamma_and_restores_state() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 1)).double()
    gen = torch.Generator().manual_seed(3)
    batches = [
        (
            torch.randn(10, 3, generator=gen, dtype=torch.float64),
            torch.randn(10, 1, generator=gen, dtype=torch.float64),
        )
        for _ in range(2)
    ]
    x_t = flat_parameters(model)
    x_next = x_t + 0.5 * torch.randn(x_t.shape, generator=gen, dtype=torch.float64)
    torch.manual_seed(9)
    rng = torch.get_rng_state()
    model.eval()
    probe = smoothness_probe(model, nn.MSELoss(), batches, x_t, x_next, gammas=(0.25, 1.0))
    assert probe.smoothness == max(probe.ratios) and probe.gammas == (0.25, 1.0)
    assert torch.equal(torch.get_rng_state(), rng) and not model.training
    assert torch.equal(flat_parameters(model), x_t)
    # training mode: the same dropout masks at every point, so two probes agree exactly
    train_a = smoothness_probe(model, nn.MSELoss(), batches, x_t, x_next, train=True, seed=4)
    train_b = smoothness_probe(model, nn.MSELoss(), batches, x_t, x_next, train=True, seed=4)
    assert train_a == train_b and train_a.ratios != probe.ratios and not model.training


def test_parameter_lists_are_accepted() -> None:
    model, batches, _ = quadratic_setup()
    x_t = [p.detach().clone() for p in model.parameters()]
    x_next = [p + 0.1 for p in x_t]
    flat = smoothness_probe(
        model, nn.MSELoss(), batches, flat_parameters(model), flat_parameters(model) + 0.1
    )
    assert smoothness_probe(model, nn.MSELoss(), batches, x_t, x_next) == flat


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batches": []}, "Invalid batches"),
        ({"gammas": (0.0, 1.0)}, "Invalid gammas"),
        ({"x_next": torch.zeros(3, dtype=torch.float64)}, "Invalid x_next: 3 entries; allowed: 4"),
        ({"x_next": None}, "equal to x_t"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    model, batches, _ = quadratic_setup()
    x_t = flat_parameters(model)
    args = {"batches": batches, "x_t": x_t, "x_next": x_t + 1.0, **kwargs}
    if args["x_next"] is None:
        args["x_next"] = x_t.clone()
    with pytest.raises(ValueError, match=match):
        smoothness_probe(
            model, nn.MSELoss(), args.pop("batches"), args.pop("x_t"), args.pop("x_next"), **args
        )
