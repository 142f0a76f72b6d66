"""RandomProjection: identity / dense Gaussian / sign sketch, all linear with E||Px||^2 = ||x||^2."""

from __future__ import annotations

import math

import pytest
import torch

from tailclip.noise import RandomProjection


def test_kinds_by_size() -> None:
    assert RandomProjection(100, 256).kind == "identity"
    assert RandomProjection(1000, 64).kind == "gaussian"
    assert RandomProjection(1000, 64, dense_limit=1000).kind == "sketch"
    x = torch.randn(3, 100, dtype=torch.float64)
    assert torch.equal(RandomProjection(100, 256)(x), x)


@pytest.mark.parametrize("dense_limit", [1 << 24, 0])
def test_norms_preserved_in_expectation_and_linear(dense_limit: int) -> None:
    k, d = 64, 2000
    gen = torch.Generator().manual_seed(0)
    scales = torch.exp(torch.randn(d, generator=gen))  # anisotropic vectors, as gradient noise
    x = torch.randn(20, d, generator=gen, dtype=torch.float64) * scales
    ratios = []
    for seed in range(60):  # the expectation is over the random projection
        proj = RandomProjection(d, k, seed=seed, dense_limit=dense_limit)
        y = proj(x)
        assert y.shape == (20, k) and y.dtype == torch.float64
        ratios.append(y.pow(2).sum(1) / x.pow(2).sum(1))
    ratio = torch.stack(ratios)
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.03)
    assert ratio.std().item() <= 1.2 * math.sqrt(2.0 / k)
    assert torch.allclose(proj(x[:5].sum(0)), y[:5].sum(0), rtol=1e-10, atol=1e-10)


def test_seeded_and_float32() -> None:
    x = torch.randn(4, 500)
    a, b, c = (
        RandomProjection(500, 16, seed=1),
        RandomProjection(500, 16, seed=1),
        RandomProjection(500, 16, seed=2),
    )
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a(x).dtype == torch.float32 and a(x[0]).shape == (16,)


def test_errors() -> None:
    with pytest.raises(ValueError, match="Invalid dim"):
        RandomProjection(0)
    with pytest.raises(ValueError, match="Invalid projection_dim"):
        RandomProjection(10, 0)
    with pytest.raises(ValueError, match="last dimension 9; allowed: 10"):
        RandomProjection(10, 4)(torch.zeros(9))
