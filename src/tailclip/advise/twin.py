"""``tailclip advise`` on a vectorized config: through its task's model twin.

A vectorized task (``stochastic-quadratic``, the synthetic suite) applies one optimizer rule to
``R`` runs held in one tensor. The noise diagnostics, the smoothness probe and the bake-off need
a model trained by an optimizer class, so the advice runs on the task's model twin
(:class:`tailclip.problems.ModelTwin`; for ``stochastic-quadratic``: ``noisy-quadratic`` with the
same quadratic, noise, batch and start): the config with its ``task`` section replaced, and the
same name, optimizer, schedule, training length, seed and store. The options the twin does not
carry (the runs, the theory's step-size and threshold schedules, averaging) are listed in the
answer.

The recommendation must be a spec ``tailclip run`` accepts on the *original* config, trained as
the twin trained it: the original with the twin's ``resets`` (``overrides``, the ``--set``
arguments that give constant step sizes and thresholds and no averaging). Every candidate is put
through the config loader with that config, as ``tailclip run`` would. AdamW has no vectorized
form and runs as ``clip_adam`` without clipping (the same update: Adam with decoupled weight
decay); a candidate the loader still refuses (an adaptive threshold, which vectorized runs do not
keep) is left out, with the loader's reason in the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tailclip.advise._engine import TASKS, ConfigError, ExperimentConfig, parse_config
from tailclip.advise.candidates import Candidate

__all__ = ["Twin", "model_twin", "runnable_on"]


@dataclass(frozen=True)
class Twin:
    """The model config the advice ran on (``config``) and what it left behind."""

    config: ExperimentConfig = field(repr=False)
    original: ExperimentConfig = field(repr=False)
    not_carried: tuple[str, ...]
    overrides: tuple[str, ...]
    left_out: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``twin`` in the answer): the two tasks, the twin's options, the lists."""
        return {
            "original_task": self.original.task.name,
            "task": self.config.task.name,
            "options": dict(self.config.task.options),
            "not_carried": list(self.not_carried),
            "overrides": list(self.overrides),
            "left_out": list(self.left_out),
        }


def _config_data(config: ExperimentConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude={"sweep", "monitor"})


def model_twin(config: ExperimentConfig) -> Twin:
    """The :class:`Twin` of a vectorized ``config``; ``ValueError`` (one line) when its task has none."""
    cls = TASKS[config.task.name]
    twin = cls.model_twin(cls.Options.model_validate(config.task.options))  # type: ignore[attr-defined]
    if twin is None:
        models = ", ".join(sorted(name for name, task in TASKS.items() if task.kind == "model"))
        raise ValueError(
            f"task.name: {config.task.name!r} is a vectorized task without a model twin; allowed: a model "
            f"task ({models}) or a vectorized task with one (stochastic-quadratic)"
        )
    data = _config_data(config)
    data["task"] = {"name": twin.task, "options": twin.options}
    as_twin = _config_data(config)
    as_twin["task"]["options"].update(twin.resets)
    return Twin(
        config=parse_config(data, f"{config.source} (model twin)"),
        original=parse_config(as_twin, config.source),
        not_carried=twin.not_carried,
        overrides=tuple(f"task.options.{key}={value}" for key, value in twin.resets.items()),
    )


def _refusal(original: ExperimentConfig, spec: dict[str, Any]) -> str | None:
    """The config loader's message when ``original`` with optimizer ``spec`` is refused, else ``None``."""
    try:
        parse_config({**_config_data(original), "optimizer": spec}, original.source)
    except ConfigError as exc:
        return str(exc).removeprefix(f"{original.source}: ")
    return None


def runnable_on(original: ExperimentConfig, candidates: list[Candidate]) -> tuple[list[Candidate], list[str]]:
    """The candidates ``original`` (a :attr:`Twin.original`) accepts (AdamW as ``clip_adam``), and
    ``"label: reason"`` for the rest."""
    kept, left_out = [], []
    for candidate in candidates:
        if candidate.spec["name"] == "adamw" and _refusal(original, candidate.with_lr(candidate.lr_low)):
            spec = {"name": "clip_adam", "weight_decay": candidate.spec.get("weight_decay", 0.0)}
            candidate = replace(
                candidate,
                spec=spec,
                reason=f"{candidate.reason} (as clip_adam without clipping: the same update, vectorized)",
            )
        refused = _refusal(original, candidate.with_lr(candidate.lr_low))
        if refused is None:
            kept.append(candidate)
        else:
            left_out.append(f"{candidate.label}: {refused}")
    return kept, left_out
