"""NoiseInjection (AGNI): noise against hand-computed references, its statistics, the one-micro-batch
warning, the EMA variance recursion, the base AdamW step, and bitwise state_dict resume."""

from __future__ import annotations

import copy
import math
import random
import warnings

import pytest
import torch
from torch import nn

from tailclip.optim import OPTIMIZERS, NoiseInjection
from tailclip.optim.noise_injection import NormalStream, ema_weight_sum_sq

SHAPES = [(3, 4), (5,), (2,)]


def _params(dtypes=(torch.float32, torch.float32, torch.float32), seed: int = 0) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen).to(d)) for s, d in zip(SHAPES, dtypes, strict=True)]


def _grads(seed: int, scale: float = 1.0, dtypes=None) -> list[torch.Tensor]:
    """Student-t (3 dof) gradients with a per-tensor offset, from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, s in enumerate(SHAPES):
        normal = torch.randn(s, generator=gen, dtype=torch.float64)
        chi = torch.randn((3, *s), generator=gen, dtype=torch.float64).pow(2).sum(0) / 3
        g = (0.3 * (i + 1) + scale * normal / chi.sqrt()).float()
        out.append(g if dtypes is None else g.to(dtypes[i]))
    return out


def _add_grads(params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        if p.grad is None:
            p.grad = g.clone().to(p.dtype)
        else:
            p.grad.add_(g.to(p.dtype))


def _generator_copy(gen: torch.Generator) -> torch.Generator:
    copy_ = torch.Generator()
    copy_.set_state(gen.get_state())
    return copy_


def _draw_normals(gen: torch.Generator, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The documented draw: one flat N(0, I) vector per dtype bucket (float32 for float32/bf16,
    float64 for float64), buckets in order of first appearance, split in param order."""
    dtypes = [torch.float64 if p.dtype == torch.float64 else torch.float32 for p in params]
    out: list[torch.Tensor | None] = [None] * len(params)
    for dtype in dict.fromkeys(dtypes):
        index = [i for i, d in enumerate(dtypes) if d == dtype]
        sizes = [params[i].numel() for i in index]
        flat = torch.randn(sum(sizes), generator=gen, dtype=dtype)
        for i, chunk in zip(index, flat.split(sizes), strict=True):
            out[i] = chunk.view(params[i].shape).double()
    return out  # type: ignore[return-value]


def test_registered() -> None:
    assert OPTIMIZERS["noise_injection"] is NoiseInjection


