"""Which candidates ``advise`` proposes, and why."""

from __future__ import annotations

import pytest
from _advice_fakes import measurement

from tailclip.advise.candidates import choose_candidates, is_clipped, lr_of, with_lr
from tailclip.engine.config import parse_config

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9}


def labels(candidates: list) -> list[str]:
    return [c.label for c in candidates]


def test_own_optimizer_adamw_and_clipping_always() -> None:
    out = choose_candidates(SGD, measurement(("heavy-tailed",)))
    assert labels(out)[:5] == ["yours", "adamw", "gclip", "autoclip", "cclip"]
    assert all(c.reason for c in out)


def test_adamw_candidates_keep_the_configs_default_weight_decay() -> None:
    """text-agni's AdamW leaves weight_decay at torch's default 0.01: the spec of "yours" drops it
    (a default), the AdamW-based candidates keep it."""
    resolved = parse_config(
        {"name": "x", "task": {"name": "noisy-quadratic"}, "optimizer": {"name": "adamw", "lr": 1e-4},
         "train": {"steps": 5}}
    ).optimizer.model_dump()
    assert resolved["weight_decay"] == 0.01
    out = {c.label: c for c in choose_candidates(resolved, measurement(("light-tailed",)))}
    assert out["yours"].spec == {"name": "adamw"}
    assert out["agni"].spec["base_optimizer"]["weight_decay"] == 0.01
    heavy = {c.label: c for c in choose_candidates(resolved, measurement(("heavy-tailed",)))}
    assert heavy["clip-adam"].spec["weight_decay"] == 0.01


def test_light_tailed_noise_adds_agni_around_adamw_with_a_running_variance() -> None:
    out = {c.label: c for c in choose_candidates(SGD, measurement(("light-tailed",)))}
    assert list(out) == ["yours", "adamw", "gclip", "autoclip", "cclip", "agni"]
    agni = out["agni"]
    assert agni.spec == {
        "name": "noise_injection",
        "eta": 0.01,
        "variance": "ema",
        "base_optimizer": {"name": "adamw", "weight_decay": 0.0},
    }
    assert not agni.clipped and (agni.lr_low, agni.lr_high) == (out["adamw"].lr_low, out["adamw"].lr_high)
    assert agni.with_lr(1e-3)["base_optimizer"]["lr"] == 1e-3
    config = {"name": "q", "task": {"name": "noisy-quadratic"}, "train": {"steps": 5}}
    parse_config({**config, "optimizer": agni.with_lr(1e-3)})  # a spec the engine runs
    for verdicts in (("heavy-tailed",), ("light-tailed", "inconclusive")):
        assert "agni" not in labels(choose_candidates(SGD, measurement(verdicts)))


def test_adam_config_is_its_own_adamw_baseline_and_keeps_only_changed_keys() -> None:
    resolved = parse_config(
        {
            "name": "x",
            "task": {"name": "noisy-quadratic"},
            "optimizer": {"name": "adam", "lr": 3e-3},
            "train": {"steps": 5},
        }
    ).optimizer.model_dump()
    assert "amsgrad" in resolved  # the resolved spec carries every default
    out = choose_candidates(resolved, measurement())
    assert "adamw" not in labels(out)
    assert out[0].spec == {"name": "adam"} and out[0].with_lr(3e-3) == {"name": "adam", "lr": 3e-3}
    assert out[0].lr_low == pytest.approx(1e-4)


def test_heavy_or_inconclusive_noise_adds_clipped_adam_and_acclip() -> None:
    for verdicts in (("heavy-tailed",), ("light-tailed", "inconclusive")):
        assert {"clip-adam", "acclip"} <= set(labels(choose_candidates(SGD, measurement(verdicts))))


def test_growing_smoothness_adds_delta_gclip() -> None:
    out = choose_candidates(SGD, measurement(grows=True, l1=2.0))
    assert "delta-gclip" in labels(out)
    assert "delta-gclip" not in labels(choose_candidates(SGD, measurement(grows=False)))


def test_thresholds_come_from_the_measured_norms() -> None:
    out = {c.label: c for c in choose_candidates(SGD, measurement(("heavy-tailed",)))}
    assert out["gclip"].spec["max_norm"] == 2.0  # q50
    assert out["cclip"].spec["max_norm"] == 0.02  # q50 / sqrt(d)
    assert out["clip-adam"].spec["max_norm"] == 4.0  # q90
    assert out["gclip"].spec["momentum"] == 0.9  # the config's heavy ball carries over


def test_lr_ranges_center_on_the_config_lr_for_its_family() -> None:
    out = {c.label: c for c in choose_candidates(SGD, measurement())}
    assert out["yours"].lr_low == pytest.approx(0.1 / 30) and out["yours"].lr_high == pytest.approx(3.0)
    assert out["gclip"].lr_low == pytest.approx(0.1 / 30)
    assert out["adamw"].lr_low == pytest.approx(1e-2 / 30)
    grid = out["yours"].lr_grid(5)
    assert grid[0] == pytest.approx(0.00333) and grid[-1] == 3.0 and grid[2] == 0.1


def test_every_candidate_spec_is_a_valid_config_optimizer() -> None:
    for candidate in choose_candidates(SGD, measurement(("heavy-tailed",), grows=True, l1=1.0)):
        config = parse_config(
            {
                "name": "x",
                "task": {"name": "noisy-quadratic"},
                "optimizer": candidate.with_lr(0.05),
                "train": {"steps": 5},
            }
        )
        assert config.optimizer.name == candidate.spec["name"]


def test_is_clipped() -> None:
    assert is_clipped({"name": "clip_sgd"})  # global by default
    assert not is_clipped({"name": "clip_sgd", "clip": None})
    assert not is_clipped({"name": "clip_adam"})  # no clipping by default
    assert is_clipped({"name": "clip_adam", "clip": "layer"})
    assert is_clipped({"name": "delta_gclip"}) and is_clipped({"name": "acclip"})
    assert not is_clipped({"name": "adamw"})
    assert is_clipped({"name": "noise_injection", "base_optimizer": {"name": "clip_adam", "clip": "global"}})


def test_noise_injection_step_size_lives_in_its_base_optimizer() -> None:
    spec = {"name": "noise_injection", "eta": 0.01, "base_optimizer": {"name": "adamw", "lr": 1e-4}}
    assert lr_of(spec) == 1e-4
    assert with_lr(spec, 3e-4)["base_optimizer"]["lr"] == 3e-4
