"""Consolidation across seeds, runtime overhead and quantile bands, against plain-loop references."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from _results import add_run, quadratic_config

from tailclip.engine.config import parse_config
from tailclip.engine.consolidate import consolidate, quantile_bands
from tailclip.engine.grid import expand_sweep
from tailclip.engine.identity import group_key
from tailclip.engine.statistics import best_direction
from tailclip.engine.store import ResultsStore
from tailclip.engine.sweep import run_sweep_local
from tailclip.engine.tables import summary_markdown

STEPS = list(range(10))


def ref_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), written out."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def ref_stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    total = 0.0
    for v in values:
        total += v
    mean = total / n
    squares = 0.0
    for v in values:
        squares += (v - mean) ** 2
    return {
        "n": n,
        "mean": mean,
        "sd": math.sqrt(squares / (n - 1)),
        "median": ref_quantile(values, 0.5),
        "q05": ref_quantile(values, 0.05),
        "q95": ref_quantile(values, 0.95),
    }


def assert_stats(stats, values: list[float]) -> None:
    ref = ref_stats(values)
    assert stats.n == ref["n"]
    for field in ("mean", "sd", "median", "q05", "q95"):
        assert getattr(stats, field) == pytest.approx(ref[field], rel=1e-12, abs=1e-15), field


@pytest.fixture()
def grid_store(tmp_path):
    """Two configurations (lr 0.1, lr 0.01) x 5 seeds with random curves; returns (store, data)."""
    store = ResultsStore(tmp_path / "grid.sqlite")
    rng = np.random.default_rng(0)
    data = {}
    for lr, seconds in ((0.1, 0.01), (0.01, 0.02)):
        for seed in range(5):
            config = quadratic_config(seed=seed, lr=lr)
            loss = list(rng.lognormal(size=10))
            accuracy = list(rng.uniform(size=3))
            step_time = list(seconds * (1 + 0.1 * rng.uniform(size=3)))
            series = {
                "train/loss": (STEPS, loss),
                "eval/accuracy": ([0, 5, 9], accuracy),
                "opt/grad_norm": (STEPS, list(rng.uniform(size=10))),
                "time/step_seconds": ([3, 6, 9], step_time),
            }
            run_id = add_run(store, config, series)
            data.setdefault(lr, []).append({"run_id": run_id, "group": group_key(config), **series})
    return store, data


def test_consolidate_final_and_best_match_reference(grid_store):
    store, data = grid_store
    table = consolidate(store)
    assert [c.label for c in table.configs] == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert table.varying == ["optimizer.lr"]
    # time/* is the runtime, not a metric
    assert table.keys == ["train/loss", "eval/accuracy", "opt/grad_norm"]
    for runs in data.values():
        summary = table.config(runs[0]["group"])
        assert summary.n_runs == 5 and sorted(summary.seeds) == list(range(5))
        loss = summary.metrics["train/loss"]
        assert loss.direction == "min"
        assert_stats(loss.final, [r["train/loss"][1][-1] for r in runs])
        assert_stats(loss.best, [min(r["train/loss"][1]) for r in runs])
        accuracy = summary.metrics["eval/accuracy"]
        assert accuracy.direction == "max"
        assert_stats(accuracy.final, [r["eval/accuracy"][1][-1] for r in runs])
        assert_stats(accuracy.best, [max(r["eval/accuracy"][1]) for r in runs])
        grad = summary.metrics["opt/grad_norm"]
        assert grad.best is None
        assert_stats(grad.final, [r["opt/grad_norm"][1][-1] for r in runs])


def test_runtime_per_step_and_overhead_against_baseline(grid_store):
    store, data = grid_store

    def median_step_seconds(lr: float) -> float:
        per_run = [ref_quantile(r["time/step_seconds"][1], 0.5) for r in data[lr]]
        return ref_quantile(per_run, 0.5)

    table = consolidate(store, baseline="optimizer.lr=0.1")
    fast, slow = table.config(data[0.1][0]["group"]), table.config(data[0.01][0]["group"])
    assert table.baseline == fast.group_key
    assert fast.step_seconds.median == pytest.approx(median_step_seconds(0.1), rel=1e-12)
    assert slow.step_seconds.median == pytest.approx(median_step_seconds(0.01), rel=1e-12)
    assert fast.overhead == 1.0
    assert slow.overhead == pytest.approx(median_step_seconds(0.01) / median_step_seconds(0.1), rel=1e-12)
    assert 1.7 < slow.overhead < 2.3
    # The same baseline named by its label, a group-key prefix, or a numeric value written differently.
    for name in ("optimizer.lr=0.1", fast.group_key[:6], "optimizer.lr=1e-1"):
        assert consolidate(store, baseline=name).baseline == fast.group_key
    runtime = {row["group_key"]: row for row in table.runtime_rows()}
    assert runtime[fast.group_key]["baseline"] and not runtime[slow.group_key]["baseline"]


def test_runtime_falls_back_to_wall_time_per_step(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    for seed, wall in enumerate((3.0, 5.0, 4.0)):
        add_run(store, quadratic_config(seed=seed), {"train/loss": ([0], [1.0])}, wall_time=wall, steps=10)
    (summary,) = consolidate(store).configs
    assert summary.step_seconds.median == pytest.approx(0.4)
    assert summary.step_seconds.mean == pytest.approx(0.4)


def test_baseline_errors_name_the_choices(grid_store):
    store, _ = grid_store
    ambiguous = r"^Invalid baseline: 'optimizer.clip=global' matches 2 configurations"
    with pytest.raises(ValueError, match=ambiguous):
        consolidate(store, baseline="optimizer.clip=global")
    with pytest.raises(ValueError, match=r"matches no configuration.*optimizer.lr=0.01"):
        consolidate(store, baseline="optimizer.lr=0.5")


def test_failed_unfinished_and_nonfinite_runs(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    finals = [1.0, 2.0, math.inf, 4.0]
    for seed, final in enumerate(finals):
        add_run(store, quadratic_config(seed=seed), {"train/loss": ([0, 1, 2], [9.0, math.nan, final])})
    add_run(store, quadratic_config(seed=10), {"train/loss": ([0], [0.0])}, status="failed")
    add_run(store, quadratic_config(seed=11), {}, status="pending")
    (summary,) = consolidate(store).configs
    assert (summary.n_runs, summary.n_failed, summary.n_unfinished) == (4, 1, 1)
    loss = summary.metrics["train/loss"]
    assert loss.final.n == 4 and loss.final.n_nonfinite == 1
    finite_ref = ref_stats([1.0, 2.0, 4.0])
    assert loss.final.mean == pytest.approx(finite_ref["mean"])
    assert loss.final.median == pytest.approx(finite_ref["median"])
    # best ignores the NaN step (stored as NULL) instead of returning it
    assert loss.best.mean == pytest.approx(ref_stats([1.0, 2.0, 9.0, 4.0])["mean"])
    assert loss.best.n_nonfinite == 0


def test_best_direction_rule_and_overrides(grid_store):
    assert best_direction("train/loss") == "min"
    assert best_direction("eval/loss/q99") == "min"
    assert best_direction("eval/distance") == "min"
    assert best_direction("eval/accuracy") == "max"
    assert best_direction("eval/mcc") == "max"
    assert best_direction("opt/clip_factor") is None
    assert best_direction("time/step_seconds") is None
    assert best_direction("opt/clip_factor", {"opt/clip_factor": "max"}) == "max"
    assert best_direction("train/loss/q50", {"train/loss": "max"}) == "max"
    message = r"^Invalid best\['train/loss'\]: 'low'; allowed: 'min', 'max' or None$"
    with pytest.raises(ValueError, match=message):
        best_direction("train/loss", {"train/loss": "low"})
    store, data = grid_store
    table = consolidate(store, best={"opt/grad_norm": "max", "train/loss": None})
    runs = data[0.1]
    summary = table.config(runs[0]["group"])
    assert summary.metrics["train/loss"].best is None
    assert_stats(summary.metrics["opt/grad_norm"].best, [max(r["opt/grad_norm"][1]) for r in runs])


def test_csv_and_markdown(grid_store):
    store, data = grid_store
    table = consolidate(store, baseline="optimizer.lr=0.1")
    text = table.to_csv(store.path.parent / "out" / "summary.csv")
    assert (store.path.parent / "out" / "summary.csv").read_text() == text
    parsed = list(csv.DictReader(io.StringIO(text)))
    rows = table.rows()
    # 2 configurations x (train/loss final+best, eval/accuracy final+best, opt/grad_norm final)
    assert len(parsed) == len(rows) == 2 * 5
    for got, want in zip(parsed, rows, strict=True):
        assert (got["group_key"], got["key"], got["which"]) == (want["group_key"], want["key"], want["which"])
        for field in ("mean", "sd", "median", "q05", "q95", "step_seconds_median", "overhead"):
            assert float(got[field]) == want[field]
    markdown = summary_markdown(table)
    summary = table.config(data[0.01][0]["group"])
    final = summary.metrics["train/loss"].final
    assert "| optimizer.lr=0.01 | train/loss | 5 | " + final.mean_sd() in markdown
    assert "| optimizer.lr=0.1 | 5 | 0 | " in markdown and "| baseline |" in markdown
    assert f"{summary.overhead:.3f}x" in markdown


def test_quantile_bands_across_seeds_match_reference(grid_store):
    store, data = grid_store
    qs = (0.1, 0.5, 0.9, 0.99)
    bands = quantile_bands(store, "train/loss", qs)
    assert set(bands) == {runs[0]["group"] for runs in data.values()}
    for runs in data.values():
        band = bands[runs[0]["group"]]
        assert band.source == "runs" and band.n == 5 and band.quantiles == qs
        assert band.steps.tolist() == STEPS and band.values.shape == (10, 4)
        for i in range(10):
            column = [r["train/loss"][1][i] for r in runs]
            for j, q in enumerate(qs):
                assert band.values[i, j] == pytest.approx(ref_quantile(column, q), rel=1e-12)


def test_quantile_bands_use_common_steps(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    add_run(store, quadratic_config(seed=0), {"eval/loss": ([0, 2, 4, 6], [4.0, 3.0, 2.0, 1.0])})
    add_run(store, quadratic_config(seed=1), {"eval/loss": ([0, 3, 6], [8.0, 5.0, 3.0])})
    (band,) = quantile_bands(store, "eval/loss", (0.0, 0.5, 1.0)).values()
    assert band.steps.tolist() == [0, 6]
    assert band.values.tolist() == [[4.0, 6.0, 8.0], [1.0, 2.0, 3.0]]


def test_quantile_bands_from_vectorized_logged_quantiles(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    levels = {"q10": 1.0, "q50": 2.0, "q90": 3.0, "q99": 5.0}
    per_seed = []
    for seed, shift in enumerate((0.0, 10.0)):
        series = {f"train/loss/{name}": ([0, 1], [v + shift, v + shift + 1]) for name, v in levels.items()}
        series["train/loss/mean"] = ([0, 1], [0.0, 0.0])
        per_seed.append(add_run(store, quadratic_config(seed=seed), series))
    (band,) = quantile_bands(store, "train/loss").values()
    assert band.source == "vectorized" and band.n == 2
    # quantile averaging over the two seeds: logged value + 5 (mean of shifts 0 and 10)
    assert band.values.tolist() == [[6.0, 7.0, 8.0, 10.0], [7.0, 8.0, 9.0, 11.0]]
    by_run = quantile_bands(store, "train/loss", (0.5, 0.99), by="run")
    assert set(by_run) == set(per_seed)
    assert by_run[per_seed[1]].values.tolist() == [[12.0, 15.0], [13.0, 16.0]]
    with pytest.raises(ValueError, match=r"^Invalid quantiles: \[0.25\] not logged for 'train/loss'"):
        quantile_bands(store, "train/loss", (0.25, 0.5))
    with pytest.raises(ValueError, match=r"^Invalid key: 'eval/loss' was not logged; allowed: train/loss$"):
        quantile_bands(store, "eval/loss")
    with pytest.raises(ValueError, match=r"^Invalid by: 'seed'; allowed: 'group', 'run'$"):
        quantile_bands(store, "train/loss", by="seed")  # type: ignore[arg-type]


def test_consolidate_a_real_sweep(tmp_path):
    """The runner's own keys (vectorized or not) and timings go through consolidation."""
    config = parse_config(
        {
            "name": "tiny",
            "task": {"name": "noisy-quadratic", "options": {"dim": 4}},
            "optimizer": {"name": "clip_sgd", "lr": 0.05, "clip": "global", "max_norm": 1.0},
            "train": {"steps": 20, "eval_every": 10},
            "sweep": {"grid": {"optimizer.max_norm": [0.5, 2.0]}, "seeds": [0, 1]},
        }
    )
    store_path = tmp_path / "sweep.sqlite"
    result = run_sweep_local(expand_sweep(config), store_path, workers=1)
    assert len(result.finished) == 4
    table = consolidate(store_path, baseline="optimizer.max_norm=0.5")
    assert [c.label for c in table.configs] == ["optimizer.max_norm=0.5", "optimizer.max_norm=2"]
    metrics = ResultsStore(store_path).metrics()
    for summary in table.configs:
        assert summary.n_runs == 2 and summary.step_seconds is not None and summary.overhead > 0
        finals = [metrics[r]["eval/loss"][1][-1] for r in summary.run_ids]
        assert summary.metrics["eval/loss"].final.mean == pytest.approx(sum(finals) / 2, rel=1e-12)
    bands = quantile_bands(store_path, "eval/loss", (0.0, 1.0))
    assert all(b.steps.tolist() == [0, 10, 20] for b in bands.values())