@pytest.mark.parametrize("foreach", [True, False])
def test_microbatch_noise_matches_hand_reference(foreach: bool) -> None:
    dtypes = (torch.float32, torch.float64, torch.float32)
    params = _params(dtypes)
    eta, n_micro = 0.05, 4
    micro = [_grads(seed=10 + k, dtypes=dtypes) for k in range(n_micro)]
    for k in range(n_micro):  # one coordinate with the same gradient in every micro-batch: zero variance
        micro[k][0][0, 0] = 1.0
    gen = torch.Generator().manual_seed(7)
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.0), eta=eta, generator=gen, foreach=foreach)
    for k in range(n_micro):
        _add_grads(params, micro[k])
        opt.accumulate()
    raw = [p.grad.clone() for p in params]
    normals = _draw_normals(_generator_copy(gen), params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()

    noise_sq = 0.0
    for i, p in enumerate(params):
        g = raw[i].double().flatten()
        z = normals[i].flatten()
        xs = [micro[k][i].double().flatten() for k in range(n_micro)]
        grad_norm = math.sqrt(sum(float(v) ** 2 for v in g))
        expected = torch.empty_like(g)
        for j in range(g.numel()):
            mean = sum(float(x[j]) for x in xs) / n_micro
            var = sum((float(x[j]) - mean) ** 2 for x in xs) / (n_micro - 1)
            noise = float(z[j]) * math.sqrt(eta * var) * grad_norm
            expected[j] = float(g[j]) + noise
            noise_sq += noise**2
        tol = 1e-12 if p.dtype == torch.float64 else 2e-5
        torch.testing.assert_close(p.grad.double().flatten(), expected, rtol=tol, atol=tol)
    assert params[0].grad[0, 0] == 4.0  # zero variance: exactly no noise
    assert p.grad.dtype == p.dtype
    assert opt.last_noise_norm.item() == pytest.approx(math.sqrt(noise_sq), rel=1e-5)
    expected_grad_norm = math.sqrt(sum(float(r.double().pow(2).sum()) for r in raw))
    assert opt.last_grad_norm.item() == pytest.approx(expected_grad_norm, rel=1e-6)
    assert opt.microbatches == 0  # reset for the next step


def test_microbatch_noise_has_the_right_per_coordinate_std() -> None:
    """Over many draws, std(noise_j) = sqrt(eta * sigma_j^2) * ||g|| and mean(noise_j) = 0."""
    scales = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0, 3.0])
    a = torch.tensor([-3.0, -1.0, 1.0, 3.0])  # sample variance 20/3
    micro = [1.0 + scales * a_k for a_k in a]  # sum 4 per coordinate
    eta, draws = 0.01, 2000
    p = nn.Parameter(torch.zeros(6))
    opt = NoiseInjection(torch.optim.SGD([p], lr=0.0), eta=eta, generator=torch.Generator().manual_seed(3))
    samples = torch.empty(draws, 6)
    for t in range(draws):
        opt.zero_grad()
        for x in micro:
            _add_grads([p], [x])
            opt.accumulate()
        opt.step()
        samples[t] = p.grad - 4.0
    grad_norm = 4.0 * math.sqrt(6)
    expected_std = (eta * scales**2 * 20.0 / 3.0).sqrt() * grad_norm
    std = samples.double().std(0)
    assert torch.all(samples[:, 4] == 0)
    ratio = std[expected_std > 0] / expected_std[expected_std > 0].double()
    assert torch.all((ratio - 1).abs() < 0.08), ratio  # the std estimator's relative sd is 1/sqrt(2N) = 1.6%
    mean = samples.double().mean(0)
    assert torch.all(mean.abs() <= 5 * expected_std / math.sqrt(draws) + 1e-12)


def test_fewer_than_two_microbatches_warn_once_and_add_no_noise() -> None:
    params = _params()
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.1), generator=torch.Generator().manual_seed(0))
    _add_grads(params, _grads(1))
    opt.accumulate()
    raw = [p.grad.clone() for p in params]
    with pytest.warns(UserWarning, match=r'variance="ema"') as record:
        opt.step()
    assert len(record) == 1 and "1 micro-batch" in str(record[0].message)
    for p, r in zip(params, raw, strict=True):
        assert torch.equal(p.grad, r)  # documented: zero noise
    assert opt.last_noise_norm.item() == 0.0
    opt.zero_grad()
    _add_grads(params, _grads(2))  # no accumulate() at all: 0 micro-batches, still no second warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert opt.last_noise_norm.item() == 0.0

    fresh = NoiseInjection(torch.optim.SGD(params, lr=0.1))
    with pytest.warns(UserWarning, match="0 micro-batch"):
        fresh.step()


def test_two_microbatches_do_not_warn() -> None:
    params = _params()
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.1), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in range(2):
            _add_grads(params, _grads(k))
            opt.accumulate()
        opt.step()
    assert opt.last_noise_norm.item() > 0


