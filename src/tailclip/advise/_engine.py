"""The engine entry points ``tailclip.advise`` uses, imported in this one place.

The engine is being reorganised; when a path moves, only this file changes.
"""

from tailclip.engine.config import (
    ConfigError,
    ExperimentConfig,
    build_optimizer,
    load_config,
    optimizer_class,
    parse_config,
)
from tailclip.engine.runner import build_task, model_step, resolve_device, run_one
from tailclip.engine.schedules import make_scheduler
from tailclip.engine.store import ResultsStore
from tailclip.engine.tails import training_length
from tailclip.engine.tasks import TASKS

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ResultsStore",
    "TASKS",
    "build_optimizer",
    "build_task",
    "load_config",
    "make_scheduler",
    "model_step",
    "optimizer_class",
    "parse_config",
    "resolve_device",
    "run_one",
    "training_length",
]
