"""The claims registry: what the seeds' theory says, checked by code on the synthetic suite.

Each :class:`Claim` names its paper, the built-in experiment config that measures it (under
``src/tailclip/configs``, task ``stochastic-quadratic``: :mod:`tailclip.problems.synthetic`),
the figure it measures, the threshold that figure must meet, and how to compute the figure
from the results store. :func:`run_claims` runs the experiments through the engine (every
sweep point is a run of :func:`tailclip.engine.runner.run_one` in a
:class:`~tailclip.engine.store.ResultsStore`, the local sweep backend running them) and
returns one :class:`ClaimResult` per claim; :func:`print_claims` prints them as a table.

Two sizes: ``"full"`` is the config as shipped (the papers' settings, e.g. 10^4 runs x 10^4
steps for Chezhegov et al.), ``"demo"`` applies a claim's overrides (fewer runs or steps, a
smaller grid) that keep the claim decidable in seconds. Runs already finished in the store are
reused (same config, same run id, same numbers: every run is seeded); delete the store to
recompute.

The CLI entry points are :func:`reproduce` (``tailclip reproduce [--claim NAME]``) and
:func:`run_demo` (``tailclip demo``: experiments 1, 3 and 5 at demo size, the HTML report and
the claims table).

Every percentile is taken over *independent* runs (the R runs of a vectorized task), never
over running means of one run (a defect of the reference code, ``../shared/papers.md``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tailclip.engine.config import ExperimentConfig
from tailclip.engine.grid import sweep_points
from tailclip.engine.identity import config_hash
from tailclip.engine.store import ResultsStore
from tailclip.engine.sweep import run_sweep_local
from tailclip.engine.yaml_loading import load_config

__all__ = [
    "CLAIMS",
    "DEMO_CLAIMS",
    "Claim",
    "ClaimResult",
    "ExperimentRuns",
    "claims_markdown",
    "loglog_slope",
    "print_claims",
    "reproduce",
    "run_claims",
    "run_demo",
]

Size = Literal["full", "demo"]
SIZES: tuple[Size, ...] = ("full", "demo")

# Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra, "Why are Adaptive Methods Good for Attention
# Models?", NeurIPS 2020; Chezhegov, Klyukin, Semenov, Beznosikov, Gasnikov, Horvath, Takac,
# Gorbunov, "Clipping Improves Adam-Norm and AdaGrad-Norm when the Noise Is Heavy-Tailed", ICML 2025;
# Koloskova, Hendrikx, Stich, "Revisiting Gradient Clipping: Stochastic bias and tight convergence
# guarantees", ICML 2023.
ZHANG_2020 = "Zhang et al. 2020 (NeurIPS)"
CHEZHEGOV = "Chezhegov et al. 2025 (ICML)"
KOLOSKOVA = "Koloskova et al. 2023 (ICML)"


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of one claim: the measured figure against its threshold."""

    name: str
    paper: str
    experiment: str
    statement: str
    measured: str
    threshold: str
    passed: bool
    size: str
    values: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Point:
    """One run of an experiment: its sweep assignment, resolved config and run id."""

    assignment: dict[str, Any]
    config: ExperimentConfig
    run_id: str