@pytest.mark.parametrize("foreach", [True, False])
def test_ema_variance_recursion_matches_reference(foreach: bool) -> None:
    params = _params()
    eta, beta, steps = 0.02, 0.9, 6
    gen = torch.Generator().manual_seed(5)
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.0), eta=eta, variance="ema", ema_beta=beta,
                         generator=gen, foreach=foreach)
    mu = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    s_ = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    weight_sq = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(1, steps + 1):
            opt.zero_grad()
            grads = _grads(100 + t)
            _add_grads(params, grads)
            opt.accumulate()  # a no-op with variance="ema"
            normals = _draw_normals(_generator_copy(gen), params)
            opt.step()
            b = beta if t > 1 else 0.0
            weight_sq = b * b * weight_sq + (1 - b) ** 2
            assert ema_weight_sum_sq(t, beta) == pytest.approx(weight_sq, rel=1e-12)
            noise_sq = 0.0
            for i, p in enumerate(params):
                g = grads[i].double().flatten()
                m, v, z = mu[i].view(-1), s_[i].view(-1), normals[i].flatten()
                grad_norm = math.sqrt(sum(float(x) ** 2 for x in g))
                expected = torch.empty_like(g)
                for j in range(g.numel()):
                    delta = float(g[j]) - float(m[j])
                    m[j] = float(m[j]) + (1 - b) * delta
                    v[j] = b * (float(v[j]) + (1 - b) * delta * delta)
                    var = float(v[j]) / (1 - weight_sq) if t > 1 else 0.0
                    noise = float(z[j]) * math.sqrt(eta * var) * grad_norm
                    expected[j] = float(g[j]) + noise
                    noise_sq += noise**2
                torch.testing.assert_close(p.grad.double().flatten(), expected, rtol=2e-5, atol=2e-6)
            if t == 1:
                assert opt.last_noise_norm.item() == 0.0
                assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
            else:
                assert opt.last_noise_norm.item() > 0
                assert opt.last_noise_norm.item() == pytest.approx(math.sqrt(noise_sq), rel=1e-5)


def test_ema_second_step_variance_is_the_two_sample_variance() -> None:
    """The bias correction makes sigma^2 at t = 2 equal (g_2 - g_1)^2 / 2 for any beta."""
    p = nn.Parameter(torch.zeros(4))
    gen = torch.Generator().manual_seed(1)
    opt = NoiseInjection(torch.optim.SGD([p], lr=0.0), eta=1.0, variance="ema", ema_beta=0.99, generator=gen)
    g1, g2 = torch.tensor([1.0, 2.0, -1.0, 0.5]), torch.tensor([3.0, 2.0, 1.0, 0.0])
    p.grad = g1.clone()
    opt.step()
    p.grad = g2.clone()
    z = torch.randn(4, generator=_generator_copy(gen))
    opt.step()
    expected = g2 + z * ((g2 - g1) ** 2 / 2).sqrt() * g2.norm()
    torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [True, False])
def test_tensors_without_a_variance_yet_get_no_noise(foreach: bool) -> None:
    """EMA: a tensor at its first step (others later) and micro-batch: a gradient that appeared
    after the last record get no noise, the others get theirs (the tensor-norm selection)."""
    params = _params()
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.0), variance="ema", eta=0.05,
                         generator=torch.Generator().manual_seed(8), foreach=foreach)
    for t in range(3):
        opt.zero_grad()
        n = 2 if t < 2 else 3
        _add_grads(params[:n], _grads(70 + t)[:n])
        raw = [p.grad.clone() for p in params[:n]]
        opt.step()
        if t > 0:
            assert not torch.equal(params[0].grad, raw[0]) and not torch.equal(params[1].grad, raw[1])
    assert torch.equal(params[2].grad, raw[2])  # its first step
    noise = [p.grad - r for p, r in zip(params, raw, strict=True)]
    expected_norm = math.sqrt(sum(float(n.double().pow(2).sum()) for n in noise))
    assert opt.last_noise_norm.item() == pytest.approx(expected_norm, rel=1e-5)

    params = _params()
    gen = torch.Generator().manual_seed(8)
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.0), eta=0.05, generator=gen, foreach=foreach)
    for k in range(2):
        _add_grads(params[:2], _grads(80 + k)[:2])
        opt.accumulate()
    params[2].grad = torch.ones(SHAPES[2])  # after the last record: nothing recorded for it
    opt.step()
    assert torch.equal(params[2].grad, torch.ones(SHAPES[2]))
    assert opt.last_noise_norm.item() > 0


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
def test_base_adamw_steps_on_the_noised_gradient(variance: str) -> None:
    wrapped, plain = _params(seed=1), _params(seed=1)

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 5e-3, "weight_decay": 0.0}]

    opt = NoiseInjection(torch.optim.AdamW(groups(wrapped), lr=1e-2, weight_decay=0.1), variance=variance,
                         eta=0.05, generator=torch.Generator().manual_seed(2))
    ref = torch.optim.AdamW(groups(plain), lr=1e-2, weight_decay=0.1)
    for t in range(10):
        opt.zero_grad()
        for k in range(3):
            _add_grads(wrapped, _grads(1000 * t + k))
            opt.accumulate()
        raw = [p.grad.clone() for p in wrapped]
        opt.step()
        if variance == "microbatch" or t > 0:
            assert opt.last_noise_norm.item() > 0
            assert not all(torch.equal(p.grad, r) for p, r in zip(wrapped, raw, strict=True))
        for q, p in zip(plain, wrapped, strict=True):
            q.grad = p.grad.clone()  # AdamW leaves p.grad as it was: the noised gradient
        ref.step()
        for q, p in zip(plain, wrapped, strict=True):
            assert torch.equal(q, p)


