"""``advise`` on a vectorized config runs on its model twin and recommends what the config can run."""

from __future__ import annotations

import pytest

from tailclip.advise.candidates import Candidate
from tailclip.advise.twin import model_twin, runnable_on
from tailclip.engine.config import ConfigError
from tailclip.engine.yaml_loading import builtin_configs, load_config
from tailclip.problems import TASKS

VECTORIZED = sorted(
    name for name in builtin_configs() if TASKS[load_config(name).task.name].kind == "vectorized"
)


def test_the_five_synthetic_configs_are_the_vectorized_ones() -> None:
    assert VECTORIZED == [
        "synthetic-adaptive-quantiles",
        "synthetic-clipping-bias",
        "synthetic-coordinate-clipping",
        "synthetic-rates",
        "synthetic-remark1",
    ]


@pytest.mark.parametrize("name", VECTORIZED)
def test_every_vectorized_builtin_config_has_a_model_twin(name: str) -> None:
    config = load_config(name)
    twin = model_twin(config)
    assert twin.config.task.name == "noisy-quadratic" and TASKS[twin.config.task.name].kind == "model"
    options = config.task.options
    twin_options = twin.config.task.options
    assert (twin_options["start"], twin_options["dim"]) == (options["x0"], options["dim"])
    assert twin_options["noise"] == options["noise"]
    for section in ("name", "optimizer", "train", "schedule", "output"):
        assert getattr(twin.config, section) == getattr(config, section), section
    assert twin.config.sweep is None
    # the original, reset as the twin trains, accepts the config's own optimizer
    assert twin.original.optimizer == config.optimizer and twin.original.task.name == "stochastic-quadratic"
    reset = twin.original.task.options
    assert reset["step_size"] == reset["threshold"] == "constant"


def test_overrides_give_the_original_config_as_the_twin_trains() -> None:
    twin = model_twin(load_config("synthetic-rates"))
    assert twin.overrides == (
        "task.options.step_size=constant",
        "task.options.threshold=constant",
        "task.options.average=none",
    )
    reloaded = load_config("synthetic-rates", list(twin.overrides))
    assert reloaded.task == twin.original.task


def _candidate(label: str, spec: dict) -> Candidate:
    return Candidate(label, spec, 0.01, 1.0, "test")


def test_candidates_are_what_the_original_config_runs() -> None:
    twin = model_twin(load_config("synthetic-rates"))
    candidates = [
        _candidate("adamw", {"name": "adamw", "weight_decay": 0.0}),
        _candidate("autoclip", {"name": "clip_sgd", "clip": "global",
                                "max_norm": {"policy": "autoclip", "percentile": 50.0}}),
        _candidate("cclip", {"name": "clip_sgd", "clip": "coord", "max_norm": 0.3}),
        _candidate("agni", {"name": "noise_injection", "base_optimizer": {"name": "adamw"}}),
    ]
    kept, left_out = runnable_on(twin.original, candidates)
    assert [c.label for c in kept] == ["adamw", "cclip"]
    assert kept[0].spec == {"name": "clip_adam", "weight_decay": 0.0} and "clip_adam" in kept[0].reason
    assert left_out[0] == (
        "autoclip: optimizer: Invalid max_norm: an adaptive threshold policy; allowed: a number > 0 "
        "(vectorized runs keep no per-run policy history)"
    )
    assert left_out[1].startswith("agni: optimizer: Invalid optimizer: 'noise_injection' has no vectorized")
    # without the resets the original refuses an unclipped optimizer (threshold: theory needs one)
    with pytest.raises(ConfigError, match="threshold"):
        load_config("synthetic-rates", ["optimizer={name: clip_adam, lr: 0.01}"])
    load_config("synthetic-rates", [*twin.overrides, "optimizer={name: clip_adam, lr: 0.01}"])
