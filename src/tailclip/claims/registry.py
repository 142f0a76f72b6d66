"""The claims registry: what the seeds' theory says, checked by code on the synthetic suite.

Each :class:`Claim` names its paper, the built-in experiment config that measures it (under
``src/tailclip/configs``, task ``stochastic-quadratic``: :mod:`tailclip.problems.synthetic`),
the figure it measures, the threshold that figure must meet, and how to compute the figure
from the results store (:mod:`tailclip.claims.evaluations`). :func:`run_claims` runs the
experiments through the engine (the local sweep backend, into one
:class:`~tailclip.engine.store.ResultsStore`) and returns one :class:`ClaimResult` per claim.

Two sizes: ``"full"`` is the config as shipped (the papers' settings, e.g. 10^4 runs x 10^4
steps for Chezhegov et al.), ``"demo"`` applies a claim's overrides (fewer runs or steps, a
smaller grid) that keep the claim decidable in seconds. Runs already finished in the store are
reused (same config, same run id, same numbers: every run is seeded); delete the store to
recompute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tailclip.claims.evaluations import (
    evaluate_adaptive,
    evaluate_bias,
    evaluate_coordinates,
    evaluate_rates,
    evaluate_remark1,
)
from tailclip.claims.experiments import ExperimentRuns

__all__ = ["CLAIMS", "DEMO_CLAIMS", "SIZES", "Claim", "ClaimResult", "Size", "run_claims"]

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
            evaluate=evaluate_remark1,
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
            evaluate=evaluate_rates,
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
            evaluate=evaluate_adaptive,
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
            evaluate=evaluate_bias,
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
            evaluate=evaluate_coordinates,
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