def _run(
    opt: NoiseInjection, params: list[nn.Parameter], steps: range, micro: int
) -> list[list[torch.Tensor]]:
    history = []
    for t in steps:
        opt.zero_grad()
        for k in range(micro):
            _add_grads(params, _grads(1000 * t + k))
            opt.accumulate()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("scale", [2.0**-20, 2.0**40, 2.0**70])
def test_gradient_rescaled_after_the_records_rescales_the_noise(scale: float) -> None:
    """GradScaler: records of gradients scaled by S (S^2 g^2 overflows float32 at S = 2^70), then
    unscale_ divides p.grad by S. The noise must equal that of an unscaled run (S is a power of 2)."""
    results = []
    for s in (1.0, scale):
        params = _params()
        gen = torch.Generator().manual_seed(4)
        opt = NoiseInjection(torch.optim.SGD(params, lr=0.1), eta=0.05, generator=gen)
        for k in range(3):
            _add_grads(params, [g * s for g in _grads(30 + k)])
            opt.accumulate()
        for p in params:
            p.grad.div_(s)
        opt.step()
        assert torch.isfinite(opt.last_noise_norm) and opt.last_noise_norm.item() > 0
        results.append((params, opt.last_noise_norm))
    (ref, ref_norm), (got, got_norm) = results
    torch.testing.assert_close(got_norm, ref_norm, rtol=1e-6, atol=0)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_zero_grad_discards_the_records_of_a_step_not_taken() -> None:
    """A step skipped (as GradScaler does on overflow) must not leak its records into the next."""
    skipped, fresh = _params(), _params()
    opt_a = NoiseInjection(torch.optim.SGD(skipped, lr=0.1), generator=torch.Generator().manual_seed(1))
    opt_b = NoiseInjection(torch.optim.SGD(fresh, lr=0.1), generator=torch.Generator().manual_seed(1))
    for k in range(2):
        _add_grads(skipped, _grads(50 + k, scale=100.0))
        opt_a.accumulate()
    opt_a.zero_grad()  # no step
    assert opt_a.microbatches == 0 and opt_a.state_dict()["noise_injection"]["state"] == {}
    for params, opt in ((skipped, opt_a), (fresh, opt_b)):
        for k in range(3):
            _add_grads(params, _grads(60 + k))
            opt.accumulate()
        opt.step()
    assert opt_a.last_noise_norm.item() > 0
    for a, b in zip(skipped, fresh, strict=True):
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
def test_state_dict_round_trip_continues_bitwise(variance: str) -> None:
    torch.manual_seed(0)
    params = _params(seed=2)
    opt = NoiseInjection(torch.optim.AdamW(params, lr=1e-2), variance=variance, eta=0.05)  # owned generator
    _run(opt, params, range(4), micro=3)
    saved = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    assert saved["noise_injection"]["generators"]  # the owned generator's state is saved
    expected = _run(opt, params, range(4, 8), micro=3)

    torch.manual_seed(123)  # a different owned seed: only the loaded state may make it match
    resumed = [nn.Parameter(p.clone()) for p in saved_params]
    opt2 = NoiseInjection(torch.optim.AdamW(resumed, lr=1e-2), variance=variance, eta=0.05)
    opt2.load_state_dict(saved)
    got = _run(opt2, resumed, range(4, 8), micro=3)
    for step_expected, step_got in zip(expected, got, strict=True):
        for e, g in zip(step_expected, step_got, strict=True):
            assert torch.equal(e, g)


