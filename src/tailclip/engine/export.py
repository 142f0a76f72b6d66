"""Export a results store's metrics as TensorBoard event files.

``export_tensorboard(store, out_dir)`` writes, for every run that logged metrics, one folder
``<out_dir>/<experiment>/<label>, seed <s>`` (the label as in the report:
:func:`tailclip.engine.labels.short_labels`, made safe for a file name) with the run's
scalars (``add_scalar(key, value, step)``) through ``torch.utils.tensorboard.SummaryWriter``
(the ``tensorboard`` package). CSV and Parquet exports are the store's own
(:meth:`~tailclip.engine.store.ResultsStore.export_csv`, ``export_parquet``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from tailclip.engine.consolidate import load_runs
from tailclip.engine.labels import short_labels
from tailclip.engine.store import STATUSES, ResultsStore

__all__ = ["export_tensorboard", "run_folder"]

_UNSAFE = re.compile(r"[^\w.,=+() -]+")


def run_folder(experiment: str, label: str, seed: int | None) -> str:
    """The folder of one run: ``<experiment>/<label>, seed <s>`` with unsafe characters as ``_``."""
    name = f"{label}, seed {seed}" if seed is not None else label
    return f"{_UNSAFE.sub('_', experiment).strip() or 'run'}/{_UNSAFE.sub('_', name).strip() or 'run'}"


def export_tensorboard(store: ResultsStore | str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write every run's metrics as TensorBoard events under ``out_dir``; ``{run_id: folder}``.

    NaN values are written as NaN (TensorBoard shows them as gaps). Runs without metrics are
    skipped. Two runs that would share a folder get their run id appended.
    """
    from torch.utils.tensorboard import SummaryWriter

    data = load_runs(store, statuses=STATUSES)
    by_name: dict[str, dict[str, dict]] = {}
    for gk, runs in data.groups.items():
        by_name.setdefault(str(runs[0].config.get("name", runs[0].name)), {})[gk] = runs[0].config
    labels = {gk: label for configs in by_name.values() for gk, label in short_labels(configs).items()}
    out = Path(out_dir)
    written: dict[str, Path] = {}
    used: set[str] = set()
    for gk, runs in data.groups.items():
        for run in runs:
            series = data.series.get(run.run_id)
            if not series:
                continue
            folder = run_folder(str(run.config.get("name", run.name)), labels[gk], run.seed)
            if folder in used:
                folder = f"{folder} {run.run_id[:10]}"
            used.add(folder)
            writer = SummaryWriter(log_dir=str(out / folder))
            try:
                for key, (steps, values) in sorted(series.items()):
                    for step, value in zip(steps.tolist(), values.tolist(), strict=True):
                        writer.add_scalar(key, math.nan if value is None else value, global_step=step)
            finally:
                writer.close()
            written[run.run_id] = out / folder
    return written
