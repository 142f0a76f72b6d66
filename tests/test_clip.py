"""tailclip.clip: the clipping operators against hand math and torch.nn.utils, the split API,
bfloat16 norms, ClipStats, property tests, and the AutoClip / ZClip threshold policies."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailclip.clip import (
    AutoClip,
    ClipStats,
    ZClip,
    check_clip_mode,
    check_max_norm,
    clip_coefficients,
    clip_grads_,
    clip_grads_with_norm_,
    clip_tensors,
    tensor_norms,
    total_norm,
)

SHAPES = [(4, 3), (7,), (2, 2, 2), (1,)]
FOREACH = [True, False]


def _grads(seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(s, generator=gen, dtype=torch.float64)).to(dtype) for s in SHAPES]


def _params_with(grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def _norm64(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(x) ** 2 for t in tensors for x in t.double().flatten()))


# ---------------------------------------------------------------------------------------------
# Operators


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_global_matches_torch_clip_grad_norm(foreach: bool, max_norm: float) -> None:
    grads = _grads(1, scale=2.0)
    ours, theirs = _params_with(grads), _params_with(grads)
    norm = clip_grads_(ours, "global", max_norm, foreach=foreach)
    torch_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=foreach)
    torch.testing.assert_close(norm, torch_norm, rtol=1e-6, atol=0)
    assert norm.item() == pytest.approx(_norm64(grads), rel=1e-6)
    for p, q in zip(ours, theirs, strict=True):  # torch divides by (norm + 1e-6): equal to ~1e-7
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    # hand math: g * min(1, tau / ||g||)
    factor = min(1.0, max_norm / _norm64(grads))
    for p, g in zip(ours, grads, strict=True):
        torch.testing.assert_close(p.grad.double(), g.double() * factor, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("foreach", FOREACH)
def test_layer_clips_each_tensor_by_its_own_norm(foreach: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(s, generator=gen) * (0.2 + 2 * i) for i, s in enumerate(SHAPES)]
    params = _params_with(grads)
    max_norm = 1.0
    norm = clip_grads_(params, "layer", max_norm, foreach=foreach)
    assert norm.item() == pytest.approx(_norm64(grads), rel=1e-6)
    clipped_any = unclipped_any = False
    for p, g in zip(params, grads, strict=True):
        own = _norm64([g])
        factor = min(1.0, max_norm / own)
        clipped_any |= factor < 1
        unclipped_any |= factor == 1
        torch.testing.assert_close(p.grad.double(), g.double() * factor, rtol=1e-6, atol=1e-7)
    assert clipped_any and unclipped_any


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("max_norm", [0.3, torch.tensor(0.3)])
def test_coord_is_clamp(foreach: bool, max_norm: float | torch.Tensor) -> None:
    grads = _grads(3)
    params = _params_with(grads)
    clip_grads_(params, "coord", max_norm, foreach=foreach)
    for p, g in zip(params, grads, strict=True):
        assert torch.equal(p.grad, torch.clamp(g, -0.3, 0.3))


@pytest.mark.parametrize("foreach", FOREACH)
def test_none_leaves_grads_and_returns_norm(foreach: bool) -> None:
    grads = _grads(4, scale=10.0)
    params = _params_with(grads)
    norm = clip_grads_(params, None, 0.1, foreach=foreach)
    assert norm.item() == pytest.approx(_norm64(grads), rel=1e-6)
    for p, g in zip(params, grads, strict=True):
        assert torch.equal(p.grad, g)


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("mode", ["global", "layer", "coord", None])
def test_zero_gradient_has_factor_one(foreach: bool, mode: str | None) -> None:
    grads = [torch.zeros(s) for s in SHAPES]
    params = _params_with(grads)
    norm = clip_grads_(params, mode, 1.0, foreach=foreach)
    assert norm.item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)  # no NaN from 1/0
    _, stats = clip_tensors(grads, mode, 1.0, foreach=foreach)
    assert stats.clip_factor.item() == 1.0 and not stats.clipped.item()


def test_params_without_grad_are_ignored_and_single_tensor_accepted() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grads_([p, q], "global", 1.0).item() == 5.0
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8, 0.0]))
    assert q.grad is None
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grads_(p, "global", 1.0).item() == 5.0  # a single tensor, as torch's clip_grad_norm_
    assert clip_grads_([q], "global", 1.0).item() == 0.0


@pytest.mark.parametrize("foreach", FOREACH)
def test_split_api_equals_clip_grads(foreach: bool) -> None:
    grads = _grads(5, scale=3.0)
    a, b = _params_with(grads), _params_with(grads)
    expected = clip_grads_(a, "global", 2.0, foreach=foreach)
    norm = total_norm([p.grad for p in b], foreach=foreach)
    clip_grads_with_norm_([p.grad for p in b], 2.0, norm, foreach=foreach)
    assert torch.equal(norm, expected)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_split_api_foreach_equals_loop_in_low_precision(dtype: torch.dtype) -> None:
    grads = _grads(6, scale=4.0, dtype=dtype)
    results = []
    for foreach in FOREACH:
        tensors = [g.clone() for g in grads]
        norm = total_norm(tensors, foreach=foreach)
        clip_grads_with_norm_(tensors, 1.0, norm, foreach=foreach)
        results.append(tensors)
    for x, y in zip(*results, strict=True):
        assert x.dtype == dtype and torch.equal(x, y)


@pytest.mark.parametrize("foreach", FOREACH)
def test_bfloat16_norm_accumulates_in_float32(foreach: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    grads = [(1.0 + 0.01 * torch.randn(n, generator=gen)).bfloat16() for n in (200_000, 3, 50_000)]
    reference = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    norms = tensor_norms(grads, foreach=foreach)
    norm = total_norm(grads, foreach=foreach)
    # float32 sums of 2e5 squares are good to ~3e-5 on CPU; a bfloat16 result is only good to 4e-3
    assert norms.dtype == torch.float32 and norm.dtype == torch.float32
    assert norm.item() == pytest.approx(reference, rel=1e-4)
    for n, g in zip(norms, grads, strict=True):
        assert n.item() == pytest.approx(math.sqrt(float(g.double().pow(2).sum())), rel=1e-4)


def test_float64_norms_stay_float64() -> None:
    grads = [torch.randn(3, dtype=torch.float64), torch.randn(2)]
    assert tensor_norms(grads).dtype == torch.float64
    assert total_norm(grads).item() == pytest.approx(_norm64(grads), rel=1e-12)


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("mode", ["global", "layer", "coord", None])
def test_clip_tensors_does_not_modify_inputs(foreach: bool, mode: str | None) -> None:
    grads = _grads(8, scale=5.0)
    before = [g.clone() for g in grads]
    clipped, _ = clip_tensors(grads, mode, 0.5, foreach=foreach)
    for g, b in zip(grads, before, strict=True):
        assert torch.equal(g, b)
    if mode is None:
        assert clipped is grads
    else:
        assert all(c.data_ptr() != g.data_ptr() for c, g in zip(clipped, grads, strict=True))
        assert any(not torch.equal(c, g) for c, g in zip(clipped, grads, strict=True))


def test_clip_tensors_accepts_precomputed_norms() -> None:
    grads = _grads(9, scale=3.0)
    norms = tensor_norms(grads)
    for mode in ("global", "layer"):
        a, sa = clip_tensors(grads, mode, 1.0, norms=norms)
        b, sb = clip_tensors(grads, mode, 1.0)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert torch.equal(sa.clipped_norm, sb.clipped_norm)


def test_clip_stats_fields() -> None:
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 12.0])]  # norms 5 and 12, total 13
    _, stats = clip_tensors(grads, "global", 6.5)
    assert stats.grad_norm.item() == pytest.approx(13.0)
    assert stats.clipped_norm.item() == pytest.approx(6.5)
    assert stats.clip_factor.item() == pytest.approx(0.5)
    assert stats.clipped.item() is True
    _, stats = clip_tensors(grads, "layer", 6.0)  # 5 stays, 12 -> 6
    assert stats.grad_norm.item() == pytest.approx(13.0)
    assert stats.clipped_norm.item() == pytest.approx(math.sqrt(25 + 36))
    assert stats.clip_factor.item() == pytest.approx(math.sqrt(61) / 13)
    _, stats = clip_tensors(grads, "coord", 3.5)  # [3, 3.5], [0, 3.5]
    assert stats.clipped_norm.item() == pytest.approx(math.sqrt(9 + 2 * 3.5**2))
    _, stats = clip_tensors(grads, "global", 100.0)
    assert stats.clip_factor.item() == 1.0 and stats.clipped.item() is False
    assert stats.clipped_norm.item() == pytest.approx(13.0)
    combined = ClipStats.combine([ClipStats.of(torch.tensor(3.0), torch.tensor(1.0)),
                                  ClipStats.of(torch.tensor(4.0), torch.tensor(1.0))])
    assert combined.grad_norm.item() == pytest.approx(5.0)
    assert combined.clipped_norm.item() == pytest.approx(math.sqrt(2))
    assert combined.clip_factor.item() == pytest.approx(math.sqrt(2) / 5)
    empty = ClipStats.combine([])
    assert empty.grad_norm.item() == 0.0 and empty.clip_factor.item() == 1.0


def test_invalid_arguments_raise() -> None:
    params = _params_with(_grads(0))
    with pytest.raises(ValueError, match="mode"):
        clip_grads_(params, "norm", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip"):
        check_clip_mode("local")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grads_(params, "global", bad)
        with pytest.raises(ValueError, match="max_norm"):
            clip_tensors([p.grad for p in params], "coord", bad)
        with pytest.raises(ValueError, match="max_norm"):
            clip_grads_with_norm_([p.grad for p in params], bad, torch.tensor(1.0))
    with pytest.raises(ValueError, match="percentile"):
        AutoClip(percentile=0.0)
    with pytest.raises(ValueError, match="percentile"):
        AutoClip(percentile=101.0)
    with pytest.raises(ValueError, match="history"):
        AutoClip(history=0)
    bad_zclip = [({"alpha": 1.0}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"z_thresh": 0.0}, "z_thresh"),
                 ({"warmup": 0}, "warmup")]
    for kwargs, name in bad_zclip:
        with pytest.raises(ValueError, match=name):
            ZClip(**kwargs)


# ---------------------------------------------------------------------------------------------
# Properties

_tensor_values = st.lists(
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32),
    min_size=1, max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(_tensor_values, min_size=1, max_size=5),
    max_norm=st.floats(1e-3, 1e3),
    foreach=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_property_clipped_norms_are_bounded(values, max_norm, foreach, dtype) -> None:
    grads = [torch.tensor(v, dtype=dtype) for v in values]
    bound = max_norm * (1 + 1e-6)
    out, stats = clip_tensors(grads, "global", max_norm, foreach=foreach)
    assert _norm64(out) <= bound
    assert 0.0 < stats.clip_factor.item() <= 1.0
    if _norm64(grads) <= max_norm:
        assert all(torch.equal(o, g) for o, g in zip(out, grads, strict=True))
    out, stats = clip_tensors(grads, "layer", max_norm, foreach=foreach)
    assert all(_norm64([o]) <= bound for o in out)
    assert 0.0 < stats.clip_factor.item() <= 1.0
    out, stats = clip_tensors(grads, "coord", max_norm, foreach=foreach)
    tau = torch.tensor(max_norm, dtype=dtype).item()  # clamp bounds at tau as the dtype holds it
    assert all(o.abs().max().item() <= tau for o in out)
    assert 0.0 < stats.clip_factor.item() <= 1.0


# ---------------------------------------------------------------------------------------------
# AutoClip


@pytest.mark.parametrize("percentile", [10.0, 50.0, 90.0, 100.0])
def test_autoclip_threshold_is_numpy_percentile(percentile: float) -> None:
    rng = np.random.default_rng(0)
    norms = rng.lognormal(0.0, 1.5, size=60).astype(np.float32)
    policy = AutoClip(percentile=percentile)
    for t, n in enumerate(norms):
        tau = policy.threshold(torch.tensor(n))
        expected = np.percentile(norms[: t + 1].astype(np.float64), percentile)
        assert tau.item() == pytest.approx(expected, rel=1e-6)
    assert policy.count.item() == len(norms)


def test_autoclip_history_window() -> None:
    rng = np.random.default_rng(1)
    norms = rng.lognormal(0.0, 1.0, size=30).astype(np.float32)
    policy = AutoClip(percentile=25.0, history=5)
    for t, n in enumerate(norms):
        tau = policy.threshold(torch.tensor(n))
        window = norms[max(0, t - 4) : t + 1].astype(np.float64)
        assert tau.item() == pytest.approx(np.percentile(window, 25.0), rel=1e-6)
        assert policy.norms.numel() == min(t + 1, 5)


def test_autoclip_state_dict_round_trip() -> None:
    rng = np.random.default_rng(2)
    norms = torch.from_numpy(rng.lognormal(0.0, 1.0, size=40).astype(np.float32))
    policy = AutoClip(percentile=30.0, history=25)
    for n in norms[:20]:
        policy.threshold(n)
    state = copy.deepcopy(policy.state_dict())
    expected = [policy.threshold(n) for n in norms[20:]]
    resumed = AutoClip(percentile=30.0, history=25)
    resumed.load_state_dict(state)
    got = [resumed.threshold(n) for n in norms[20:]]
    assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))
    with pytest.raises(KeyError):
        resumed.load_state_dict({"bogus": torch.zeros(())})


# ---------------------------------------------------------------------------------------------
# ZClip


def _zclip_reference(norms: list[float], alpha: float, z: float, warmup: int) -> list[float]:
    """The ZClip recursion by hand: sample mean/variance of the warm-up norms, then
    tau = mu + z sigma and the EMA updated with the clipped norm min(norm, tau)."""
    taus, mu, var = [], 0.0, 0.0
    for t, n in enumerate(norms):
        if t < warmup:
            taus.append(math.inf)
            seen = norms[: t + 1]
            mu = sum(seen) / len(seen)
            var = sum((x - mu) ** 2 for x in seen) / len(seen)
            continue
        tau = mu + z * math.sqrt(var)
        taus.append(tau)
        observed = min(n, tau)
        mu = alpha * mu + (1 - alpha) * observed
        var = alpha * var + (1 - alpha) * (observed - mu) ** 2
    return taus


def test_zclip_warmup_then_reference_recursion() -> None:
    rng = np.random.default_rng(3)
    norms = list(rng.lognormal(0.0, 0.4, size=80))
    norms[40] = 50.0  # a spike
    alpha, z, warmup = 0.9, 2.0, 10
    policy = ZClip(alpha=alpha, z_thresh=z, warmup=warmup)
    expected = _zclip_reference(norms, alpha, z, warmup)
    for t, (n, e) in enumerate(zip(norms, expected, strict=True)):
        tau = policy.threshold(torch.tensor(n, dtype=torch.float64))
        assert tau.dtype == torch.float64
        if t < warmup:
            assert math.isinf(tau.item())
        else:
            assert tau.item() == pytest.approx(e, rel=1e-12)
    assert expected[40] < 50.0


def test_zclip_clips_a_spike_and_updates_the_ema_with_the_clipped_norm() -> None:
    policy = ZClip(alpha=0.9, z_thresh=2.5, warmup=5)
    p = torch.nn.Parameter(torch.zeros(2))
    for n in (1.0, 1.2, 0.8, 1.1, 0.9, 1.0):
        p.grad = torch.tensor([n, 0.0])
        policy.clip_([p])
    mean_before, var_before = policy.mean.item(), policy.var.item()
    tau = mean_before + 2.5 * math.sqrt(var_before)
    p.grad = torch.tensor([0.0, 100.0])
    norm = policy.clip_([p])
    assert norm.item() == pytest.approx(100.0)
    assert p.grad.norm().item() == pytest.approx(tau, rel=1e-6)
    assert p.grad[0].item() == 0.0
    expected_mean = 0.9 * mean_before + 0.1 * tau  # not 100: the clipped norm enters the EMA
    assert policy.mean.item() == pytest.approx(expected_mean, rel=1e-12)
    assert policy.var.item() == pytest.approx(0.9 * var_before + 0.1 * (tau - expected_mean) ** 2, rel=1e-12)


def test_zclip_state_dict_round_trip() -> None:
    rng = np.random.default_rng(4)
    norms = torch.from_numpy(rng.lognormal(0.0, 0.5, size=60))
    policy = ZClip(alpha=0.95, z_thresh=2.0, warmup=15)
    for n in norms[:10]:  # save during the warm-up: the sums must travel too
        policy.threshold(n)
    state = copy.deepcopy(policy.state_dict())
    expected = [policy.threshold(n) for n in norms[10:]]
    resumed = ZClip(alpha=0.95, z_thresh=2.0, warmup=15)
    resumed.load_state_dict(state)
    got = [resumed.threshold(n) for n in norms[10:]]
    assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))
    assert any(math.isfinite(e.item()) for e in expected)


# ---------------------------------------------------------------------------------------------
# Policies with a plain torch optimizer


@pytest.mark.parametrize("make_policy", [lambda: AutoClip(percentile=50.0), lambda: ZClip(warmup=3)])
def test_policy_clip_with_torch_sgd(make_policy) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    policy, twin = make_policy(), make_policy()
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.distributions.StudentT(1.5).sample((64,))
    clipped_steps = 0
    for t in range(20):
        opt.zero_grad()
        batch = slice(4 * (t % 16), 4 * (t % 16) + 4)
        spike = 50.0 if t == 12 else 1.0
        (spike * torch.nn.functional.mse_loss(model(x[batch]).squeeze(-1), y[batch])).backward()
        raw = [p.grad.clone() for p in model.parameters()]
        before = [p.detach().clone() for p in model.parameters()]
        norm = policy.clip_(model.parameters())
        assert norm.item() == pytest.approx(_norm64(raw), rel=1e-6)
        tau = twin.threshold(norm).item()
        factor = min(1.0, tau / norm.item())
        clipped_steps += factor < 1
        opt.step()
        for p, g, b in zip(model.parameters(), raw, before, strict=True):
            torch.testing.assert_close(p.grad, g * factor, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(p.detach(), b - 0.05 * g * factor, rtol=1e-6, atol=1e-7)
    assert clipped_steps > 0
    assert twin.threshold(torch.tensor(1.0)).item() == policy.threshold(torch.tensor(1.0)).item()


def test_policy_clip_accepts_a_single_tensor() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    policy = AutoClip(percentile=50.0)
    assert policy.clip_(p).item() == 5.0
    assert policy.count.item() == 1
    assert policy.clip_([torch.nn.Parameter(torch.zeros(1))]).item() == 0.0  # no gradients: nothing to do


@pytest.mark.parametrize("extra", [0, 7])
def test_large_tensors_are_normed_row_by_row_to_the_same_value(extra: int) -> None:
    """Above ROW_NORM_NUMEL a CPU tensor is normed as NORM_ROWS rows (plus the remainder)."""
    from tailclip.clip import NORM_ROWS, ROW_NORM_NUMEL

    gen = torch.Generator().manual_seed(0)
    big = torch.randn(ROW_NORM_NUMEL + NORM_ROWS * 3 + extra, generator=gen) * 5
    small = torch.randn(10, generator=gen)
    strided = torch.randn(2 * ROW_NORM_NUMEL, generator=gen)[::2]
    tensors = [small, big, strided]
    foreach, loop = tensor_norms(tensors, True), tensor_norms(tensors, False)
    assert torch.equal(foreach, loop)
    reference = torch.stack([t.double().pow(2).sum().sqrt() for t in tensors])
    torch.testing.assert_close(foreach[:2].double(), reference[:2], rtol=1e-6, atol=0)
    # a strided tensor keeps torch's flat float32 reduction, less accurate at this size
    torch.testing.assert_close(foreach[2].double(), reference[2], rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------
# The one clipping path: factors from the tensor norms


def test_clip_coefficients_are_the_factors_clip_tensors_scales_by() -> None:
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([12.0, 0.0]), torch.zeros(2)]
    norms = tensor_norms(grads)
    coefs, stats = clip_coefficients(norms, "global", 6.5)  # ||g|| = 13
    assert [float(c) for c in coefs] == [0.5, 0.5, 0.5]
    assert float(stats.grad_norm) == 13.0 and float(stats.clipped_norm) == 6.5
    coefs, stats = clip_coefficients(norms, "layer", 6.0)  # 5 stays, 12 -> 6, 0 keeps factor 1
    assert [float(c) for c in coefs] == [1.0, 0.5, 1.0]
    for mode, tau in (("global", 6.5), ("layer", 6.0)):
        clipped, clip_stats = clip_tensors(grads, mode, tau)
        coefs, stats = clip_coefficients(norms, mode, tau)
        for g, c, u in zip(grads, coefs, clipped):
            assert torch.equal(g * c, u)
        assert torch.equal(stats.clipped_norm, clip_stats.clipped_norm)
    with pytest.raises(ValueError, match="Invalid mode: 'coord'") as info:
        clip_coefficients(norms, "coord", 1.0)
    assert "\n" not in str(info.value)


def test_clip_coefficients_resolve_an_adaptive_threshold_on_the_group_norm() -> None:
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([12.0, 0.0])]
    policy, reference = AutoClip(percentile=50.0), AutoClip(percentile=50.0)
    coefs, _ = clip_coefficients(tensor_norms(grads), "global", policy)
    tau = reference.threshold(torch.tensor(13.0))
    assert torch.equal(coefs[0], torch.clamp(tau / 13.0, max=1.0))
    assert int(policy.count) == 1


def test_check_max_norm_allows_numbers_above_zero_tensors_and_policies() -> None:
    for ok in (1e-9, 3, torch.tensor(-1.0), ZClip()):
        check_max_norm(ok)
    for bad in (0, -1.0, float("nan"), True, "1.0", None):
        with pytest.raises(ValueError, match="Invalid max_norm: .*; allowed: max_norm > 0"):
            check_max_norm(bad)


@pytest.mark.parametrize("mode", ["global", "layer"])
@pytest.mark.parametrize("foreach", [False, True])
def test_a_norm_equal_to_the_threshold_is_not_clipped(mode, foreach) -> None:
    """``||g|| == tau`` gives factor 1 exactly: ``tau / ||g||`` by true division (torch computes
    a Python number over a tensor as ``tau * (1 / ||g||)``: 0.99999994 for 355)."""
    for value in (355.0, 3.0, 0.1, 7e-3):
        grads = [torch.tensor([value])]
        out, stats = clip_tensors(grads, mode, value, foreach=foreach)
        assert torch.equal(out[0], grads[0])
        assert stats.clip_factor.item() == 1.0
