"""Optimizer configurations the framework tests resume from a checkpoint: one small one per
registered optimizer (clipping on where the rule has it), and AGNI with both estimators."""

from typing import Any

RESUME_CASES: dict[str, dict[str, Any]] = {
    "clip_sgd": {"lr": 0.05, "momentum": 0.9, "clip": "global", "max_norm": 0.5},
    "clip_adagrad": {"lr": 0.05, "clip": "global", "max_norm": 0.5},
    "clip_adam": {"clip": "global", "max_norm": 0.5},
    "nsgd": {"lr": 0.05, "momentum": 0.9},
    "delta_gclip": {"lr": 0.05, "gamma": 0.5, "delta": 0.1},
    "acclip": {"lr": 1e-3},
}
AGNI_CASES = {
    "noise_injection-ema": {"variance": "ema"},
    "noise_injection-microbatch": {"variance": "microbatch"},
}