class ExperimentRuns:
    """The runs of a built-in experiment (with overrides) in a store, and their results."""

    def __init__(self, experiment: str, overrides: Sequence[str], store_path: Path) -> None:
        self.experiment = experiment
        config = load_config(experiment, list(overrides))
        self.points = [Point(p.assignment, p.config, config_hash(p.config)) for p in sweep_points(config)]
        self.store_path = store_path

    def run(self, workers: int) -> None:
        """Train every point not yet finished in the store; a failed run is an error."""
        result = run_sweep_local([p.config for p in self.points], self.store_path, workers=workers)
        if not result.ok:
            failed = {**result.failed, **{r: "interrupted" for r in result.interrupted}}
            run_id, error = next(iter(failed.items()))
            raise RuntimeError(
                f"experiment {self.experiment}: {len(failed)} of {len(self.points)} runs failed; "
                f"first: run {run_id}: {error} (store {self.store_path})"
            )

    @functools.cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.store_path)

    def series(self, point: Point, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a logged metric (e.g. ``train/avg_error/mean``)."""
        found = self.store.metrics(run_ids=[point.run_id], keys=[key]).get(point.run_id, {})
        if key not in found:
            raise KeyError(f"run {point.run_id} of {self.experiment} has no metric {key!r}")
        return found[key]

    def final(self, point: Point, key: str) -> float:
        """The last logged value of a metric."""
        return float(self.series(point, key)[1][-1])

    def per_run(self, point: Point, key: str) -> np.ndarray:
        """The final per-run values of a vectorized metric (the ``per_run/<key>`` artifact)."""
        artifacts = self.store.artifacts(run_id=point.run_id, kind=f"per_run/{key}")
        if not artifacts:
            raise KeyError(f"run {point.run_id} of {self.experiment} has no artifact per_run/{key}")
        return np.load(artifacts[0].path)


Evaluate = Callable[[list[ExperimentRuns]], tuple[dict[str, float], str, bool]]


@dataclass(frozen=True)
class Claim:
    """A claim of a paper, the experiment that measures it and the check.

    ``runs[size]`` lists the experiments to run as ``(config name, overrides)``; ``evaluate``
    gets their :class:`ExperimentRuns` in that order and returns the measured values, the
    measured figure as text, and whether it meets ``threshold``.
    """

    name: str
    paper: str
    experiment: str
    statement: str
    threshold: str
    runs: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]
    evaluate: Evaluate

    def run(
        self, size: Size, store_path: Path, workers: int, progress: Callable[[str], None] | None = None
    ) -> ClaimResult:
        start = time.perf_counter()
        experiments = [ExperimentRuns(name, overrides, store_path) for name, overrides in self.runs[size]]
        for experiment in experiments:
            if progress is not None:
                progress(f"{self.name}: {experiment.experiment} ({size}), {len(experiment.points)} runs")
            experiment.run(workers)
        values, measured, passed = self.evaluate(experiments)
        return ClaimResult(
            name=self.name,
            paper=self.paper,
            experiment=self.experiment,
            statement=self.statement,
            measured=measured,
            threshold=self.threshold,
            passed=bool(passed),
            size=size,
            values={k: float(v) for k, v in values.items()},
            seconds=time.perf_counter() - start,
            store=str(store_path),
        )


def loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    x, y = np.asarray(list(x), dtype=np.float64), np.asarray(list(y), dtype=np.float64)
    if len(x) < 2 or not (np.all(x > 0) and np.all(y > 0) and np.all(np.isfinite(y))):
        return math.nan
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _log_spaced(steps: np.ndarray, low: float, high: float, count: int = 40) -> np.ndarray:
    """Indices of ``steps`` nearest to ``count`` log-spaced points in ``[low, high]`` (unique)."""
    targets = np.geomspace(low, high, count)
    index = np.abs(steps[None, :] - targets[:, None]).argmin(axis=1)
    return np.unique(index)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ----------------------------------------------------------------------------- claim 1


def _evaluate_remark1(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Block second moments of the final error against the number of runs, SGD vs GClip.

    For ``n = 10, 100, ..., R`` the ``R`` final errors ``f(x_K)`` are cut into ``R/n`` disjoint
    blocks of ``n`` runs; ``M(n)`` is the median over blocks of the block mean. For a variable
    of tail index ``alpha/2 < 1`` (SGD: ``f = x^2/2`` with ``x`` of tail index ``alpha``)
    ``M(n)`` grows like ``n^(2/alpha - 1)``; with a finite mean (GClip) it converges.
    """
    (runs,) = experiments
    values: dict[str, float] = {}
    alpha = float(runs.points[0].config.task.options["alpha"])
    for point in runs.points:
        label = "sgd" if point.config.optimizer.hyperparameters.get("clip") is None else "gclip"
        errors = runs.per_run(point, "eval/error")
        sizes = [10**j for j in range(1, int(math.log10(len(errors))) + 1)]
        moments = [
            float(np.median(errors[: (len(errors) // n) * n].reshape(-1, n).mean(axis=1))) for n in sizes
        ]
        values[f"{label}_slope"] = loglog_slope(sizes, moments)
        values[f"{label}_moment_small"], values[f"{label}_moment_large"] = moments[0], moments[-1]
    predicted = 2.0 / alpha - 1.0
    values["predicted_sgd_slope"] = predicted
    passed = values["sgd_slope"] >= predicted / 2 and abs(values["gclip_slope"]) <= 0.05
    measured = (
        f"slope of the sample 2nd moment vs runs: SGD {_fmt(values['sgd_slope'])}, "
        f"GClip {_fmt(values['gclip_slope'])} (theory {_fmt(predicted)}, 0)"
    )
    return values, measured, passed


# ----------------------------------------------------------------------------- claim 2


def _evaluate_rates(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Slope of the mean error of the averaged iterate against k, per alpha."""
    (runs,) = experiments
    values: dict[str, float] = {}
    parts = []
    passed = True
    for point in runs.points:
        alpha = float(point.config.task.options["alpha"])
        steps, means = runs.series(point, "train/avg_error/mean")
        total = int(steps[-1])
        index = _log_spaced(steps, total / 100, total)
        slope = loglog_slope(steps[index], means[index])
        target = -2.0 * (alpha - 1.0) / alpha
        values[f"slope_alpha_{alpha:g}"], values[f"target_alpha_{alpha:g}"] = slope, target
        passed = passed and abs(slope - target) <= 0.1
        parts.append(f"alpha {alpha:g}: {_fmt(slope)} (target {_fmt(target)})")
    return values, "slope of E f(xbar_k) vs k: " + ", ".join(parts), passed


# ----------------------------------------------------------------------------- claim 3


def method_label(hyperparameters: dict[str, Any], name: str) -> str:
    """The paper's name of an AdaGrad/Adam variant: ``Clip-AdaGradD-Norm`` and so on."""
    base = {"clip_adagrad": "AdaGrad", "clip_adam": "Adam"}.get(name, name)
    delayed = "D" if hyperparameters.get("delay") else ""
    norm = "-Norm" if hyperparameters.get("norm") else ""
    clipped = "Clip-" if hyperparameters.get("clip") is not None else ""
    return f"{clipped}{base}{delayed}{norm}"


def _evaluate_adaptive(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """99% quantile over runs of |x_K|^2 at the last step, each clipped method vs its unclipped twin."""
    (runs,) = experiments
    q99: dict[str, float] = {}
    for point in runs.points:
        label = method_label(point.config.optimizer.hyperparameters, point.config.optimizer.name)
        q99[label] = runs.final(point, "train/sq_dist/q99")
    values = {f"q99[{k}]": v for k, v in q99.items()}
    parts = []
    passed = True
    pairs = [(k, "Clip-" + k) for k in q99 if not k.startswith("Clip-") and "Clip-" + k in q99]
    for unclipped, clipped in pairs:
        ratio = q99[clipped] / q99[unclipped]
        values[f"ratio[{clipped}]"] = ratio
        passed = passed and q99[clipped] < q99[unclipped]
        parts.append(f"{clipped} {_fmt(q99[clipped])} vs {_fmt(q99[unclipped])}")
    passed = passed and len(pairs) > 0
    return values, "q99 of |x_K|^2: " + "; ".join(parts), passed


# ----------------------------------------------------------------------------- claim 4


def _evaluate_bias(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Error floors of clipped SGD over (c, lr) with skewed noise, and the noiseless run."""
    noisy, noiseless = experiments
    floors: dict[tuple[float, float], float] = {}
    for point in noisy.points:
        hp = point.config.optimizer.hyperparameters
        floors[(float(hp["max_norm"]), float(hp["lr"]))] = noisy.final(point, "eval/avg_error/mean")
    thresholds = sorted({c for c, _ in floors})
    lrs = sorted({lr for _, lr in floors})
    values = {f"floor[c={c:g},lr={lr:g}]": v for (c, lr), v in floors.items()}
    small_lr, large_lr = lrs[0], lrs[-1]
    by_c = floors[(thresholds[0], small_lr)] / floors[(thresholds[-1], small_lr)]
    by_lr = min(floors[(c, small_lr)] / floors[(c, large_lr)] for c in thresholds)
    clean = noiseless.final(noiseless.points[0], "eval/avg_error/mean")
    relative_clean = clean / min(floors[(c, small_lr)] for c in thresholds)
    values.update(
        floor_ratio_c=by_c, floor_ratio_lr=by_lr, noiseless_floor=clean, noiseless_relative=relative_clean
    )
    passed = by_c >= 2.0 and by_lr >= 0.5 and relative_clean < 1e-3
    measured = (
        f"floor(c={thresholds[0]:g})/floor(c={thresholds[-1]:g}) = {_fmt(by_c)}; "
        f"min over c of floor(lr={small_lr:g})/floor(lr={large_lr:g}) = {_fmt(by_lr)}; "
        f"noiseless {_fmt(clean)} ({_fmt(relative_clean)} of the noisy floor)"
    )
    return values, measured, passed


# ----------------------------------------------------------------------------- claim 5


def _evaluate_coordinates(experiments: list[ExperimentRuns]) -> tuple[dict[str, float], str, bool]:
    """Per-coordinate error of the averaged iterate against d, CClip vs GClip."""
    (runs,) = experiments
    alpha = float(runs.points[0].config.task.options["alpha"])
    errors: dict[str, dict[int, float]] = {}
    for point in runs.points:
        dim = int(point.config.task.options["dim"])
        label = "cclip" if point.config.optimizer.hyperparameters["clip"] == "coord" else "gclip"
        errors.setdefault(label, {})[dim] = runs.final(point, "eval/avg_error/mean") / dim
    values: dict[str, float] = {}
    for label, by_dim in errors.items():
        dims = sorted(by_dim)
        values[f"{label}_slope"] = loglog_slope(dims, [by_dim[d] for d in dims])
        values.update({f"{label}_error[d={d}]": by_dim[d] for d in dims})
    predicted = 2.0 / alpha - 1.0
    values["predicted_gclip_slope"] = predicted
    passed = abs(values["cclip_slope"]) <= 0.1 and values["gclip_slope"] >= predicted / 2
    measured = (
        f"slope of (f(xbar)-f*)/d vs d: CClip {_fmt(values['cclip_slope'])}, "
        f"GClip {_fmt(values['gclip_slope'])} (theory 0, {_fmt(predicted)})"
    )
    return values, measured, passed


# ----------------------------------------------------------------------------- the registry

CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            name="remark1-second-moment",
            paper=f"{ZHANG_2020}, Remark 1",
            experiment="synthetic-remark1",
            statement="SGD with a fixed step has an unbounded second moment of the error under alpha = 1.5 "
            "noise: its sample second moment keeps growing with the number of runs; GClip's stays bounded",
            threshold="SGD slope >= (2/alpha - 1)/2 and |GClip slope| <= 0.05",
            runs={
                "full": (("synthetic-remark1", ()),),
                "demo": (("synthetic-remark1", ("task.options.runs=10000",)),),
            },
            evaluate=_evaluate_remark1,
        ),
        Claim(
            name="table1-rates",
            paper=f"{ZHANG_2020}, Table 1 / Theorem 4",
            experiment="synthetic-rates",
            statement="GClip with tau_k = G k^(1/alpha), eta_k = 4/(mu(k+1)) and weighted averaging reaches "
            "E f(xbar_k) - f* ~ k^(-2(alpha-1)/alpha) on a strongly convex quadratic",
            threshold="|slope + 2(alpha-1)/alpha| <= 0.1 for alpha in {1.3, 1.6, 2.0}",
            runs={
                "full": (("synthetic-rates", ()),),
                "demo": (
                    ("synthetic-rates", ("task.options.runs=500", "train.steps=2000", "train.log_every=5")),
                ),
            },
            evaluate=_evaluate_rates,
        ),
        Claim(
            name="adaptive-clipping-quantiles",
            paper=CHEZHEGOV,
            experiment="synthetic-adaptive-quantiles",
            statement="clipping fixes the bad high-probability convergence of AdaGrad-Norm, Adam-Norm and "
            "their delayed versions: lower upper quantiles of |x_k|^2 over independent runs",
            threshold="q99 of |x_K|^2: each clipped method < its unclipped version",
            runs={
                "full": (("synthetic-adaptive-quantiles", ()),),
                "demo": (
                    (
                        "synthetic-adaptive-quantiles",
                        ("task.options.runs=1000", "train.steps=2000", "train.log_every=20"),
                    ),
                ),
            },
            evaluate=_evaluate_adaptive,
        ),
        Claim(
            name="clipping-bias-floor",
            paper=KOLOSKOVA,
            experiment="synthetic-clipping-bias",
            statement="clipped SGD with (skewed) stochastic gradients stalls at an error floor that depends "
            "on the threshold c and does not vanish as the step size shrinks; without noise it vanishes",
            threshold="floor(c_min)/floor(c_max) >= 2, floor(lr_min)/floor(lr_max) >= 0.5, "
            "noiseless < 1e-3 floor",
            runs={
                "full": (
                    ("synthetic-clipping-bias", ()),
                    (
                        "synthetic-clipping-bias",
                        (
                            "task.options.noise=none",
                            "task.options.runs=10",
                            "sweep.grid.optimizer.max_norm=[0.25]",
                            "sweep.grid.optimizer.lr=[0.001]",
                        ),
                    ),
                ),
                "demo": (
                    (
                        "synthetic-clipping-bias",
                        (
                            "task.options.runs=200",
                            "train.steps=4000",
                            "task.options.average_start=2000",
                            "sweep.grid.optimizer.max_norm=[0.25, 2.0]",
                            "sweep.grid.optimizer.lr=[0.1, 0.01]",
                        ),
                    ),
                    (
                        "synthetic-clipping-bias",
                        (
                            "task.options.noise=none",
                            "task.options.runs=10",
                            "train.steps=4000",
                            "task.options.average_start=2000",
                            "sweep.grid.optimizer.max_norm=[0.25]",
                            "sweep.grid.optimizer.lr=[0.01]",
                        ),
                    ),
                ),
            },
            evaluate=_evaluate_bias,
        ),
        Claim(
            name="coordinate-clipping-dimension",
            paper=f"{ZHANG_2020}, Corollary 7 / Theorem 8",
            experiment="synthetic-coordinate-clipping",
            statement="under independent heavy-tailed coordinates, with each method's threshold set by the "
            "theory, CClip's per-coordinate error is independent of d while GClip's grows with d",
            threshold="|CClip slope| <= 0.1 and GClip slope >= (2/alpha - 1)/2",
            runs={
                "full": (("synthetic-coordinate-clipping", ()),),
                "demo": (("synthetic-coordinate-clipping", ("task.options.runs=100",)),),
            },
            evaluate=_evaluate_coordinates,
        ),
    )
}

# The claims of experiments 1, 3 and 5: what `tailclip demo` runs.
DEMO_CLAIMS = ("remark1-second-moment", "adaptive-clipping-quantiles", "coordinate-clipping-dimension")


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def run_claims(
    names: Sequence[str] | None = None,
    size: Size = "full",
    *,
    out_dir: str | Path = "runs/claims",
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ClaimResult]:
    """Run the named claims (all if ``None``) at ``size``; results go to ``<out_dir>/claims.sqlite``.

    ``workers`` processes train the runs of each experiment (default: up to 2); ``progress``
    receives a line per experiment started.
    """
    if size not in SIZES:
        raise ValueError(f"Invalid size: {size!r}; allowed: {', '.join(SIZES)}")
    selected = list(CLAIMS) if names is None else list(names)
    unknown = [n for n in selected if n not in CLAIMS]
    if unknown:
        raise ValueError(f"Invalid claim: {unknown[0]!r}; allowed: {', '.join(CLAIMS)}")
    store_path = Path(out_dir) / "claims.sqlite"
    store_path.parent.mkdir(parents=True, exist_ok=True)
    workers = _default_workers() if workers is None else workers
    return [CLAIMS[name].run(size, store_path, workers, progress) for name in selected]


def _console(console: Any) -> Any:
    from rich.console import Console

    return console if console is not None else Console()


def print_claims(results: Sequence[ClaimResult], console: Any = None) -> None:
    """Print the claims table (rich): claim, paper, experiment, measured figure, threshold, result."""
    from rich.table import Table

    console = _console(console)
    table = Table(title="tailclip claims", show_lines=True)
    for column in ("claim", "paper", "experiment", "measured", "threshold", "result"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = "[bold green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(
            r.name, r.paper, f"{r.experiment} ({r.size}, {r.seconds:.1f} s)", r.measured, r.threshold, verdict
        )
    console.print(table)
    passed = sum(r.passed for r in results)
    console.print(f"{passed}/{len(results)} claims pass")


def claims_markdown(results: Sequence[ClaimResult]) -> str:
    """The claims table as Markdown."""
    lines = [
        "| claim | paper | experiment | measured | threshold | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            r.name,
            r.paper,
            f"{r.experiment} ({r.size})",
            r.measured,
            r.threshold,
            "PASS" if r.passed else "FAIL",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def claims_html(results: Sequence[ClaimResult]) -> str:
    """The claims table as an HTML table (sortable by the report's script)."""
    from html import escape

    columns = ("claim", "paper", "experiment", "measured", "threshold", "result")
    head = "".join(f"<th>{h}</th>" for h in columns)
    rows = []
    for r in results:
        cells = [r.name, r.paper, f"{r.experiment} ({r.size})", r.measured, r.threshold]
        verdict = "PASS" if r.passed else "FAIL"
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + f"<td>{verdict}</td></tr>")
    return f"<table class=\"sortable\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _write_results(results: Sequence[ClaimResult], out_dir: Path) -> None:
    (out_dir / "claims.json").write_text(
        json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8"
    )
    (out_dir / "claims.md").write_text(claims_markdown(results), encoding="utf-8")


def reproduce(
    claim: str | None = None,
    *,
    size: Size = "full",
    out_dir: str | Path = "runs/claims",
    workers: int | None = None,
    console: Any = None,
) -> list[ClaimResult]:
    """``tailclip reproduce [--claim NAME]``: run one claim (or all), print the table, save the results.

    Writes ``claims.json`` and ``claims.md`` beside the store in ``out_dir``.
    """
    console = _console(console)
    results = run_claims(
        None if claim is None else [claim], size, out_dir=out_dir, workers=workers, progress=console.print
    )
    _write_results(results, Path(out_dir))
    print_claims(results, console)
    return results


def run_demo(
    out_dir: str | Path = "runs/demo", *, workers: int | None = None, console: Any = None
) -> list[ClaimResult]:
    """``tailclip demo``: experiments 1, 3 and 5 at demo size through the engine.

    Trains their runs into ``<out_dir>/claims.sqlite``, writes the HTML report
    ``<out_dir>/report.html`` (quantile bands and per-run tails of every run) when the engine's
    report module is available, ``claims.json`` and ``claims.md``, and prints the claims table.
    """
    out_dir = Path(out_dir)
    console = _console(console)
    start = time.perf_counter()
    results = run_claims(DEMO_CLAIMS, "demo", out_dir=out_dir, workers=workers, progress=console.print)
    _write_results(results, out_dir)
    from tailclip.engine.report import write_report

    console.print("writing the report")
    report = write_report(
        out_dir / "claims.sqlite", out_dir / "report.html", title="tailclip demo: the synthetic suite",
        extra_sections=[("Claims", claims_html(results))],
    )
    note = f"report: {report}"
    print_claims(results, console)
    console.print(f"{note}; claims: {out_dir / 'claims.md'}; {time.perf_counter() - start:.1f} s")
    return results
