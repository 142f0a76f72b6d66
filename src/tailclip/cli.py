"""The ``tailclip`` command line (typer + rich): run, sweep, report, export, tails, list, demo.

* ``tailclip run CONFIG [--set k=v ...] [--reclaim]``: train one config (its ``sweep`` section
  ignored).
* ``tailclip sweep CONFIG [--set k=v ...] [--backend local|ray] [--workers N] [--reclaim]``:
  every grid point x seed; finished runs are skipped, failed and interrupted ones redone.
  ``--reclaim`` takes running runs over from their recorded owner even if its lease is live.
* ``tailclip report STORE -o report.html [--baseline LABEL]``: one self-contained HTML report;
  the store is opened read-only, and anything but a tailclip store is refused untouched.
* ``tailclip tails CONFIG [--set k=v ...] [-o DIR] [--steps N] [--batch-size B] [--mean-batches M]
  [--noise-batches N] [--per-sample]``: the gradient noise of a config's model task (after ``N``
  training steps): verdict and tail index, ``noise_report.json``, PNGs, ``noise_section.html``.
* ``tailclip export STORE [--tensorboard DIR] [--csv FILE] [--parquet FILE]``: the metrics as
  TensorBoard event files (one folder per run, named by its label), CSV or Parquet.
* ``tailclip advise CONFIG [--set k=v ...] [--budget-minutes M] [--steps N] [--seeds N]
  [--noise-batches N] [--json FILE]``: the
  recommended optimizer for a config, with its evidence (:mod:`tailclip.advise`).
* ``tailclip list``: tasks, optimizers and built-in configs.
* ``tailclip demo``: the built-in ``demo`` sweep and its table.

``CONFIG`` is a YAML file or the name of a built-in config (``tailclip list``). Everything is
validated before the store is opened: a user error prints one line to stderr and exits with
code 2, writing nothing. A failed run exits with code 1. Progress bars appear only when stdout
is a terminal; otherwise a sweep prints one line per run.

Length (over ~500 lines): one typer command per verb, each its arguments, the call into the
engine and its rich output; nothing else lives here (progress: ``engine/progress.py``,
advice: ``tailclip.advise``, tables: ``engine/tables.py``).
"""

from __future__ import annotations

import importlib
import inspect
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tailclip.engine.config import ConfigError, ExperimentConfig
from tailclip.engine.consolidate import consolidate, load_runs
from tailclip.engine.grid import SweepPoint, sweep_points
from tailclip.engine.lease import Heartbeat
from tailclip.engine.optimizer_spec import BASELINE_OPTIMIZERS
from tailclip.engine.progress import progress_bar
from tailclip.engine.runner import run_one
from tailclip.engine.store import STATUSES, ResultsStore, StoreError, make_owner
from tailclip.engine.sweep import SweepEvent, assignment_label, run_sweep_local
from tailclip.engine.yaml_loading import builtin_configs, load_config
from tailclip.optim import OPTIMIZERS
from tailclip.problems import TASKS

if TYPE_CHECKING:
    from tailclip.noise import NoiseReport

app = typer.Typer(
    name="tailclip",
    help="Train under heavy-tailed gradient noise: run configs, sweeps, and inspect results.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

BACKENDS = ("local", "ray")
RAY_HINT = "backend ray needs Ray and tailclip.engine.ray_backend: pip install 'tailclip[ray]'"

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config value: dotted.key=value (value parsed as YAML); repeatable."
    ),
]
ConfigArgument = Annotated[str, typer.Argument(help="A YAML config file, or the name of a built-in config.")]
ReclaimOption = Annotated[
    bool, typer.Option("--reclaim", help="Take running runs over from their recorded owner, even a live one.")
]


def _user_error(message: object) -> NoReturn:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(2)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120), soft_wrap=False)
    return console


def _open_store(path: str) -> ResultsStore:
    try:
        return ResultsStore(path)
    except (OSError, sqlite3.Error, StoreError) as exc:
        _user_error(f"output.store: cannot open {path}: {exc}")


