"""Vectorized optimizers: run r of a batch is a single run of the ``tailclip.optim`` class, bit for bit.

Every vectorized form registered in :data:`tailclip.optim.VECTORIZED_RULES` is driven over R runs
with heavy-tailed gradients; each run is then replayed alone with the optimizer class on one
parameter, fed the same gradients, on the per-tensor path (``foreach=False``, the path the
vectorized form maps over the runs: equal bits) and on the default foreach path (equal to
1e-12 in float64). The per-run clipping statistics must be the class's ``step_stats``. One
exception to equal bits: ACClip with a moment exponent alpha != 1 calls ``pow``, which torch
evaluates with SIMD or scalar code depending on where an element falls in the tensor, so a batch
of runs and a single run may differ in the last bit (1e-12 is asserted there).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cases import WRAPPERS, vectorized_cases

from tailclip.optim import OPTIMIZERS
from tailclip.problems.samplers import sample_student_t
from tailclip.problems.vectorized import VECTORIZED_OPTIMIZERS, make_vectorized_optimizer

R, D, T = 6, 3, 40

# Every rule with a vectorized form, with the hyperparameters its test file declares
# (``VECTORIZED_CASES`` in tests/optim/test_<rule>.py): found through the registry.
CASES: list[tuple[str, dict[str, Any]]] = vectorized_cases()


def _id(case: tuple[str, dict[str, Any]]) -> str:
    name, hp = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in hp.items() if k != "lr")


def gradient_stream(seed: int = 0) -> torch.Tensor:
    """Student-t(1.5) noise, shape (T, R, D): infinite variance, so clipping is often active."""
    return sample_student_t((T, R, D), 1.5, generator=torch.Generator().manual_seed(seed))


def run_vectorized(name: str, hp: dict[str, Any], x0: torch.Tensor, noise: torch.Tensor):
    x = x0.clone()
    optimizer = make_vectorized_optimizer(name, x, hp)
    stats = []
    for t in range(T):
        stats.append(optimizer.step(x, x + noise[t]))
    return x, stats


def run_class(name: str, hp: dict[str, Any], x0: torch.Tensor, noise: torch.Tensor, foreach: bool):
    p = torch.nn.Parameter(x0.clone())
    optimizer = OPTIMIZERS[name]([p], foreach=foreach, **hp)
    stats = []
    for t in range(T):
        p.grad = p.detach() + noise[t]
        optimizer.step()
        stats.append(optimizer.step_stats)
    return p.detach(), stats


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_run_r_equals_a_single_run_of_the_optimizer_class(case: tuple[str, dict[str, Any]]) -> None:
    name, hp = case
    x0 = torch.randn(R, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = gradient_stream()
    exact = not (name == "acclip" and hp.get("alpha", 1.0) != 1.0)
    x, stats = run_vectorized(name, hp, x0, noise)
    assert torch.isfinite(x).all()
    for r in range(R):
        alone, alone_stats = run_class(name, hp, x0[r], noise[:, r], foreach=False)
        if exact:
            assert torch.equal(x[r], alone), f"run {r}"
        torch.testing.assert_close(x[r], alone, rtol=0.0, atol=1e-12)
        for t in range(T):
            mine, theirs = stats[t], alone_stats[t]
            for field in ("grad_norm", "clipped_norm"):
                a, b = getattr(mine, field)[r], getattr(theirs, field).to(torch.float64)
                if exact:
                    assert torch.equal(a, b), (field, r, t)
                torch.testing.assert_close(a, b, rtol=0.0, atol=1e-12)
            if exact:
                assert bool(mine.clipped[r]) == bool(theirs.clipped)
        fast, _ = run_class(name, hp, x0[r], noise[:, r], foreach=True)
        torch.testing.assert_close(x[r], fast, rtol=0.0, atol=1e-12)


def test_every_vectorizable_optimizer_has_cases() -> None:
    assert {name for name, _ in CASES} == set(VECTORIZED_OPTIMIZERS)
    assert set(VECTORIZED_OPTIMIZERS) == set(OPTIMIZERS) - WRAPPERS


def test_runs_are_independent_with_their_own_norms_and_clipping() -> None:
    """Changing one run's gradients changes that run only; clipping is decided per run."""
    x0 = torch.zeros(R, D, dtype=torch.float64)
    noise = gradient_stream()
    hp = {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 0.5}
    x, stats = run_vectorized("clip_sgd", hp, x0, noise)
    changed = noise.clone()
    changed[:, 2] *= 100.0
    y, _ = run_vectorized("clip_sgd", hp, x0, changed)
    assert torch.equal(torch.cat([x[:2], x[3:]]), torch.cat([y[:2], y[3:]]))
    assert not torch.equal(x[2], y[2])
    clipped = torch.stack([s.clipped for s in stats])
    assert clipped.any() and not clipped.all()
    assert (clipped.float().mean(dim=0) != clipped.float().mean()).any()


