"""Step 3 of ``tailclip advise``: a budgeted bake-off, then the finalists over several seeds.

Every candidate gets one Optuna study over its step-size grid (each step size an enqueued trial,
so a resumed advice runs exactly the missing ones) with Optuna's ``SuccessiveHalvingPruner`` (asynchronous
successive halving, reduction factor 3): a trial reports ``eval/loss`` at every evaluation and is
stopped when it falls out of the top third of the trials that reached the same step. The
studies live in an SQLite file beside the results store (Optuna's RDB storage), keyed by the
config's run id, the candidate and the run length. The studies take turns, one trial each, and
under a budget no trial starts after the bake-off's share of it (the plan's estimate of the run
time can be wrong when the machine slows down): the candidates have then tried the same number of
step sizes, give or take one, and the answer counts the trials left.

Every trial is a normal run (:func:`run_config`: the config with the candidate's optimizer, the
planned length, evaluations every third and no sweep) trained by ``run_one`` into the results
store, so ``tailclip report`` shows it; a pruned trial is a run that *failed* with
``TrialPruned: ...`` as its error. A run already finished in the store is read back, not redone.

The objective is the final ``eval/loss`` (lower is better; a diverged or non-finite run counts as
``+inf``). The finalists are the best three candidates, always including the best clipped and
the best unclipped one; each is rerun at its best step size with the extra seeds
``train.seed + 1, ...``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailclip.advise._engine import ExperimentConfig, ResultsStore, parse_config, run_one
from tailclip.advise.candidates import Candidate, lr_of
from tailclip.advise.plan import Plan

__all__ = [
    "METRIC",
    "CandidateResult",
    "Finalist",
    "bake_off",
    "ensure_run",
    "final_metric",
    "finalists",
    "run_config",
    "run_seeds",
]

METRIC = "eval/loss"
Progress = Callable[[str], None]


def _scaled_schedule(schedule: dict[str, Any], total: int, steps: int) -> dict[str, Any]:
    out = dict(schedule)
    if out.get("warmup_steps"):
        out["warmup_steps"] = min(steps - 1, round(out["warmup_steps"] * steps / total))
    if out.get("milestones"):
        out["milestones"] = sorted(
            {max(1, min(steps - 1, round(m * steps / total))) for m in out["milestones"]}
        )
    return out


def run_config(
    base: ExperimentConfig,
    optimizer: dict[str, Any],
    *,
    label: str,
    steps: int,
    seed: int,
    total_steps: int,
    eval_every: int | None = None,
    batch_size: int | None = None,
) -> ExperimentConfig:
    """``base`` with ``optimizer``, ``steps`` steps, ``seed``, no sweep, no monitor, no checkpoints.

    Its report label (not part of the run id) is the candidate's, its step size and, when it
    differs from the config's, the batch: ``cclip, lr 0.913`` (``..., batch 2048`` in the control).
    """
    data = base.model_dump(mode="json", exclude={"sweep", "monitor"})
    data["name"] = f"{base.name}-advise"
    label = f"{label}, lr {lr_of(optimizer):.3g}"
    data["label"] = (label if batch_size is None else f"{label}, batch {batch_size}")[:40]
    data["optimizer"] = optimizer
    data["schedule"] = _scaled_schedule(data["schedule"], total_steps, steps)
    data["train"].update(
        steps=steps,
        epochs=None,
        seed=seed,
        eval_every=eval_every,
        checkpoint_every=None,
        keep_checkpoint=False,
    )
    if batch_size is not None:
        data["train"]["batch_size"] = batch_size
    return parse_config(data, f"{base.source} (advise)")


def final_metric(store: ResultsStore, run_id: str) -> float:
    """The run's last ``eval/loss``; ``+inf`` if it diverged or the value is not finite."""
    series = store.metrics([run_id], [METRIC, "train/diverged"]).get(run_id, {})
    if "train/diverged" in series or METRIC not in series:
        return math.inf
    value = float(series[METRIC][1][-1])
    return value if math.isfinite(value) else math.inf


def ensure_run(config: ExperimentConfig, store: ResultsStore, progress: Any = None) -> str:
    record = store.run(config.run_id)
    if record is not None and record.status == "finished":
        return config.run_id
    return run_one(config, store, progress=progress)


@dataclass
class CandidateResult:
    """A candidate's trials ``(lr, state, value, run_id)``, its best step size and value, and the
    number of its trials the deadline left unrun (``skipped``)."""

    candidate: Candidate
    trials: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0

    @property
    def best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["state"] == "COMPLETE"]
        return min(done, key=lambda t: t["value"]) if done else None

    @property
    def best_value(self) -> float:
        best = self.best
        return math.inf if best is None else best["value"]


