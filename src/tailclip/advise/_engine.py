"""The engine entry points ``tailclip.advise`` uses, imported in this one place.

When an engine path moves, only this file changes.
"""

from tailclip.engine.advice_section import ADVICE_KIND
from tailclip.engine.config import ConfigError, ExperimentConfig, parse_config
from tailclip.engine.devices import resolve_device
from tailclip.engine.optimizer_spec import build_optimizer, optimizer_class
from tailclip.engine.progress import progress_bar
from tailclip.engine.runner import run_one
from tailclip.engine.schedules import make_scheduler
from tailclip.engine.store import ResultsStore
from tailclip.engine.train_steps import build_task, model_step, training_length
from tailclip.engine.yaml_loading import load_config
from tailclip.problems import TASKS

__all__ = [
    "ADVICE_KIND",
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
    "progress_bar",
    "resolve_device",
    "run_one",
    "training_length",
]