def _load(config: str, overrides: Sequence[str] | None) -> ExperimentConfig:
    try:
        return load_config(config, list(overrides or []))
    except ConfigError as exc:
        _user_error(exc)


def _points(config: ExperimentConfig) -> list[SweepPoint]:
    try:
        return sweep_points(config)
    except ConfigError as exc:
        _user_error(exc)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.3g}"


# ----------------------------------------------------------------------------- progress


class _SweepDisplay:
    """Rich progress for a sweep (runs done / total, steps/s, ETA), or plain lines off a terminal."""

    def __init__(self, console: Console, labels: dict[str, str], todo: Sequence[ExperimentConfig]) -> None:
        self.console = console
        self.labels = labels
        self.terminal = console.is_terminal
        self.runs_total = len(todo)
        self.runs_done = 0
        steps = [c.train.steps for c in todo]
        self.by_steps = all(s is not None for s in steps)
        self.steps: dict[str, int] = {}
        self.started = time.perf_counter()
        self.progress = progress_bar(console, counts="runs {task.fields[runs]}")
        total = sum(steps) if self.by_steps else self.runs_total  # type: ignore[arg-type]
        self.task = self.progress.add_task("sweep", total=total, runs=f"0/{self.runs_total}", rate="")

    def __enter__(self) -> _SweepDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: SweepEvent) -> None:
        if event.kind == "progress":
            self.steps[event.run_id] = event.step
        elif event.kind == "done":
            self.runs_done += 1
            if not self.terminal:
                label = self.labels.get(event.run_id, "")
                extra = f" {event.error}" if event.error else ""
                print(f"{event.status} {event.run_id} [{label}] {event.seconds:.1f}s{extra}", flush=True)
        elif event.kind == "waiting":
            line = f"waiting for {event.run_id} [{self.labels.get(event.run_id, '')}], {event.error}"
            if self.terminal:
                self.progress.console.print(line)
            else:
                print(line, flush=True)
        done_steps = sum(self.steps.values())
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(
            self.task,
            completed=done_steps if self.by_steps else self.runs_done,
            runs=f"{self.runs_done}/{self.runs_total}",
            rate=f"{done_steps / elapsed:,.0f} steps/s",
        )


# ----------------------------------------------------------------------------- result tables


def _primary_key(keys: set[str]) -> str:
    for key in ("eval/loss", "train/loss", "eval/loss/q50", "train/loss/q50"):
        if key in keys:
            return key
    return sorted(keys)[0] if keys else "eval/loss"


def results_table(store: ResultsStore, points: Sequence[SweepPoint], title: str = "") -> Table:
    """Per configuration (seeds pooled, :func:`~tailclip.engine.consolidate.consolidate`): the final
    value of the main loss, mean, sd, median, 95% quantile, diverged runs and ms per step."""
    data = load_runs(store, run_ids=[p.config.run_id for p in points], statuses=STATUSES)
    key = _primary_key({k for k in data.select(("finished",)).keys if not k.startswith("time/")})
    summary = consolidate(data.select(("finished",)), keys=[key, "train/diverged"])
    caption = f"final {key}, per configuration over seeds"
    table = Table(title=f"{title}\n{caption}" if title else f"final {key}")
    table.add_column("configuration")
    for name in ("n", "mean", "sd", "median", "95%", "diverged", "ms/step"):
        table.add_column(name, justify="right")
    for config in summary.configs:
        total = config.n_runs + config.n_failed + config.n_unfinished
        metric = config.metrics.get(key)
        cells = ["-"] * 4
        if metric is not None:
            final = metric.final
            cells = [_fmt(final.mean), _fmt(final.sd), _fmt(final.median), _fmt(final.q95)]
        diverged = config.metrics.get("train/diverged")
        ms = _fmt(1000 * config.step_seconds.median) if config.step_seconds else "-"
        n = metric.final.n if metric is not None else 0
        n_diverged = str(diverged.final.n if diverged else 0)
        table.add_row(config.short_label, f"{n}/{total}", *cells, n_diverged, ms)
    return table


