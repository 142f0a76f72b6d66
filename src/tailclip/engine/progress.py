"""The one progress display of the command line and the sweep backends (rich).

``progress_bar(console)`` is a :class:`rich.progress.Progress` with the columns every tailclip
command shows: spinner, bold description, bar, a counts column, a free ``rate`` text, elapsed
time and ETA. It is disabled (draws nothing) when the console is not a terminal, so logs and
pipes get the plain lines the callers print instead.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["progress_bar"]


class _FieldColumn(ProgressColumn):
    """The text of a task field (empty when the task does not set it)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get(self.field, "")))


def progress_bar(console: Console, counts: str = "{task.completed}/{task.total}") -> Progress:
    """A progress display on ``console``: spinner, description, bar, ``counts``, rate, elapsed, ETA.

    ``counts`` is a rich format string over the task (``"runs {task.fields[runs]}"``);
    ``progress.update(task, rate="120 steps/s")`` sets the rate text.
    """
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(counts),
        _FieldColumn("rate"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
