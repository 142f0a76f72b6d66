"""Cache-blocked foreach paths (``cpu_blocks``) with blocks small enough to cut every tensor."""

import pytest
import torch

import tailclip.optim._kernels as kernels
from tailclip.optim import ACClip, ClipAdaGrad, ClipAdam, ClipSGD, NoiseInjection
from tailclip.optim._kernels import cpu_blocks

SHAPES = [(5, 7), (13,), (3, 4, 5), ()]


def make(seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    return params, gen


def run(factory, steps=4, seed=0):
    params, gen = make(seed)
    opt = factory(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 3
        opt.step()
    return params


def test_blocks_alias_the_tensors_and_cover_every_element_once():
    tensors = [torch.zeros(s) for s in SHAPES]
    blocks = cpu_blocks([tensors], block_numel=6)
    for _, (pieces,) in blocks:
        assert 1 <= sum(p.numel() for p in pieces) <= 6 + 5
        for piece in pieces:
            piece.add_(1)
    assert all(torch.equal(t, torch.ones_like(t)) for t in tensors)
    assert len(blocks) > len(SHAPES)


@pytest.mark.parametrize("block", [1, 6, 1 << 18])
@pytest.mark.parametrize(
    "factory, reference",
    [
        (lambda ps: ClipAdam(ps, weight_decay=0.1), lambda ps: torch.optim.AdamW(ps, weight_decay=0.1)),
        (lambda ps: ClipAdaGrad(ps, lr=0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
        (lambda ps: ClipSGD(ps, lr=0.1, momentum=0.9, clip=None, weight_decay=0.1),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)),
    ],
)
def test_unclipped_blocked_paths_stay_bitwise_torch(monkeypatch, block, factory, reference):
    monkeypatch.setattr(kernels, "CPU_BLOCK_NUMEL", block)
    for ours, theirs in zip(run(factory), run(reference), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("block", [1, 6])
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps, fe: ACClip(ps, lr=0.1, foreach=fe),
        lambda ps, fe: ACClip(ps, lr=0.1, alpha=2.0, foreach=fe),
        lambda ps, fe: ACClip(ps, lr=0.1, alpha=1.5, foreach=fe),
        lambda ps, fe: ClipAdam(ps, clip="global", max_norm=0.5, foreach=fe),
        lambda ps, fe: ClipAdam(ps, clip="layer", max_norm=0.5, norm=True, foreach=fe),
        lambda ps, fe: ClipAdam(ps, clip="global", max_norm=0.5, delay=True, v0=1.0, foreach=fe),
        lambda ps, fe: ClipAdaGrad(ps, lr=0.1, clip="global", max_norm=0.5, foreach=fe),
        lambda ps, fe: ClipAdaGrad(ps, lr=0.1, clip="layer", max_norm=0.5, delay=True, b0=1.0, foreach=fe),
        lambda ps, fe: ClipSGD(ps, lr=0.1, momentum=0.9, clip="global", max_norm=0.5, foreach=fe),
        lambda ps, fe: ClipSGD(ps, lr=0.1, momentum=0.9, clip="layer", max_norm=0.5, foreach=fe),
        lambda ps, fe: ClipSGD(ps, lr=0.1, momentum=0.9, clip="coord", max_norm=0.5, weight_decay=0.1,
                               foreach=fe),
        lambda ps, fe: ClipSGD(ps, lr=0.1, clip="coord", max_norm=0.5, foreach=fe),
        lambda ps, fe: NoiseInjection(torch.optim.SGD(ps, lr=0.1), eta=0.5, variance="ema",
                                      generator=torch.Generator().manual_seed(3), foreach=fe),
    ],
)
def test_blocked_foreach_equals_the_loop(monkeypatch, block, make_opt):
    monkeypatch.setattr(kernels, "CPU_BLOCK_NUMEL", block)
    blocked = run(lambda ps: make_opt(ps, True))
    loop = run(lambda ps: make_opt(ps, False))
    for a, b in zip(blocked, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, p) for a, p in zip(blocked, make(0)[0], strict=True))


@pytest.mark.parametrize("block", [1, 6])
def test_blocked_microbatch_noise_equals_the_loop(monkeypatch, block):
    """AGNI with micro-batch variance: foreach draws its normals block by block (NormalStream)."""
    monkeypatch.setattr(kernels, "CPU_BLOCK_NUMEL", block)
    results = []
    for foreach in (True, False):
        params, gen = make(0)
        opt = NoiseInjection(torch.optim.SGD(params, lr=0.1), eta=0.5, variance="microbatch",
                             generator=torch.Generator().manual_seed(3), foreach=foreach)
        for _ in range(3):
            opt.zero_grad()
            for _ in range(3):
                for p in params:
                    g = torch.randn(p.shape, generator=gen) * 3
                    p.grad = g if p.grad is None else p.grad + g
                opt.accumulate()
            opt.step()
        results.append((params, opt.last_noise_norm))
    (blocked, n_blocked), (loop, n_loop) = results
    assert n_loop > 0
    torch.testing.assert_close(n_blocked, n_loop, rtol=1e-6, atol=0)
    for a, b in zip(blocked, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