def test_state_dict_mid_accumulation_continues_bitwise() -> None:
    params = _params(seed=3)
    opt = NoiseInjection(torch.optim.AdamW(params, lr=1e-2), eta=0.05, generator=None)
    _run(opt, params, range(2), micro=4)
    opt.zero_grad()
    for k in range(2):  # half of step 2's micro-batches
        _add_grads(params, _grads(2000 + k))
        opt.accumulate()
    saved = copy.deepcopy(opt.state_dict())
    saved_params = [(p.detach().clone(), p.grad.clone()) for p in params]
    assert saved["noise_injection"]["microbatches"] == 2 and saved["noise_injection"]["state"]

    def finish(o, ps):
        for k in range(2, 4):
            _add_grads(ps, _grads(2000 + k))
            o.accumulate()
        o.step()
        return [p.detach().clone() for p in ps] + _run(o, ps, range(3, 5), micro=4)[-1]

    expected = finish(opt, params)
    resumed = [nn.Parameter(x.clone()) for x, _ in saved_params]
    for p, (_, g) in zip(resumed, saved_params, strict=True):
        p.grad = g.clone()
    opt2 = NoiseInjection(torch.optim.AdamW(resumed, lr=1e-2), eta=0.05)
    opt2.load_state_dict(saved)
    got = finish(opt2, resumed)
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


def test_user_generator_is_not_saved_and_variance_mismatch_raises() -> None:
    params = _params()
    opt = NoiseInjection(torch.optim.SGD(params, lr=0.1), variance="ema", generator=torch.Generator())
    _add_grads(params, _grads(0))
    opt.step()
    state = opt.state_dict()
    assert state["noise_injection"]["generators"] == {}
    other = NoiseInjection(torch.optim.SGD(params, lr=0.1), variance="microbatch")
    with pytest.raises(ValueError, match="variance"):
        other.load_state_dict(state)


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
def test_foreach_equals_loop(variance: str) -> None:
    dtypes = (torch.float32, torch.float64, torch.bfloat16)
    results = []
    for foreach in (True, False):
        params = _params(dtypes, seed=4)
        opt = NoiseInjection(torch.optim.SGD(params, lr=0.1, momentum=0.9), variance=variance, eta=0.05,
                             generator=torch.Generator().manual_seed(9), foreach=foreach)
        history = _run(opt, params, range(6), micro=3)
        results.append((history, opt.last_noise_norm))
    (h1, n1), (h2, n2) = results
    assert n1.item() > 0 and torch.equal(n1, n2)
    for s1, s2 in zip(h1, h2, strict=True):
        for a, b in zip(s1, s2, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_behaves_like_an_optimizer() -> None:
    params = _params()
    base = torch.optim.AdamW(params, lr=1e-2)
    opt = NoiseInjection(base, variance="ema", generator=torch.Generator().manual_seed(0))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups and opt.state is base.state
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    target = torch.randn(5)

    def closure():
        opt.zero_grad()
        loss = ((params[1] - target) ** 2).sum() + params[0].pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        loss = opt.step(closure)
        scheduler.step()
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert base.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)
    assert opt.last_noise_norm.item() > 0
    assert params[2].grad is None  # unused parameter: no gradient, no noise, no state
    extra = nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [extra]})
    assert base.param_groups[-1]["params"] == [extra] and len(opt.param_groups) == 2
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
def test_deepcopy_continues_identically(variance: str) -> None:
    params = _params(seed=5)
    opt = NoiseInjection(torch.optim.AdamW(params, lr=1e-2), variance=variance, eta=0.05)
    _run(opt, params, range(3), micro=2)
    twin = copy.deepcopy(opt)
    twin_params = [p for group in twin.param_groups for p in group["params"]]
    assert twin.base_optimizer.param_groups is twin.param_groups
    assert all(t is not p and torch.equal(t, p) for t, p in zip(twin_params, params, strict=True))
    expected = _run(opt, params, range(3, 6), micro=2)
    got = _run(twin, twin_params, range(3, 6), micro=2)
    for e_step, g_step in zip(expected, got, strict=True):
        assert all(torch.equal(e, g) for e, g in zip(e_step, g_step, strict=True))


