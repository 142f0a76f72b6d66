"""Run identity: which runs are the same experiment.

:func:`config_hash` is the sha256 (16 hex characters) of the canonical JSON of the run's
config, :func:`run_config_dict`: the resolved config without ``sweep`` (a run does not depend
on the grid it came from) and ``output`` (where results go is not what is run); ``label``
(presentation only) is left out of the hash. Resolution
fills in every default, so equal experiments written differently get the same identity.
:func:`group_key` is the same hash without ``train.seed``; it groups the seeds of one
configuration.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tailclip.engine.config import ExperimentConfig

__all__ = ["config_hash", "group_key", "run_config_dict"]


def run_config_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config of one run: the resolved config without ``sweep`` and ``output``."""
    return config.model_dump(mode="json", exclude={"sweep", "output"})


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _digest(data: Any) -> str:
    return hashlib.sha256(_canonical(data).encode()).hexdigest()[:16]


def _identity(config: ExperimentConfig) -> dict[str, Any]:
    data = run_config_dict(config)
    data.pop("label", None)  # a label names a run, it does not change it
    return data


def config_hash(config: ExperimentConfig) -> str:
    """Run identity: sha256 of the canonical JSON of :func:`run_config_dict` (``label`` aside), 16 hex."""
    return _digest(_identity(config))


def group_key(config: ExperimentConfig) -> str:
    """Like :func:`config_hash` without ``train.seed``: equal for the seeds of one configuration."""
    data = _identity(config)
    data["train"].pop("seed", None)
    return _digest(data)
