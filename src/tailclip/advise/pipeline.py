"""``advise(config)``: measure, choose candidates, bake off, control, answer (the five steps in order).

The runs go to ``<store dir>/<store stem>-advise.sqlite`` (a results store), the Optuna studies
to ``<store stem>-advise-optuna.sqlite`` beside it and the noise reports, the plan and the answer
(``advice.json``) to ``<store dir>/advise/<config name>/``. The answer is recorded in the results
store too (an ``advice/json`` artifact of the finalists' runs), so ``tailclip report`` on that store
opens with the advice. Calling ``advise`` again with the same
config, budget and seeds reuses the saved plan and resumes: finished runs and finished trials are
read back, not redone (the measurement, a few seconds, is repeated).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tailclip.advise._engine import ADVICE_KIND, TASKS, ExperimentConfig, ResultsStore
from tailclip.advise.answer import Answer, decide, leads, to_json
from tailclip.advise.bakeoff import bake_off, finalists, run_seeds
from tailclip.advise.candidates import choose_candidates
from tailclip.advise.control import LR_FACTORS, run_control, too_short
from tailclip.advise.measure import measure
from tailclip.advise.plan import MAX_BUDGET, SHARES, Plan, default_budget_seconds, make_plan
from tailclip.advise.twin import model_twin, runnable_on

__all__ = ["Progress", "advice_paths", "advise", "write_atomic"]

Progress = Callable[[str, int, int], None]
MIN_REMAINING = 0.3
TWIN_MAX_BUDGET = 2 * 60.0
PLAN_FILE = "plan.json"
ADVICE_JSON = "advice.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _saved_plan(path: Path, key: str) -> Plan | None:
    """The plan of an earlier advice with the same config, budget and seeds (so that it resumes)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Plan(**saved["plan"]) if saved.get("key") == key else None


def _save_plan(path: Path, key: str, plan: Plan) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"key": key, "plan": plan.to_dict()}))


def advice_paths(config: ExperimentConfig) -> dict[str, Path]:
    """Where ``advise`` writes: ``store`` (runs), ``optuna`` (studies), ``reports`` (noise reports)."""
    store = Path(config.output.store)
    return {
        "store": store.with_name(f"{store.stem}-advise.sqlite"),
        "optuna": store.with_name(f"{store.stem}-advise-optuna.sqlite"),
        "reports": store.parent / "advise" / config.name,
    }