def test_quantile_bands_count_nan_as_the_worst_value(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    for seed, values in enumerate(([1.0, math.nan], [2.0, 3.0], [3.0, 4.0])):
        series = {"eval/loss": ([0, 1], values), "eval/accuracy": ([0, 1], values)}
        add_run(store, quadratic_config(seed=seed), series)
    (loss,) = quantile_bands(store, "eval/loss", (0.0, 0.5, 1.0)).values()
    assert loss.values.tolist() == [[1.0, 2.0, 3.0], [3.0, 4.0, math.inf]]
    (accuracy,) = quantile_bands(store, "eval/accuracy", (0.0, 0.5, 1.0)).values()
    assert accuracy.values[1].tolist() == [-math.inf, 3.0, 4.0]


def test_labels_when_a_sweep_swaps_whole_optimizers(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    optimizers = [
        {"name": "sgd", "lr": 0.1},
        {"name": "clip_sgd", "lr": 0.1, "clip": "global", "max_norm": 1.0},
        {"name": "clip_sgd", "lr": 0.1, "clip": "coord", "max_norm": 0.5},
        {"name": "clip_adam", "lr": 0.1, "clip": "global", "max_norm": 1.0},
    ]
    for seed in (0, 1):
        for optimizer in optimizers:
            config = parse_config(
                {"name": "swap", "task": {"name": "noisy-quadratic"}, "optimizer": optimizer,
                 "train": {"steps": 5, "seed": seed}}
            )
            series = {"train/loss": ([0], [1.0]), "time/step_seconds": ([5], [0.01 * (seed + 1)])}
            add_run(store, config, series)
    table = consolidate(store, baseline="sgd")
    # only what differs among configurations of the same optimizer is spelled out
    assert [c.label for c in table.configs] == [
        "clip_adam", "clip_sgd(clip=coord, max_norm=0.5)", "clip_sgd(clip=global, max_norm=1)", "sgd"
    ]
    assert table.varying == ["optimizer.name", "optimizer.clip", "optimizer.max_norm"]
    assert table.config(table.baseline).label == "sgd"
    assert all(c.overhead == pytest.approx(1.0) for c in table.configs)
    assert consolidate(store, baseline="optimizer.name=clip_sgd,optimizer.clip=coord").baseline == (
        table.configs[1].group_key
    )


def test_method_names_and_short_labels():
    from tailclip.engine.labels import method_name, short_labels

    names = {
        "SGD": {"name": "clip_sgd", "clip": None},
        "GClip": {"name": "clip_sgd", "clip": "global", "max_norm": 1.0},
        "CClip": {"name": "clip_sgd", "clip": "coord"},
        "AdamW": {"name": "adamw"},
        "Clip-AdaGrad-Norm (delayed)": {
            "name": "clip_adagrad", "norm": True, "clip": "global", "delay": True
        },
        "Adam-Norm": {"name": "clip_adam", "norm": True, "clip": None},
        "AGNI (AdamW)": {"name": "noise_injection", "base_optimizer": {"name": "adamw"}},
    }
    for expected, spec in names.items():
        assert method_name(spec) == expected

    def config(optimizer, **options):
        return {"name": "e", "task": {"name": "t", "options": {"dim": 10, **options}}, "optimizer": optimizer}

    labels = short_labels({
        "a": config({"name": "clip_sgd", "lr": 0.3, "clip": "global", "max_norm": 1.0}),
        "b": config({"name": "clip_sgd", "lr": 0.1, "clip": "global", "max_norm": 1.0}),
        "c": config({"name": "sgd", "lr": 0.1}),
        "d": {**config({"name": "sgd", "lr": 0.1}, dim=100), "label": "plain SGD"},
    })
    # lr varies among the GClip configs only; dim varies across the experiment; a label wins
    assert labels == {
        "a": "GClip, lr 0.3, d 10", "b": "GClip, lr 0.1, d 10", "c": "SGD, d 10", "d": "plain SGD"
    }
    long = short_labels({"a": config({"name": "clip_sgd", "clip": "global"}, noise="x" * 60),
                         "b": config({"name": "clip_sgd", "clip": "global"}, noise="y")})
    assert len(long["a"]) == 40 and long["a"].endswith("…") and long["b"] == "GClip, noise y"


def test_a_grid_entry_label_names_the_run_and_leaves_its_id(tmp_path):
    from tailclip.engine.config import ConfigError
    from tailclip.engine.grid import sweep_points

    base = {"name": "lab", "task": {"name": "noisy-quadratic"}, "train": {"steps": 3}}
    grid = [
        {"name": "sgd", "lr": 0.1, "label": "plain SGD"},
        {"name": "clip_sgd", "lr": 0.1, "clip": "global"},
    ]
    points = sweep_points(parse_config({**base, "optimizer": {"name": "sgd", "lr": 0.1},
                                        "sweep": {"grid": {"optimizer": grid}}}))
    assert [p.config.label for p in points] == ["plain SGD", None]
    unlabelled = parse_config({**base, "optimizer": {"name": "sgd", "lr": 0.1}})
    assert points[0].config.run_id == unlabelled.run_id
    assert group_key(points[0].config) == group_key(unlabelled)
    store = ResultsStore(tmp_path / "s.sqlite")
    for point in points:
        add_run(store, point.config, {"train/loss": ([0], [1.0])})
    assert [c.short_label for c in consolidate(store).configs] == ["GClip", "plain SGD"]
    with pytest.raises(ConfigError, match="label"):
        parse_config({**base, "optimizer": {"name": "sgd", "lr": 0.1}, "label": "x" * 41})