@pytest.mark.parametrize(
    "name,hp,key",
    [
        ("clip_sgd", {"lr": 0.1, "clip": "global", "max_norm": 1.0}, "max_norm"),
        ("clip_adam", {"lr": 0.1, "clip": "coord", "max_norm": 1.0, "norm": True}, "max_norm"),
        ("clip_adagrad", {"lr": 0.1, "clip": "global", "max_norm": 1.0, "norm": True, "b0": 1.0}, "max_norm"),
        ("delta_gclip", {"lr": 0.1, "gamma": 1.0}, "gamma"),
    ],
)
def test_lr_and_threshold_of_a_step_override_the_configured_ones(
    name: str, hp: dict[str, Any], key: str
) -> None:
    x0 = torch.randn(R, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    noise = gradient_stream(5)
    x = x0.clone()
    optimizer = make_vectorized_optimizer(name, x, hp)
    for t in range(T):
        optimizer.step(x, x + noise[t], lr=0.03, threshold=0.2)
    expected, _ = run_vectorized(name, {**hp, "lr": 0.03, key: 0.2}, x0, noise)
    assert torch.equal(x, expected)
    assert optimizer.threshold == 1.0 and optimizer.lr == 0.1


def test_state_dict_round_trip_continues_exactly() -> None:
    hp = {"lr": 0.05, "clip": "global", "max_norm": 0.5, "norm": True}
    noise = gradient_stream(6)
    x = torch.ones(R, D, dtype=torch.float64)
    optimizer = make_vectorized_optimizer("clip_adam", x, hp)
    for t in range(T // 2):
        optimizer.step(x, x + noise[t])
    saved_x, saved = x.clone(), optimizer.state_dict()
    for t in range(T // 2, T):
        optimizer.step(x, x + noise[t])
    y = saved_x.clone()
    other = make_vectorized_optimizer("clip_adam", y, hp)
    other.load_state_dict(saved)
    for t in range(T // 2, T):
        other.step(y, y + noise[t])
    assert torch.equal(x, y)
    assert set(saved) == {"exp_avg", "group_exp_avg_sq", "group_step", "step"}
    assert float(saved["step"]) == T // 2
    with pytest.raises(ValueError, match="Invalid state"):
        other.load_state_dict({"exp_avg": saved["exp_avg"]})


def test_float32_iterates_keep_their_dtype() -> None:
    x = torch.ones(R, D, dtype=torch.float32)
    optimizer = make_vectorized_optimizer(
        "clip_adagrad", x, {"lr": 0.1, "norm": True, "b0": 1.0, "clip": "global"}
    )
    stats = optimizer.step(x, x + gradient_stream()[0].float())
    assert x.dtype == torch.float32 and optimizer.state["norm_sq_sum"].dtype == torch.float32
    assert stats.grad_norm.shape == (R,)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x: make_vectorized_optimizer("noise_injection", x, {}), "Invalid optimizer"),
        (lambda x: make_vectorized_optimizer("sgd", x, {"lr": 0.1}), "Invalid optimizer"),
        (lambda x: make_vectorized_optimizer("clip_sgd", x, {"lr": -1.0}), "learning rate"),
        (
            lambda x: make_vectorized_optimizer(
                "clip_sgd", x, {"lr": 0.1, "max_norm": {"policy": "autoclip"}}
            ),
            "Invalid max_norm",
        ),
        (lambda x: make_vectorized_optimizer("clip_adam", x, {"lr": 0.1, "delay": True}), "v0"),
        (
            lambda x: make_vectorized_optimizer("acclip", x, {"lr": 0.1}).step(x, x, threshold=1.0),
            "Invalid threshold",
        ),
        (lambda x: make_vectorized_optimizer("nsgd", x, {"lr": 0.1}).step(x, x[:, :1]), "Invalid g"),
        (lambda x: make_vectorized_optimizer("nsgd", x[0], {"lr": 0.1}), "Invalid x"),
    ],
)
def test_errors_are_one_line_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call(torch.zeros(R, D, dtype=torch.float64))
    assert "\n" not in str(info.value)


def test_configured_lists_become_tuples_and_defaults_come_from_the_class() -> None:
    optimizer = make_vectorized_optimizer("clip_adam", torch.zeros(2, 1), {"lr": 0.1, "betas": [0.8, 0.9]})
    assert optimizer.hyperparameters["betas"] == (0.8, 0.9)
    assert optimizer.hyperparameters["eps"] == 1e-8 and optimizer.hyperparameters["clip"] is None
    assert "foreach" not in optimizer.hyperparameters
    assert make_vectorized_optimizer("delta_gclip", torch.zeros(2, 1), {"lr": 0.1}).clip_mode == "global"
    assert make_vectorized_optimizer("acclip", torch.zeros(2, 1), {"lr": 0.1}).clip_mode is None