def advise(
    config: ExperimentConfig,
    *,
    budget_minutes: float | None = None,
    seeds: int = 3,
    noise_batches: int = 100,
    trial_steps: int | None = None,
    progress: Progress | None = None,
) -> Answer:
    """Run the five steps on ``config`` (see :mod:`tailclip.advise`) and return the :class:`Answer`.

    A vectorized config is advised through its task's model twin (:mod:`tailclip.advise.twin`),
    with a default budget of at most 2 minutes (its gradient is closed-form). ``budget_minutes``
    (default: sized by :func:`~tailclip.advise.plan.default_budget_seconds`) bounds the whole
    advice; ``trial_steps`` fixes the run length instead (see
    :func:`~tailclip.advise.plan.make_plan`: the advice then does not depend on the machine's
    speed); ``progress(phase, done, total)`` reports each phase (``measure``,
    ``bake-off``, ``seeds``, ``control``). Raises ``ValueError`` for a config it cannot advise on
    and ``RuntimeError`` when the warm-up or every candidate diverges.
    """
    if seeds < 2:
        raise ValueError(f"seeds: got {seeds}; allowed: an integer >= 2 (the seed spread needs two)")
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"budget_minutes: got {budget_minutes}; allowed: a number > 0")
    if trial_steps is not None and trial_steps < 1:
        raise ValueError(f"trial_steps: got {trial_steps}; allowed: an integer >= 1")
    twin = None
    if TASKS[config.task.name].kind != "model":
        twin = model_twin(config)
        config = twin.config
    start = time.perf_counter()
    report = progress or (lambda phase, done, total: None)
    paths = advice_paths(config)
    paths["store"].parent.mkdir(parents=True, exist_ok=True)
    measurement = measure(
        config, paths["reports"], noise_batches=noise_batches, progress=lambda d, t: report("measure", d, t)
    )
    candidates = choose_candidates(config.optimizer.model_dump(), measurement)
    if twin is not None:
        candidates, left_out = runnable_on(twin.original, candidates)
        twin = replace(twin, left_out=tuple(left_out))
    budget = (
        budget_minutes * 60.0
        if budget_minutes is not None
        else default_budget_seconds(
            measurement.total_steps,
            measurement.step_seconds,
            measurement.eval_seconds,
            len(candidates),
            seeds,
            maximum=MAX_BUDGET if twin is None else TWIN_MAX_BUDGET,
        )
    )
    remaining = max(budget - (time.perf_counter() - start), MIN_REMAINING * budget)
    plan = _saved_plan(
        paths["reports"] / PLAN_FILE, f"{config.run_id}-{budget_minutes}-{seeds}-{trial_steps}"
    ) or make_plan(
        remaining,
        measurement.total_steps,
        measurement.step_seconds,
        len(candidates),
        config.train.batch_size,
        measurement.examples,
        eval_seconds=measurement.eval_seconds,
        control_step_seconds=measurement.control_step_seconds,
        seeds=seeds,
        trial_steps=trial_steps,
    )
    _save_plan(paths["reports"] / PLAN_FILE, f"{config.run_id}-{budget_minutes}-{seeds}-{trial_steps}", plan)
    store = ResultsStore(paths["store"])
    try:
        total_trials = len(candidates) * plan.lr_points
        done = {"bake-off": 0, "seeds": 0, "control": 0}

        def counter(phase: str, total: int) -> Callable[[str], None]:
            def tick(label: str) -> None:
                done[phase] += 1
                report(phase, done[phase], total)

            return tick

        total = measurement.total_steps
        deadline = None
        if trial_steps is None:  # under a budget: no bake-off trial starts after its share
            deadline = time.perf_counter() + SHARES["bakeoff"] * plan.budget_seconds
        results = bake_off(
            config,
            candidates,
            plan,
            store,
            paths["optuna"],
            total,
            deadline=deadline,
            on_trial=counter("bake-off", total_trials),
        )
        chosen = finalists(results)
        if not chosen:
            raise RuntimeError("every candidate diverged at every step size tried; nothing to recommend")
        ranked = run_seeds(
            config, chosen, plan, store, total, on_run=counter("seeds", len(chosen) * plan.seeds)
        )
        decision = decide(ranked, measurement.verdict)
        control = None
        if decision.rival is not None and plan.control_too_short:
            control = too_short(config, decision.recommended, decision.rival, plan)
        elif decision.rival is not None:
            rival, recommended = decision.rival, decision.recommended
            control = run_control(
                config,
                recommended,
                rival,
                leads(recommended, rival),
                plan,
                store,
                total,
                measurement.alpha.alpha,
                on_run=counter("control", 2 * len(LR_FACTORS)),
            )
    finally:
        store.close()
    answer = Answer(
        config_name=config.name,
        measurement=measurement,
        plan=plan,
        candidates=results,
        decision=decision,
        control=control,
        budget_seconds=budget,
        runtime_seconds=time.perf_counter() - start,
        store=str(paths["store"]),
        optuna_storage=str(paths["optuna"]),
        twin=None if twin is None else twin.to_dict(),
    )
    write_atomic(paths["reports"] / ADVICE_JSON, to_json(answer.to_dict()))
    _record_advice(paths, {run_id for f in decision.ranking for run_id in f.run_ids})
    return answer


def _record_advice(paths: dict[str, Path], run_ids: set[str]) -> None:
    """Record ``advice.json`` in the results store on ``run_ids``, by its path relative to the
    store's folder (so that the folder can move), for ``tailclip report``."""
    relative = (paths["reports"] / ADVICE_JSON).relative_to(paths["store"].parent)
    with ResultsStore(paths["store"]) as store:
        for run_id in sorted(run_ids):
            store.add_artifact(run_id, ADVICE_KIND, str(relative))
