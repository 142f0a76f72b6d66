"""Speed of the synthetic suite: R runs x K steps of each optimizer, vectorized vs a per-run Python loop.

The vectorized side is the ``stochastic-quadratic`` task (:mod:`tailclip.problems.synthetic`)
as the engine runs it: f(x) = x^2/2 (d = 1), symmetric Pareto noise with alpha = 1.5 (the
clipped-AdaGrad repository's density) sampled per step for all runs, the optimizer's functional
core vmapped over the runs, and the per-run metrics of every step. Timed: ``K`` calls of
``task.step`` (plus the final ``evaluate``), after building the task.

The baseline is what the reference repositories do: a Python loop over runs, and in each run a
loop over steps calling the tailclip optimizer class on one parameter of shape (d,). To be fair
to it, the noise of a run is drawn in one vectorized call before its loop, so the loop times the
optimizer steps only. It is timed on a few runs x fewer steps and extrapolated linearly to
R x K (the cost of a loop is linear in runs and in steps); the output says so.

Both sides run with one torch thread by default (``--threads``): with 10^4 elements per op,
intra-op threads only add synchronisation, and on a busy machine an OpenMP barrier per op
(``sqrt`` is parallelised from a small size) costs milliseconds.

Run: ``python benchmarks/synthetic_bench.py`` (R = K = 10^4, every optimizer);
``--runs``, ``--steps``, ``--optimizers``, ``--baseline-runs``, ``--baseline-steps``;
``--markdown`` prints the table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import torch

from tailclip.engine.config import parse_config, task_context
from tailclip.optim import OPTIMIZERS
from tailclip.problems.samplers import sample_noise
from tailclip.problems.synthetic import StochasticQuadratic

# One representative configuration per optimizer (the clipped variant where there is one).
CONFIGS: dict[str, dict[str, Any]] = {
    "clip_sgd": {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 1.0},
    "clip_adam": {"lr": 0.1, "clip": "global", "max_norm": 1.0},
    "clip_adagrad": {"lr": 0.5, "norm": True, "delay": True, "clip": "global", "max_norm": 0.5, "b0": 3.0},
    "nsgd": {"lr": 0.01, "momentum": 0.9},
    "delta_gclip": {"lr": 0.1, "gamma": 1.0, "delta": 1e-3},
    "acclip": {"lr": 0.01},
}

ALPHA = 1.5


def make_task(name: str, runs: int, steps: int, dim: int) -> StochasticQuadratic:
    config = parse_config(
        {
            "name": "synthetic-bench",
            "task": {
                "name": "stochastic-quadratic",
                "options": {"runs": runs, "dim": dim, "x0": 1.0, "noise": "pareto", "alpha": ALPHA},
            },
            "optimizer": {"name": name, **CONFIGS[name]},
            "train": {"steps": steps, "seed": 0},
        }
    )
    options = StochasticQuadratic.Options.model_validate(config.task.options)
    return StochasticQuadratic(options, task_context(config, torch.device("cpu")))


class Timer:
    """Wall-clock and process CPU seconds of a block (CPU time is what a busy machine does not inflate)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_vectorized(name: str, runs: int, steps: int, dim: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` steps of ``runs`` runs through the task (build excluded)."""
    task = make_task(name, runs, steps, dim)
    with Timer() as timer:
        for _ in range(steps):
            task.step(1.0)
        task.evaluate()
    return timer.wall, timer.cpu


def time_loop(name: str, runs: int, steps: int, dim: int) -> tuple[float, float]:
    """(wall, CPU) seconds of a per-run Python loop of the optimizer class: ``runs`` x ``steps`` steps."""
    generator = torch.Generator().manual_seed(0)
    wall = cpu = 0.0
    for _ in range(runs):
        noise = sample_noise("pareto", (steps, dim), alpha=ALPHA, generator=generator)
        with Timer() as timer:
            x = torch.nn.Parameter(torch.ones(dim, dtype=torch.float64))
            optimizer = OPTIMIZERS[name]([x], **CONFIGS[name])
            for t in range(steps):
                x.grad = x.detach() + noise[t]
                optimizer.step()
        wall, cpu = wall + timer.wall, cpu + timer.cpu
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1)
    parser.add_argument("--optimizers", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--baseline-steps", type=int, default=1000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: at 1e4 elements per op, threads only add synchronisation)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads; R = {args.runs} runs x K = {args.steps} steps, d = {args.dim}"
    )
    print(
        f"baseline: per-run Python loop timed on {args.baseline_runs} runs x {args.baseline_steps} steps, "
        f"extrapolated linearly to {args.runs} x {args.steps}"
    )
    print("times are wall-clock (CPU) seconds; the speedup is the ratio of CPU times")
    rows = []
    scale = (args.runs / args.baseline_runs) * (args.steps / args.baseline_steps)
    for name in args.optimizers:
        wall, cpu = time_vectorized(name, args.runs, args.steps, args.dim)
        loop_wall, loop_cpu = time_loop(name, args.baseline_runs, args.baseline_steps, args.dim)
        ratio = loop_cpu * scale / cpu
        rows.append((name, wall, cpu, loop_wall, loop_cpu, loop_wall * scale, loop_cpu * scale, ratio))
        print(
            f"{name:>13}: vectorized {wall:6.1f} ({cpu:5.1f}) s   loop {loop_wall:5.2f} ({loop_cpu:5.2f}) s "
            f"measured -> {loop_wall * scale:7.0f} ({loop_cpu * scale:7.0f}) s extrapolated   "
            f"speedup {ratio:5.0f}x",
            flush=True,
        )
    if args.markdown:
        print()
        print(
            f"| optimizer | vectorized, {args.runs} runs x {args.steps} steps: wall (CPU) s "
            "| per-run loop on "
            f"{args.baseline_runs} runs x {args.baseline_steps} steps: wall (CPU) s | loop extrapolated to "
            f"{args.runs} x {args.steps}: wall (CPU) s | speedup (CPU) |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, wall, cpu, loop_wall, loop_cpu, ext_wall, ext_cpu, ratio in rows:
            print(
                f"| {name} | {wall:.1f} ({cpu:.1f}) | {loop_wall:.2f} ({loop_cpu:.2f}) "
                f"| {ext_wall:.0f} ({ext_cpu:.0f}) | {ratio:.0f}x |"
            )


if __name__ == "__main__":
    main()