def test_invalid_arguments_raise() -> None:
    params = _params()
    base = torch.optim.AdamW(params)
    with pytest.raises(ValueError, match="base_optimizer"):
        NoiseInjection(params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta"):
        NoiseInjection(base, eta=-0.1)
    with pytest.raises(ValueError, match="variance"):
        NoiseInjection(base, variance="batch")
    for beta in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema_beta"):
            NoiseInjection(base, ema_beta=beta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("total", [0, 5, 16, 17, 33, 1000, 4099])
def test_normal_stream_hands_out_the_flat_draw(dtype: torch.dtype, total: int) -> None:
    flat = torch.randn(total, generator=torch.Generator().manual_seed(5), dtype=dtype)
    stream = NormalStream(total, torch.Generator().manual_seed(5), torch.device("cpu"), dtype)
    rng = random.Random(total)
    pieces, taken = [], 0
    while taken < total:
        n = min(total - taken, rng.choice([1, 3, 15, 16, 17, 40, 333]))
        pieces.append(stream.take(n))
        taken += n
    assert torch.equal(torch.cat(pieces) if pieces else torch.empty(0, dtype=dtype), flat)
    with pytest.raises(ValueError, match="Invalid take"):
        stream.take(1)


# ------------------------------------------------------------------------- inside real training loops


def test_param_groups_are_the_base_list_after_load_state_dict() -> None:
    params = _params()
    base = torch.optim.AdamW(params, lr=1e-2)
    opt = NoiseInjection(base, variance="ema", generator=torch.Generator().manual_seed(0))
    assert opt.param_groups is base.param_groups and opt.state is base.state
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # accelerate and Lightning resume do this
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state and opt.defaults is base.defaults
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _add_grads(params, _grads(0))
    opt.step()
    scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(5e-3)


def _scheduled_run(opt, scheduler, params, steps: range, micro: int) -> list[list[torch.Tensor]]:
    history = []
    for t in steps:
        opt.zero_grad()
        for k in range(micro):
            _add_grads(params, _grads(1000 * t + k))
            if isinstance(opt, NoiseInjection):
                opt.accumulate()
        opt.step()
        scheduler.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
def test_eta_zero_with_a_scheduler_resumed_mid_run_equals_the_plain_base(variance: str) -> None:
    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0}]

    plain_params = _params(seed=6)
    plain = torch.optim.AdamW(groups(plain_params), lr=1e-2, weight_decay=0.1)
    expected = _scheduled_run(plain, schedule(plain), plain_params, range(6), micro=2)

    params = _params(seed=6)
    opt = NoiseInjection(torch.optim.AdamW(groups(params), lr=1e-2, weight_decay=0.1), eta=0.0,
                         variance=variance)
    scheduler = schedule(opt)
    got = _scheduled_run(opt, scheduler, params, range(3), micro=2)
    saved = copy.deepcopy({"opt": opt.state_dict(), "sched": scheduler.state_dict()})

    resumed = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = NoiseInjection(torch.optim.AdamW(groups(resumed), lr=1e-2, weight_decay=0.1), eta=0.0,
                          variance=variance)
    scheduler2 = schedule(opt2)
    opt2.load_state_dict(saved["opt"])
    scheduler2.load_state_dict(saved["sched"])
    got += _scheduled_run(opt2, scheduler2, resumed, range(3, 6), micro=2)
    assert opt2.base_optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**6)
    for t, (e_step, g_step) in enumerate(zip(expected, got, strict=True)):
        assert all(torch.equal(e, g) for e, g in zip(e_step, g_step, strict=True)), f"step {t}"


