"""Speed and size of ``tailclip report``: a store of R runs x K logged steps, then the report.

The store holds ``--configs`` configurations of the noisy-quadratic ClipSGD config (a grid
over ``optimizer.lr``) x ``R / configs`` seeds, each run with ``train/loss`` logged at every
one of K steps, ``eval/loss`` every K/100 steps and ``time/step_seconds`` every K/10 steps
(random values: the report's cost depends on the number of series points, not on their
values). It is built once (``--store``, reused when it exists: building 10^7 rows takes
minutes) through the store's own API. Timed: ``tailclip report STORE -o report.html`` as a
subprocess (start-up, imports and writing included), with the size of the HTML written.

Run: ``python benchmarks/report_bench.py`` (R = 1000, K = 10^4); ``--runs``, ``--steps``,
``--configs``, ``--store``; ``--markdown`` prints the row for docs/benchmarks.md. ``--read``
times only the report's read of the store instead, ``ResultsStore(store, read_only=True).metrics()``
in this process (wall and CPU seconds, and the rows read).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tailclip.engine.config import parse_config
from tailclip.engine.store import ResultsStore, make_owner


def build_store(path: Path, runs: int, steps: int, configs: int) -> None:
    """Fill ``path`` with ``runs`` finished runs of ``steps`` logged steps (see the module docstring)."""
    store = ResultsStore(path)
    rng = np.random.default_rng(0)
    lrs = np.geomspace(0.01, 1.0, configs)
    all_steps = np.arange(1, steps + 1)
    eval_steps = all_steps[:: max(1, steps // 100)]
    time_steps = all_steps[:: max(1, steps // 10)]
    for index in range(runs):
        config = parse_config(
            {
                "name": "report-bench",
                "task": {"name": "noisy-quadratic", "options": {"dim": 2}},
                "optimizer": {"name": "clip_sgd", "lr": float(lrs[index % configs]), "clip": "global",
                              "max_norm": 1.0},
                "train": {"steps": steps, "seed": index // configs},
            }
        )
        run_id = store.add_runs([config])[0]
        if store.claim(make_owner(), run_ids=[run_id]) is None:
            continue
        loss = np.exp(-all_steps / steps) * rng.lognormal(0.0, 0.3, size=steps)
        rows = [(int(s), "train/loss", float(v)) for s, v in zip(all_steps, loss, strict=True)]
        rows += [(int(s), "eval/loss", float(loss[s - 1])) for s in eval_steps]
        rows += [(int(s), "time/step_seconds", 1e-3) for s in time_steps]
        store.log_metrics(run_id, rows)
        store.finish(run_id, wall_time=steps * 1e-3, steps=steps)
    store.close()


def time_read(path: Path) -> None:
    """Print the wall and CPU seconds of one ``metrics()`` read of the whole store."""
    store = ResultsStore(path, read_only=True)
    wall, cpu = time.perf_counter(), time.process_time()
    series = store.metrics()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = sum(steps.size for per_run in series.values() for steps, _ in per_run.values())
    print(f"ResultsStore.metrics() of {path}: {rows} rows in {wall:.1f} s wall, {cpu:.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--store", type=Path, default=Path("runs/report-bench/store.sqlite"))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--read", action="store_true", help="time ResultsStore.metrics() alone")
    args = parser.parse_args()
    if not args.store.is_file():
        args.store.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build_store(args.store, args.runs, args.steps, args.configs)
        print(f"built {args.store} in {time.perf_counter() - started:.0f} s", flush=True)
    if args.read:
        time_read(args.store)
        return
    output = args.store.parent / "report.html"
    command = [sys.executable, "-m", "tailclip.cli", "report", str(args.store), "-o", str(output)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    seconds = time.perf_counter() - started
    size = output.stat().st_size
    if args.markdown:
        print(f"| {args.runs} runs x {args.steps} steps ({args.configs} configurations) | {seconds:.1f} s "
              f"| {size / 1e6:.2f} MB |")
    else:
        print(f"report of {args.runs} runs x {args.steps} logged steps: {seconds:.1f} s, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
