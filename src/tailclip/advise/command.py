"""``tailclip advise CONFIG``: progress bars while it runs, the rich answer, and ``--json FILE``.

:func:`advise_command` is what the CLI's ``advise`` command calls. User errors raise
``ValueError`` before anything is written; the JSON file is written atomically at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from tailclip.advise._engine import ExperimentConfig, progress_bar
from tailclip.advise.answer import Answer, to_json
from tailclip.advise.pipeline import advise, write_atomic
from tailclip.advise.render import render_answer

__all__ = ["advise_command"]

MIN_NOISE_BATCHES = 20
PHASES = {
    "measure": "measuring the noise",
    "bake-off": "bake-off trials",
    "seeds": "finalists over seeds",
    "control": "large-batch control",
}


def _check_json_path(json_path: str | None) -> Path | None:
    if json_path is None:
        return None
    path = Path(json_path)
    if path.is_dir():
        raise ValueError(f"--json: {json_path} is a directory; allowed: a file path")
    if not path.parent.is_dir():
        raise ValueError(
            f"--json: directory {path.parent} does not exist; allowed: a file in an existing directory"
        )
    return path


def advise_command(
    experiment: ExperimentConfig,
    *,
    budget_minutes: float | None,
    seeds: int,
    json_path: str | None,
    console: Console,
    noise_batches: int = 100,
    trial_steps: int | None = None,
) -> Answer:
    """Run :func:`~tailclip.advise.advise` with progress bars, print the answer, write ``--json``."""
    path = _check_json_path(json_path)
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"--budget-minutes: got {budget_minutes}; allowed: a number > 0")
    if seeds < 2:
        raise ValueError(f"--seeds: got {seeds}; allowed: an integer >= 2 (the seed spread needs two)")
    if trial_steps is not None and trial_steps < 1:
        raise ValueError(f"--steps: got {trial_steps}; allowed: an integer >= 1")
    if noise_batches < MIN_NOISE_BATCHES:
        raise ValueError(
            f"--noise-batches: got {noise_batches}; allowed: an integer >= {MIN_NOISE_BATCHES} "
            "(the tail index needs 2 blocks of 10)"
        )
    progress = progress_bar(console)
    bars: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            bars[phase] = progress.add_task(PHASES[phase], total=total)
        progress.update(bars[phase], completed=done, total=total)

    with progress:
        answer = advise(
            experiment,
            budget_minutes=budget_minutes,
            seeds=seeds,
            noise_batches=noise_batches,
            trial_steps=trial_steps,
            progress=update,
        )
    render_answer(answer, console)
    if path is not None:
        write_atomic(path, to_json(answer.to_dict()))
        console.print(f"JSON: {path}", soft_wrap=True)
    return answer