def _tensors_equal(actual, expected, path: str = "state") -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), path
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            _tensors_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _tensors_equal(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, path


def _base_for(kind: str, params):
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2)
    return OPTIMIZERS["clip_adam"](params, lr=1e-2, clip="global", max_norm=1.0, nonfinite=kind)


@pytest.mark.parametrize("variance", ["microbatch", "ema"])
@pytest.mark.parametrize("kind", ["skip", "raise", "adamw"])
def test_nonfinite_gradient_leaves_everything_as_if_the_step_never_happened(variance: str, kind: str) -> None:
    """A NaN/Inf step (skip, raise, or a torch AdamW base: skip and warn) writes nothing; the run
    then continues exactly as a run that never saw it."""
    params, twin_params = _params(seed=7), _params(seed=7)
    opt = NoiseInjection(_base_for(kind, params), eta=0.05, variance=variance,
                         generator=torch.Generator().manual_seed(1))
    twin = NoiseInjection(_base_for(kind, twin_params), eta=0.05, variance=variance,
                          generator=torch.Generator().manual_seed(1))
    _run(opt, params, range(3), micro=2)
    _run(twin, twin_params, range(3), micro=2)
    before = copy.deepcopy(opt.state_dict())
    weights = [p.detach().clone() for p in params]
    opt.zero_grad()
    for k, bad in enumerate((math.nan, math.inf)):
        _add_grads(params, _grads(500 + k))
        params[1].grad[k] = bad
        opt.accumulate()
    if kind == "raise":
        with pytest.raises(FloatingPointError, match="non-finite"):
            opt.step()
    elif kind == "adamw":
        with pytest.warns(UserWarning, match="non-finite gradient; step skipped"):
            opt.step()
    else:
        opt.step()
    assert all(torch.equal(p, w) for p, w in zip(params, weights, strict=True))
    opt.zero_grad()  # as after any skipped step: the step's records go
    _tensors_equal(opt.state_dict(), before)
    assert opt.skipped_steps == (0 if kind == "raise" else 1)
    expected = _run(twin, twin_params, range(3, 6), micro=2)
    got = _run(opt, params, range(3, 6), micro=2)
    assert opt.last_noise_norm.item() > 0
    for e_step, g_step in zip(expected, got, strict=True):
        assert all(torch.isfinite(g).all() and torch.equal(e, g) for e, g in zip(e_step, g_step, strict=True))


def _ddp_noise_worker(rank: int, world: int, port: int, own_generator: bool, out_path: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(nn.Linear(4, 2))
        torch.manual_seed(100 + rank)  # replicas seeded differently, as many launchers do
        generator = torch.Generator().manual_seed(rank) if own_generator else None
        opt = NoiseInjection(torch.optim.AdamW(model.parameters(), lr=1e-2), eta=0.5, variance="ema",
                             generator=generator)
        data = torch.Generator().manual_seed(rank)
        for _ in range(3):
            opt.zero_grad()
            x = torch.randn(8, 4, generator=data)
            model(x).pow(2).mean().backward()
            opt.step()
        torch.save([p.detach().clone() for p in model.parameters()], f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("own_generator", [False, True], ids=["owned-seed", "per-rank-generator"])
def test_ddp_replicas_draw_the_same_noise_unless_given_their_own_generator(
    own_generator: bool, tmp_path
) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp")
    mp.spawn(_ddp_noise_worker, args=(2, port, own_generator, out), nprocs=2, join=True)
    rank0, rank1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    same = all(torch.equal(a, b) for a, b in zip(rank0, rank1, strict=True))
    assert same != own_generator