def _run_table(store: ResultsStore, run_id: str) -> Table:
    series = store.metrics([run_id]).get(run_id, {})
    table = Table(title=f"run {run_id}")
    table.add_column("metric")
    table.add_column("step", justify="right")
    table.add_column("final", justify="right")
    for key, (steps, values) in sorted(series.items()):
        shown = ("opt/grad_norm", "opt/clip_factor", "opt/noise_norm")
        if key.startswith("train/") or key.startswith("eval/") or key in shown:
            table.add_row(key, str(int(steps[-1])), _fmt(float(values[-1])))
    return table


# ----------------------------------------------------------------------------- commands


@app.command()
def run(config: ConfigArgument, set_: SetOption = None, reclaim: ReclaimOption = False) -> None:
    """Train one config and print its final metrics (a config's sweep section is ignored)."""
    experiment = _load(config, set_)
    console = _console()
    if experiment.sweep is not None:
        console.print(
            "note: this config has a sweep section; running its base config (use tailclip sweep)",
            soft_wrap=True,
        )
    store = _open_store(experiment.output.store)
    run_id = store.add_runs([experiment])[0]
    if reclaim:
        store.expire_leases([run_id])
    owner = make_owner()
    if store.claim(owner, run_ids=[run_id]) is None:
        record = store.run(run_id)
        if record is not None and record.status == "finished":
            console.print(f"run {run_id} already finished in {store.path}", soft_wrap=True)
            console.print(_run_table(store, run_id))
            return
        holder = record.holder if record is not None else "gone"
        typer.echo(f"error: run {run_id} is {holder}", err=True)
        raise typer.Exit(1)
    progress = progress_bar(console, counts="{task.completed}/{task.total} steps")
    started = time.perf_counter()
    with progress, Heartbeat(store, owner, store.lease_seconds / 4):
        task = progress.add_task(run_id, total=experiment.train.steps, rate="")
        last = [0.0]

        def on_step(step: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.1 or step == total:
                last[0] = now
                rate = step / max(now - started, 1e-9)
                progress.update(task, completed=step, total=total, rate=f"{rate:,.0f} steps/s")

        try:
            run_one(experiment, store, progress=on_step)
        except Exception:  # noqa: BLE001  (the store holds the traceback; show it)
            record = store.run(run_id)
            typer.echo(f"error: run {run_id} failed: {record.error if record else ''}", err=True)
            raise typer.Exit(1) from None
    console.print(_run_table(store, run_id))
    console.print(f"store: {store.path}", soft_wrap=True)


def _sweep(
    experiment: ExperimentConfig,
    backend: str,
    workers: int,
    console: Console,
    title: str = "",
    reclaim: bool = False,
) -> tuple[ResultsStore, list[SweepPoint], bool]:
    """Validate, run and summarise a sweep; returns (store, points, every run ok)."""
    if backend not in BACKENDS:
        _user_error(f"--backend: got {backend!r}; allowed: {', '.join(BACKENDS)}")
    if workers < 1:
        _user_error(f"--workers: got {workers}; allowed: an integer >= 1")
    points = _points(experiment)
    configs = [p.config for p in points]
    ray_sweep = None
    if backend == "ray":
        try:
            importlib.import_module("ray")
            ray_sweep = importlib.import_module("tailclip.engine.ray_backend").run_sweep_ray
        except ImportError as exc:
            _user_error(f"{RAY_HINT} ({exc})")
    store = _open_store(experiment.output.store)
    labels = {
        p.config.run_id: f"{p.config.label or assignment_label(p.assignment)}, seed {p.config.train.seed}"
        for p in points
    }
    finished_before = {r.run_id for r in store.runs(status="finished", run_ids=list(labels))}
    todo = [c for c in configs if c.run_id not in finished_before]
    console.print(
        f"{experiment.name}: {len(configs)} runs, {len(finished_before)} already finished, "
        f"{len(todo)} to run on {backend} with {workers} worker(s); store {store.path}",
        soft_wrap=True,
    )
    with _SweepDisplay(console, labels, todo) as display:
        if ray_sweep is not None:
            ray_sweep(configs, str(store.path), workers, on_event=display, reclaim=reclaim)
        else:
            run_sweep_local(configs, store.path, workers, on_event=display, reclaim=reclaim)
    records = store.runs(run_ids=list(labels))
    failed = [r for r in records if r.status != "finished"]
    console.print(results_table(store, points, title))
    for record in failed:
        first = (record.error or record.status).splitlines()[0]
        typer.echo(f"run {record.run_id} [{labels[record.run_id]}] {record.status}: {first}", err=True)
    return store, points, not failed


@app.command()
def sweep(
    config: ConfigArgument,
    set_: SetOption = None,
    backend: Annotated[str, typer.Option(help="local (a process pool) or ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Worker processes (local) or concurrent Ray tasks.")] = 1,
    reclaim: ReclaimOption = False,
) -> None:
    """Run every grid point x seed of a config; skips finished runs, redoes failed/interrupted ones."""
    experiment = _load(config, set_)
    console = _console()
    _, _, ok = _sweep(experiment, backend, workers, console, title=experiment.name, reclaim=reclaim)
    if not ok:
        raise typer.Exit(1)


@app.command()
def report(
    store: Annotated[str, typer.Argument(help="A results store (the SQLite file of output.store).")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML file to write.")] = "report.html",
    title: Annotated[str | None, typer.Option(help="Title of the report.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Configuration the overhead is relative to: its label, group key or key=value,..."),
    ] = None,
) -> None:
    """Write one self-contained HTML report of a store: tables, curves, quantile bands, diagnostics."""
    from tailclip.engine.report import report_command  # matplotlib loads only for this command

    try:
        results = ResultsStore(store, read_only=True)
        if results.version_note:
            typer.echo(f"note: {results.version_note}", err=True)
        path = report_command(results, output, title=title, baseline=baseline)
    except ValueError as exc:
        _user_error(exc)
    _console().print(f"report: {path}")


@app.command()
def export(
    store: Annotated[str, typer.Argument(help="A results store (the SQLite file of output.store).")],
    tensorboard: Annotated[
        str | None, typer.Option(help="Folder for TensorBoard event files: one subfolder per run.")
    ] = None,
    csv: Annotated[str | None, typer.Option(help="CSV file of every metric (long form).")] = None,
    parquet: Annotated[str | None, typer.Option(help="Parquet file of every metric (long form).")] = None,
) -> None:
    """Export a store's metrics: TensorBoard event files, CSV or Parquet."""
    if tensorboard is None and csv is None and parquet is None:
        _user_error("export: nothing to write; allowed: --tensorboard DIR, --csv FILE, --parquet FILE")
    if not Path(store).is_file():
        _user_error(f"Invalid store: {store!r} does not exist; allowed: the path of a results store")
    results = _open_store(store)
    console = _console()
    if tensorboard is not None:
        from tailclip.engine.export import export_tensorboard  # tensorboard loads only for this

        folders = export_tensorboard(results, tensorboard)
        console.print(f"tensorboard: {len(folders)} runs in {tensorboard}", soft_wrap=True)
    if csv is not None:
        console.print(f"csv: {results.export_csv(csv)}", soft_wrap=True)
    if parquet is not None:
        console.print(f"parquet: {results.export_parquet(parquet)}", soft_wrap=True)


_MIN_NOISE_SAMPLES = 20  # 2 k1 for the tail index with its default block length k1 = 10


@app.command()
def tails(
    config: ConfigArgument,
    set_: SetOption = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for noise_report.json, the PNGs and noise_section.html "
            "(default: <store dir>/tails/<config name>).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Batch size B of a noise sample (default: monitor.batch_size, else train.batch_size)."
        ),
    ] = None,
    mean_batches: Annotated[int, typer.Option(help="Batches M averaged into the mean gradient.")] = 16,
    noise_batches: Annotated[
        int, typer.Option(help="Noise batches: one noise sample each (B each with --per-sample).")
    ] = 200,
    per_sample: Annotated[
        bool,
        typer.Option("--per-sample", help="Per-example noise (torch.func); tasks with a separable loss."),
    ] = False,
    steps: Annotated[
        int,
        typer.Option(help="Train this many steps with the config's optimizer and schedule, then measure."),
    ] = 0,
) -> None:
    """Measure the gradient noise of a config's model task: verdict, tail index, JSON, PNGs, HTML."""
    from tailclip.engine.tails import config_tails_report  # matplotlib loads only for this command

    experiment = _load(config, set_)
    task_cls = TASKS[experiment.task.name]
    if task_cls.kind != "model":
        models = ", ".join(sorted(n for n, c in TASKS.items() if c.kind == "model"))
        _user_error(
            f"task.name: {experiment.task.name!r} is a vectorized task; allowed: a model task ({models})"
        )
    counts = {"--batch-size": batch_size, "--mean-batches": mean_batches, "--noise-batches": noise_batches}
    for flag, value in counts.items():
        if value is not None and value < 1:
            _user_error(f"{flag}: got {value}; allowed: an integer >= 1")
    size = batch_size or experiment.monitor.batch_size or experiment.train.batch_size
    samples = noise_batches * (size if per_sample else 1)
    if samples < _MIN_NOISE_SAMPLES:
        _user_error(
            f"--noise-batches: {noise_batches} gives {samples} noise samples; "
            f"allowed: at least {_MIN_NOISE_SAMPLES} samples"
        )
    if steps < 0 or (experiment.train.steps is not None and steps > experiment.train.steps):
        _user_error(f"--steps: got {steps}; allowed: 0 <= steps <= train.steps ({experiment.train.steps})")
    out_dir = Path(output) if output else Path(experiment.output.store).parent / "tails" / experiment.name
    console = _console()
    progress = progress_bar(console)
    bars: dict[str, Any] = {}

    def advance(name: str, description: str) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(description, total=total)
            progress.update(bars[name], completed=done, total=total)

        return update

    try:
        with progress:
            report = config_tails_report(
                experiment,
                out_dir,
                batch_size=size,
                mean_batches=mean_batches,
                noise_batches=noise_batches,
                per_sample=per_sample,
                steps=steps,
                on_train=advance("train", "training steps"),
                on_noise=advance("noise", "noise batches"),
            )
    except ValueError as exc:
        _user_error(exc)
    except Exception as exc:  # noqa: BLE001  (a diverged training, a failing model: one line, exit 1)
        typer.echo(f"error: tails failed: {type(exc).__name__}: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from None
    console.print(_tails_table(report, f"{experiment.name}: gradient noise at step {steps}"))
    for name, path in report.paths.items():
        console.print(f"{name}: {path}", soft_wrap=True)


def _tails_table(report: NoiseReport, title: str) -> Table:
    t, h, s = report.tail, report.hill, report.sample
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("verdict", report.verdict.label)
    table.add_row("alpha (Mohammadi, vector) [95% CI]", f"{t.alpha:.3f} [{t.low:.3f}, {t.high:.3f}]")
    table.add_row("alpha (Hill, norms)", f"{h.alpha:.3f} [{h.low:.3f}, {h.high:.3f}]")
    four = report.tail_4b
    table.add_row(
        "alpha at 4B", "-" if four is None else f"{four.alpha:.3f} [{four.low:.3f}, {four.high:.3f}]"
    )
    table.add_row("noise scale B_simple", report.noise_scale.text())
    table.add_row(
        "sample",
        f"n = {s['n']} ({s['mode']}), B = {s['batch_size']}, M = {s['mean_batches']}, d = {s['num_params']}",
    )
    return table


@app.command("list")
def list_() -> None:
    """List tasks, optimizers and built-in configs."""
    console = _console()
    tasks = Table(title="tasks")
    tasks.add_column("name")
    tasks.add_column("kind")
    tasks.add_column("options")
    tasks.add_column("description")
    for name, cls in sorted(TASKS.items()):
        doc = inspect.getdoc(cls) or ""
        tasks.add_row(name, cls.kind, ", ".join(cls.Options.model_fields), doc.splitlines()[0] if doc else "")
    console.print(tasks)
    optimizers = Table(title="optimizers")
    optimizers.add_column("name")
    optimizers.add_column("class")
    for name, cls in [*OPTIMIZERS.items(), *BASELINE_OPTIMIZERS.items()]:
        optimizers.add_row(name, f"{cls.__module__}.{cls.__qualname__}")
    console.print(optimizers)
    configs = Table(title="built-in configs (tailclip run|sweep NAME)")
    configs.add_column("name")
    configs.add_column("description")
    for name, path in builtin_configs().items():
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        description = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        configs.add_row(name, description)
    console.print(configs)


@app.command()
def demo(
    out: Annotated[
        str, typer.Option("--out", "-o", help="Output folder (store, report, claims).")
    ] = "runs/demo",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")] = None,
) -> None:
    """The synthetic suite at demo size: experiments 1, 3 and 5, their claims and an HTML report."""
    from tailclip.claims import run_demo

    results = run_demo(out, workers=workers, console=_console())
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command()
def reproduce(
    claim: Annotated[str | None, typer.Option(help="One claim by name (default: all).")] = None,
    size: Annotated[str, typer.Option(help="full or demo.")] = "full",
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder.")] = "runs/claims",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")] = None,
) -> None:
    """Run the papers' claims on the synthetic suite and print the claims table."""
    from tailclip.claims import CLAIMS
    from tailclip.claims import reproduce as run_reproduce

    if claim is not None and claim not in CLAIMS:
        _user_error(f"--claim: unknown claim {claim!r}; allowed: {', '.join(CLAIMS)}")
    if size not in ("full", "demo"):
        _user_error(f"--size: {size!r}; allowed: full, demo")
    results = run_reproduce(
        claim, size=size, out_dir=out, workers=workers, console=_console()  # type: ignore[arg-type]
    )
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command()
def advise(
    config: ConfigArgument,
    set_: SetOption = None,
    budget_minutes: Annotated[
        float | None,
        typer.Option(help="Minutes for the whole advice (default: sized, 1-20; a synthetic config 1-2)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per finalist (at least 2).")] = 3,
    noise_batches: Annotated[int, typer.Option(help="Noise samples per measurement (at least 20).")] = 100,
    steps: Annotated[
        int | None, typer.Option(help="Steps of every bake-off run (default: sized from the budget).")
    ] = None,
    json_file: Annotated[str | None, typer.Option("--json", help="Also write the answer as JSON.")] = None,
) -> None:
    """What should I train with? Measure the noise, bake off optimizers, run a control, recommend one."""
    from tailclip.advise.command import advise_command  # optuna loads only for this command

    experiment = _load(config, set_)
    try:
        advise_command(
            experiment,
            budget_minutes=budget_minutes,
            seeds=seeds,
            noise_batches=noise_batches,
            trial_steps=steps,
            json_path=json_file,
            console=_console(),
        )
    except ValueError as exc:
        _user_error(exc)
    except Exception as exc:  # noqa: BLE001  (a diverged warm-up, a failing model: one line, exit 1)
        typer.echo(f"error: advise failed: {type(exc).__name__}: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    """Entry point for ``python -m tailclip.cli``."""
    app()


if __name__ == "__main__":
    main()