def bake_off(
    config: ExperimentConfig,
    candidates: list[Candidate],
    plan: Plan,
    store: ResultsStore,
    optuna_path: str | Path,
    total_steps: int,
    *,
    deadline: float | None = None,
    on_trial: Progress | None = None,
) -> list[CandidateResult]:
    """Run every candidate's study (see the module docstring); ``on_trial(label)`` after each trial.

    The studies take turns, one trial each (a study's own trials keep their order, so pruning is
    the same as running the studies one after the other). ``deadline`` (a ``time.perf_counter()``
    value): no trial starts after it; the trials left are counted in
    :attr:`CandidateResult.skipped` and stay enqueued, so a resumed advice runs them.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(optuna_path).resolve()}")
    studies = []
    for candidate in candidates:
        grid = candidate.lr_grid(plan.lr_points)
        study = optuna.create_study(
            study_name=f"{config.run_id}-{candidate.label}-{plan.trial_steps}-{plan.lr_points}",
            storage=storage,
            load_if_exists=True,
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=0),  # never used: every trial is enqueued
            pruner=optuna.pruners.SuccessiveHalvingPruner(
                min_resource=plan.eval_every, reduction_factor=3, min_early_stopping_rate=0
            ),
        )
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)  # an interrupted advice
        kept = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
        planned = {
            t.params.get("lr", t.system_attrs.get("fixed_params", {}).get("lr"))
            for t in study.get_trials(deepcopy=False, states=kept)
        }
        for lr in grid:
            if lr not in planned:
                study.enqueue_trial({"lr": lr})
        studies.append((candidate, study, _objective(config, candidate, grid, plan, store, total_steps)))

    def waiting(study: Any) -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def expired() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    while any(waiting(study) for _, study, _ in studies) and not expired():
        for candidate, study, objective in studies:
            if waiting(study) and not expired():
                study.optimize(objective, n_trials=1, catch=())
                if on_trial is not None:
                    on_trial(candidate.label)
    results = []
    for candidate, study, _ in studies:
        result = CandidateResult(candidate, skipped=waiting(study))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            result.trials.append(
                {
                    "lr": float(trial.params["lr"]),
                    "state": trial.state.name,
                    "value": float(trial.value) if trial.value is not None else None,
                    "run_id": trial.user_attrs.get("run_id"),
                }
            )
        result.trials.sort(key=lambda t: t["lr"])
        results.append(result)
    return results


def _objective(
    config: ExperimentConfig,
    candidate: Candidate,
    grid: list[float],
    plan: Plan,
    store: ResultsStore,
    total_steps: int,
) -> Callable[[Any], float]:
    """The Optuna objective of ``candidate``: a run at the trial's step size, reporting each evaluation."""
    import optuna

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", min(grid), max(grid))
        run = run_config(
            config,
            candidate.with_lr(lr),
            label=candidate.label,
            steps=plan.trial_steps,
            seed=config.train.seed,
            total_steps=total_steps,
            eval_every=plan.eval_every,
        )
        trial.set_user_attr("run_id", run.run_id)

        def report(step: int, total: int) -> None:
            evaluated = step - 1
            if evaluated < 1 or evaluated % plan.eval_every or evaluated >= total:
                return
            series = store.metrics([run.run_id], [METRIC]).get(run.run_id, {}).get(METRIC)
            value = float(series[1][-1]) if series is not None else math.nan
            if not math.isfinite(value):
                return
            trial.report(value, evaluated)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned by successive halving at step {evaluated}: {METRIC} {value:.4g}"
                )

        ensure_run(run, store, report)
        return final_metric(store, run.run_id)

    return objective


@dataclass(frozen=True)
class Finalist:
    """A finalist at its best step size: ``values[i]`` is the final ``eval/loss`` of seed ``seeds[i]``."""

    candidate: Candidate
    optimizer: dict[str, Any]
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    run_ids: tuple[str, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan


def finalists(results: list[CandidateResult], count: int = 3) -> list[CandidateResult]:
    """The best ``count`` candidates with a finite trial, always with the best clipped and unclipped."""
    ranked = sorted((r for r in results if math.isfinite(r.best_value)), key=lambda r: r.best_value)
    chosen: list[CandidateResult] = []
    for clipped in (True, False):
        best = next((r for r in ranked if r.candidate.clipped is clipped), None)
        if best is not None:
            chosen.append(best)
    for result in ranked:
        if len(chosen) >= count:
            break
        if result not in chosen:
            chosen.append(result)
    return sorted(chosen, key=lambda r: r.best_value)


def run_seeds(
    config: ExperimentConfig,
    chosen: list[CandidateResult],
    plan: Plan,
    store: ResultsStore,
    total_steps: int,
    *,
    on_run: Progress | None = None,
) -> list[Finalist]:
    """Each chosen candidate at its best step size over ``plan.seeds`` seeds (the first is the trial's)."""
    out = []
    for result in chosen:
        best = result.best
        assert best is not None
        optimizer = result.candidate.with_lr(best["lr"])
        seeds = tuple(config.train.seed + i for i in range(plan.seeds))
        values, run_ids = [], []
        for seed in seeds:
            run = run_config(
                config,
                optimizer,
                label=result.candidate.label,
                steps=plan.trial_steps,
                seed=seed,
                total_steps=total_steps,
                eval_every=plan.eval_every,
            )
            ensure_run(run, store)
            values.append(final_metric(store, run.run_id))
            run_ids.append(run.run_id)
            if on_run is not None:
                on_run(result.candidate.label)
        out.append(Finalist(result.candidate, optimizer, seeds, tuple(values), tuple(run_ids)))
    return out
