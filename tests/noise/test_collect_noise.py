"""collect_noise and per-sample gradients: exact noise against hand computation, state restored, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable
from torch import nn

from tailclip.noise import (
    collect_noise,
    noise_scale_from_squared_norms,
    per_sample_grad_norms,
    per_sample_grads,
)


def flat_grad(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return torch.cat([g.reshape(-1) for g in grads])


def mlp(batchnorm: bool = False, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = (
        [nn.Linear(6, 12)]
        + ([nn.BatchNorm1d(12)] if batchnorm else [])
        + [nn.Tanh(), nn.Dropout(dropout), nn.Linear(12, 3)]
    )
    return nn.Sequential(*layers).double()


def classification_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()


def fixed_sampler(batches: list) -> object:
    stream = iter(batches)
    return lambda batch_size, generator: next(stream)


def test_noise_equals_hand_computation_in_training_mode() -> None:
    model = mlp(batchnorm=True)  # BatchNorm: the training-mode gradient differs from eval mode
    x, y = classification_data(8 * 30)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 240, 8)]
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    grads = [flat_grad(model, loss_fn(model(bx), by)) for bx, by in batches]
    gbar = torch.stack(grads[:5]).mean(0)
    expected = torch.stack(grads[5:]) - gbar
    model.eval()
    sample = collect_noise(
        model, loss_fn, fixed_sampler(batches), batch_size=8, mean_batches=5, noise_batches=25
    )
    assert sample.projection == "identity" and sample.n == 25
    np.testing.assert_allclose(sample.projections, expected.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sample.norms, expected.norm(dim=1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(sample.grad_norms, torch.stack(grads[5:]).norm(dim=1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(sample.coord_variance, expected.pow(2).mean(0).numpy(), rtol=1e-10)
    assert sample.mean_grad_norm == pytest.approx(gbar.norm().item(), rel=1e-10)
    assert sample.noise_mean_norm == pytest.approx(expected.mean(0).norm().item(), rel=1e-8)
    assert (sample.batch_size, sample.mean_batches, sample.noise_batches, sample.mode) == (
        8,
        5,
        25,
        "minibatch",
    )
    assert not model.training


def test_per_sample_noise_equals_hand_computation() -> None:
    torch.manual_seed(1)
    model = nn.Linear(5, 1, bias=False).double()  # loss = mean output: the example gradient is x_j
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(10, 5, generator=gen, dtype=torch.float64), torch.zeros(10)) for _ in range(6)]
    sample = collect_noise(
        model,
        lambda out, y: out.mean(),
        fixed_sampler(batches),
        batch_size=10,
        mean_batches=2,
        noise_batches=4,
        per_sample=True,
        chunk_size=3,
        step=17,
    )
    gbar = torch.cat([b[0] for b in batches[:2]]).mean(0)
    expected = torch.cat([b[0] for b in batches[2:]]) - gbar
    np.testing.assert_allclose(sample.projections, expected.numpy(), rtol=1e-12, atol=1e-12)
    assert (sample.n, sample.batch_size, sample.mode, sample.step) == (40, 1, "per_sample", 17)
    assert sample.summary()["mean_batch_size"] == 10


def test_per_sample_noise_of_stable_data_has_its_tail_index() -> None:
    torch.manual_seed(3)
    model = nn.Linear(16, 1, bias=False).double()
    x = torch.from_numpy(levy_stable.rvs(1.5, 0.0, size=(11_000, 16), random_state=np.random.default_rng(4)))
    sample = collect_noise(
        model,
        lambda out, y: out.mean(),
        (x, torch.zeros(11_000)),
        batch_size=100,
        mean_batches=10,
        noise_batches=100,
        per_sample=True,
        chunk_size=100,
    )
    assert sample.n == 10_000
    assert abs(sample.tail_index().alpha - 1.5) <= 0.1


def test_state_is_restored_and_grads_untouched() -> None:
    model = mlp(batchnorm=True, dropout=0.3)
    model.eval()
    model[3].train()  # mixed flags must come back exactly
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    params = [p.detach().clone() for p in model.parameters()]
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    x, y = classification_data(2000)
    sample = collect_noise(
        model, nn.CrossEntropyLoss(), (x, y), batch_size=16, mean_batches=10, noise_batches=60
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    again = collect_noise(
        model, nn.CrossEntropyLoss(), (x, y), batch_size=16, mean_batches=10, noise_batches=60
    )
    other = collect_noise(
        model, nn.CrossEntropyLoss(), (x, y), batch_size=16, mean_batches=10, noise_batches=60, seed=1
    )
    assert np.array_equal(sample.norms, again.norms) and not np.array_equal(sample.norms, other.norms)


def test_noise_mean_is_near_zero() -> None:
    model = mlp()
    x, y = classification_data(16 * 420, seed=5)
    sample = collect_noise(
        model, nn.CrossEntropyLoss(), (x, y), batch_size=16, mean_batches=20, noise_batches=400
    )
    spread = float(np.sqrt(np.mean(sample.norms**2)))
    # mean_j xi_j = (mean of 400 batch gradients) - gbar (20 batches): both errors are noise / sqrt(count)
    assert sample.noise_mean_norm <= 3.0 * spread * np.sqrt(1 / 20 + 1 / 400)
    assert sample.noise_mean_norm < 0.5 * spread
    assert np.linalg.norm(sample.projections.mean(0)) == pytest.approx(sample.noise_mean_norm, rel=1e-9)
    assert sample.noise_scale() == noise_scale_from_squared_norms(
        float(np.mean(sample.grad_norms**2)), sample.mean_grad_norm**2, 16, 320
    )


def test_generic_dataset_gives_the_same_batches_as_tensors() -> None:
    x, y = classification_data(400)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 400

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x[i], y[i]

    kwargs = dict(batch_size=8, mean_batches=5, noise_batches=20, seed=3)
    a = collect_noise(mlp(), nn.CrossEntropyLoss(), (x, y), **kwargs)
    b = collect_noise(mlp(), nn.CrossEntropyLoss(), Pairs(), **kwargs)
    c = collect_noise(mlp(), nn.CrossEntropyLoss(), torch.utils.data.TensorDataset(x, y), **kwargs)
    assert np.array_equal(a.norms, b.norms) and np.array_equal(a.norms, c.norms)


def test_projection_for_larger_models_and_progress() -> None:
    model = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 3)).double()
    x, y = classification_data(600)
    calls = []
    sample = collect_noise(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        batch_size=8,
        mean_batches=4,
        noise_batches=30,
        projection_dim=32,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert (
        sample.projection == "gaussian" and sample.projections.shape == (30, 32) and sample.num_params == 643
    )
    assert calls == [(i, 34) for i in range(1, 35)]
    ratio = np.linalg.norm(sample.projections, axis=1) / sample.norms
    assert 0.6 < ratio.mean() < 1.4


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a(a)) * self.b(b)


def loop_grads(model: nn.Module, loss_fn: object, inputs: object, target: torch.Tensor) -> torch.Tensor:
    """Per-example gradients by a Python loop over examples (the reference)."""
    rows = []
    for j in range(target.shape[0]):
        if isinstance(inputs, dict):
            out = model(**{k: v[j : j + 1] for k, v in inputs.items()})
        elif isinstance(inputs, tuple):
            out = model(*(v[j : j + 1] for v in inputs))
        else:
            out = model(inputs[j : j + 1])
        rows.append(flat_grad(model, loss_fn(out, target[j : j + 1])))
    return torch.stack(rows)


def assert_rows_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    error = (actual - expected).norm(dim=1) / expected.norm(dim=1)
    assert error.max().item() <= rel


def test_per_sample_matches_loop_mlp_and_multi_input() -> None:
    model = mlp(dropout=0.5).eval()
    x, y = classification_data(13)
    loss_fn = nn.CrossEntropyLoss()
    assert_rows_close(
        per_sample_grads(model, loss_fn, (x, y), chunk_size=4), loop_grads(model, loss_fn, x, y)
    )
    torch.manual_seed(0)
    two = TwoInputs()
    a, b, t = torch.randn(9, 4), torch.randn(9, 2), torch.randn(9, 3)
    mse = nn.MSELoss()
    expected = loop_grads(two, mse, (a, b), t)
    assert_rows_close(per_sample_grads(two, mse, ((a, b), t)), expected)
    assert_rows_close(per_sample_grads(two, mse, ({"a": a, "b": b}, t), chunk_size=2), expected)


def test_per_sample_matches_loop_transformer() -> None:
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(30, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(16, 2)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(tokens)).mean(1))

    model = Tiny().eval()
    tokens, labels = torch.randint(0, 30, (12, 7)), torch.randint(0, 2, (12,))
    loss_fn = nn.CrossEntropyLoss()
    expected = loop_grads(model, loss_fn, tokens, labels)
    assert_rows_close(per_sample_grads(model, loss_fn, (tokens, labels), chunk_size=5), expected)
    norms = per_sample_grad_norms(model, loss_fn, (tokens, labels), chunk_size=5)
    assert norms.dtype == torch.float64 and norms.shape == (12,)
    torch.testing.assert_close(norms, expected.double().norm(dim=1), rtol=1e-5, atol=0.0)


def test_batchnorm_is_refused_in_per_sample_mode() -> None:
    model = mlp(batchnorm=True)
    x, y = classification_data(400)
    with pytest.raises(ValueError, match="per_sample=True: the model has BatchNorm \\(1\\)"):
        collect_noise(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            batch_size=8,
            mean_batches=2,
            noise_batches=2,
            per_sample=True,
        )
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        per_sample_grads(model.train(), nn.CrossEntropyLoss(), (x[:4], y[:4]))
    assert per_sample_grads(model.eval(), nn.CrossEntropyLoss(), (x[:4], y[:4])).shape == (4, 147)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (classification_data(100), {}, "100 examples; allowed: at least 240 = 30 batches x batch_size 8"),
        (5, {}, "Invalid data: int"),
        ((torch.zeros(10, 6), torch.zeros(9)), {}, "common first dimension"),
        (classification_data(400), {"batch_size": 0}, "Invalid batch_size"),
        (classification_data(400), {"mean_batches": 0}, "Invalid mean_batches"),
        (classification_data(400), {"noise_batches": 1.5}, "Invalid noise_batches"),
        (classification_data(400), {"projection_dim": 0}, "Invalid projection_dim"),
        (lambda b, g: torch.zeros(b), {}, "sampler returned Tensor"),
    ],
)
def test_errors(data: object, kwargs: dict, match: str) -> None:
    args = {"batch_size": 8, "mean_batches": 10, "noise_batches": 20, **kwargs}
    with pytest.raises(ValueError, match=match):
        collect_noise(mlp(), nn.CrossEntropyLoss(), data, **args)


def test_model_without_trainable_parameters() -> None:
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        collect_noise(
            model,
            nn.CrossEntropyLoss(),
            classification_data(400),
            batch_size=8,
            mean_batches=2,
            noise_batches=2,
        )
