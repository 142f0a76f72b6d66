"""The HTML report: one self-contained file with the tables, figures and diagnostics of a store,
checked as text and in headless Chromium (Debian's ``chromium``: ``apt-get install -y chromium``)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from _browser import console_lines, probe, screenshot
from _results import add_run, quadratic_config
from matplotlib.figure import Figure

from tailclip.engine.consolidate import consolidate
from tailclip.engine.report import report_command, write_report
from tailclip.engine.store import ResultsStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture()
def report_store(tmp_path: Path) -> dict:
    """Two configurations x 3 seeds (one also failed once), logged quantiles, noise artifacts."""
    store = ResultsStore(tmp_path / "store" / "results.sqlite")
    rng = np.random.default_rng(1)
    runs = []
    for clip, seconds in (("global", 0.002), ("coord", 0.004)):
        for seed in range(3):
            steps = list(range(0, 21))
            loss = list(np.exp(-0.1 * np.arange(21)) * rng.lognormal(0, 0.2, size=21))
            series = {
                "train/loss": (steps, loss),
                "eval/loss": ([0, 10, 20], [loss[0], loss[10], loss[20]]),
                "eval/distance": ([0, 10, 20], list(rng.uniform(size=3))),
                "opt/clip_factor": (steps, list(rng.uniform(size=21))),
                "time/step_seconds": ([10, 20], [seconds, seconds]),
            }
            alpha = 1.4 + 0.1 * seed
            series["noise/alpha"] = ([10, 20], [alpha, alpha])
            series["noise/alpha_low"] = ([10, 20], [alpha - 0.2, alpha - 0.2])
            series["noise/alpha_high"] = ([10, 20], [alpha + 0.2, alpha + 0.2])
            for name, level in (("q10", 0.5), ("q50", 1.0), ("q90", 2.0), ("q99", 8.0)):
                series[f"train/noise_norm/{name}"] = (steps, [level * (1 + 0.01 * s) for s in steps])
            config = quadratic_config(name="report", seed=seed, clip=clip)
            runs.append(add_run(store, config, series, steps=20))
    failed = add_run(
        store,
        quadratic_config(name="report", seed=7, clip="coord"),
        {},
        status="failed",
        error="Traceback (most recent call last):\nValueError: diverged badly",
    )
    # artifacts: a PNG and a JSON noise diagnostic, one that went missing, per-run final values
    noise_dir = store.path.parent / "noise"
    noise_dir.mkdir()
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().hist(rng.standard_t(1.5, size=200), bins=20)
    fig.savefig(noise_dir / "hist.png", format="png", dpi=50)
    (noise_dir / "tail.json").write_text(json.dumps({"tail_index": 1.4375, "samples": 200, "family": "t"}))
    store.add_artifact(runs[0], "noise/histogram", str(noise_dir / "hist.png"))
    store.add_artifact(runs[0], "noise/tail_index", "noise/tail.json")  # relative to the store's directory
    store.add_artifact(runs[1], "noise/gone", str(noise_dir / "gone.png"))
    per_run = store.path.parent / "per_run.npy"
    np.save(per_run, rng.pareto(1.5, size=500) + 1.0)
    store.add_artifact(runs[0], "per_run/train/loss", str(per_run))
    return {"store": store, "runs": runs, "failed": failed, "png": noise_dir / "hist.png"}


def test_report_is_one_self_contained_file_with_all_sections(report_store, tmp_path):
    store = report_store["store"]
    output = write_report(
        store.path, tmp_path / "out" / "report.html", title="Clip modes", baseline="optimizer.clip=global"
    )
    assert output == tmp_path / "out" / "report.html"
    text = output.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>Clip modes</title>" in text
    # nothing outside the file: every src/href is inline data or an anchor; no link/import/url()
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)
    assert references and all(r.startswith(("data:", "#")) for r in references), references
    assert not re.search(r"<link|@import|url\(|https?://", text)
    # one section per experiment, then the runs
    assert '<section id="exp-report" class="experiment">' in text and 'href="#exp-report"' in text
    assert '<section id="runs">' in text and 'href="#runs"' in text
    section = text[text.index('<section id="exp-report"'):text.index('<section id="runs">')]
    # claims of other experiments stay out; the headline figure comes before the table and the detail
    assert section.index("headline figure of report") < section.index("experiment-table") < section.index(
        "<details><summary>Per-metric detail"
    )

    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', text)
    assert len(images) == text.count("<img")
    sizes = {alt: png_size(base64.b64decode(data)) for alt, data in images}
    for alt in (
        "headline figure of report",
        "curves of train/loss",
        "curves of eval/loss",
        "curves of eval/distance",
        "curves of opt/clip_factor",
        "curves of train/noise_norm",
        "survival of final train/loss",
        "tail index of report",
        "noise histogram of GClip",
    ):
        assert alt in sizes, alt
        assert min(sizes[alt]) > 50
    # the first seed's noise histogram is shown once, above the fold, as a compact PNG
    embedded = base64.b64decode(dict(images)["noise histogram of GClip"])
    assert png_size(embedded) == png_size(report_store["png"].read_bytes())
    assert "figure: " + str(report_store["png"]) in text and "hist.png" not in dict(images)  # not twice
    assert section.index("<h3>Gradient noise</h3>") < section.index("<details>")
    assert "train/noise_norm: logged quantiles over the task&#x27;s runs (10%, 50%, 90%)" in text

    for summary in consolidate(store, baseline="optimizer.clip=global").configs:
        for key in ("train/loss", "eval/loss", "eval/distance"):
            metric = summary.metrics[key]
            cells = [metric.final.mean_sd(), metric.best.mean_sd()]
            for cell in cells:
                assert f">{cell.replace('±', '±')}</td>" in text
    assert "2.000× (baseline)" not in text and "1.000× (baseline)" in text
    assert ">2.000×</td>" in text  # coord takes twice the median time per step of global
    # every metric x configuration in one table, with the direction of "best"
    assert text.count('id="metrics-table"') == 1 and '<td class="text">eval/distance</td>' in text
    assert '<td class="text">min</td>' in text and '<td class="text">—</td>' in text  # opt/* has no best
    # short labels in method names, the store-wide label and the full config in the tooltip
    assert '<span class="label" title="optimizer.clip=coord">CClip</span>' in text
    assert re.search(r'<span class="label" title="optimizer.clip=global\noptimizer: \{[^"]*&quot;clip&quot;: '
                     r'&quot;global&quot;[^"]*">GClip</span>', text)
    # the experiment table: final and best per headline metric, the lower final loss in bold
    table = consolidate(store, baseline="optimizer.clip=global")
    finals = {c.short_label: c.metrics["eval/loss"].final for c in table.configs}
    winner = min(finals, key=lambda label: finals[label].mean)
    loser = ({"GClip", "CClip"} - {winner}).pop()
    assert f"<b>{finals[winner].mean_sd()}</b>" in text and f"<b>{finals[loser].mean_sd()}</b>" not in text

    # noise diagnostics: embedded figure, JSON as a table, the missing file named
    assert ">tail_index</td>" in text and 'data-v="1.4375">1.438</td>' in text and ">t</td>" in text
    assert "missing file: " + str(store.path.parent / "noise" / "gone.png") in text
    # runs table: every run with its status, the failure's last line
    assert text.count('<span class="status finished">finished</span>') == 6
    assert text.count('<span class="status failed">failed</span>') == 1
    assert "ValueError: diverged badly</div>" in text
    for run_id in [*report_store["runs"], report_store["failed"]]:
        assert f'<span title="{run_id}">{run_id[:10]}</span>' in text
    assert text.count('<table class="sortable') >= 5 and "addEventListener('click'" in text


def test_report_of_an_empty_store_and_a_missing_store(tmp_path):
    empty = ResultsStore(tmp_path / "empty.sqlite")
    text = report_command(empty.path, tmp_path / "empty.html").read_text()
    assert "No finished runs yet." in text and "<p>No runs.</p>" in text and "<img" not in text
    with pytest.raises(ValueError, match=r"^Invalid store: '.*nope.sqlite' does not exist"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "x.html")
    assert not (tmp_path / "nope.sqlite").exists() and not (tmp_path / "x.html").exists()


def test_report_handles_nonfinite_and_single_seed(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    add_run(store, quadratic_config(seed=0), {"train/loss": ([0, 1, 2], [1.0, math.nan, math.inf])})
    text = write_report(store.path, tmp_path / "r.html").read_text()
    assert "1 (1 non-finite)" in text


def test_report_in_headless_chromium(report_store, tmp_path):
    store = report_store["store"]
    html = write_report(store.path, tmp_path / "report.html", baseline="optimizer.clip=global")
    started = time.perf_counter()
    shot = tmp_path / "report.png"
    lines = screenshot(html, shot, tmp_path, width=1280, height=2000)
    assert lines == [], lines
    assert png_size(shot.read_bytes()) == (1280, 2000)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.std() > 0.05  # text, tables and figures, not a blank page

    found = probe(html, tmp_path, sort_table="runs-table", sort_column="seed")
    assert found["errors"] == []
    assert found["images"] == html.read_text().count("<img") >= 8
    assert found["decoded"] == found["images"]
    assert found["labels"] and max(len(label) for label in found["labels"]) <= 40
    assert found["sections"] == [{"id": "exp-report", "headline": True}]
    assert found["tooWide"] == []
    assert found["resources"] == []
    assert found["sortable"] >= 5
    sort = found["sort"]
    seeds = [float(v) for v in sort["before"]]
    assert sort["firstSort"] == "ascending" and [float(v) for v in sort["first"]] == sorted(seeds)
    assert sort["secondSort"] == "descending"
    assert [float(v) for v in sort["second"]] == sorted(seeds, reverse=True)
    assert time.perf_counter() - started < 120


def test_browser_checks_catch_a_broken_page(tmp_path):
    """The checks above can fail: a script error and an undecodable image are both reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>b</title></head><body>"
        '<img src="data:image/png;base64,AAAA">'
        '<table class="sortable" id="t"><thead><tr><th>x</th></tr></thead>'
        "<tbody><tr><td>1</td></tr></tbody></table><script>undefinedFunction();</script></body></html>"
    )
    lines = screenshot(page, tmp_path / "broken.png", tmp_path)
    assert any("undefinedFunction" in line for line in lines), lines
    found = probe(page, tmp_path, sort_table="t", sort_column="x")
    assert any("undefinedFunction" in e for e in found["errors"])
    assert found["images"] == 1 and found["decoded"] == 0
    assert console_lines('[1:1:INFO:CONSOLE:1] "boom", source: file:///x (1)') != []


def test_report_command_line(report_store, tmp_path):
    from typer.testing import CliRunner

    from tailclip.cli import app

    runner = CliRunner()
    store = report_store["store"]
    output = tmp_path / "cli" / "report.html"
    args = ["report", str(store.path), "-o", str(output), "--baseline", "optimizer.clip=global"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert output.is_file() and "1.000× (baseline)" in output.read_text()
    missing = runner.invoke(app, ["report", str(tmp_path / "nope.sqlite"), "-o", str(tmp_path / "x.html")])
    assert missing.exit_code == 2 and "Invalid store" in missing.output and not (tmp_path / "x.html").exists()
    args = ["report", str(store.path), "-o", str(tmp_path / "y.html"), "--baseline", "lr=9"]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2 and "Invalid baseline: 'lr=9' matches no configuration" in bad.output


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rich.console import Console

    from tailclip.claims import run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(out, workers=1, console=Console(record=True, width=200))
    return out / "report.html"


@pytest.mark.slow
def test_demo_report_reads_in_headless_chromium(demo_report, tmp_path):
    """The demo's report: one section per experiment with its headline figure, short labels,
    nothing wider than the page, no console error, at most 1.5 MB."""
    text = demo_report.read_text(encoding="utf-8")
    assert demo_report.stat().st_size <= 1.5e6
    shot = tmp_path / "demo.png"
    assert screenshot(demo_report, shot, tmp_path, width=1280, height=4000) == []
    found = probe(demo_report, tmp_path, sort_table="runs-table", sort_column="seed")
    assert found["errors"] == [] and found["resources"] == []
    assert found["decoded"] == found["images"] == text.count("<img")
    ids = ["exp-synthetic-remark1", "exp-synthetic-adaptive-quantiles", "exp-synthetic-coordinate-clipping"]
    assert found["sections"] == [{"id": ident, "headline": True} for ident in ids]
    assert found["tooWide"] == []
    labels = found["labels"]
    assert max(len(label) for label in labels) <= 40
    assert {"SGD", "GClip", "Clip-AdaGrad-Norm (delayed)", "CClip, d 1000"} <= set(labels)
    # each section opens with its claim's verdict
    for ident in ids:
        section = text[text.index(f'<section id="{ident}"'):]
        assert section.index('<span class="verdict pass">PASS</span>') < section.index("<figure")


def _tiny_experiment(tmp_path: Path, name: str, overrides: list[str]):
    from tailclip.engine.consolidate import load_runs
    from tailclip.engine.grid import expand_sweep
    from tailclip.engine.headlines import experiments
    from tailclip.engine.sweep import run_sweep_local
    from tailclip.engine.yaml_loading import load_config

    store_path = tmp_path / f"{name}.sqlite"
    result = run_sweep_local(expand_sweep(load_config(name, overrides)), store_path, workers=1)
    assert result.ok
    data = load_runs(store_path)
    (experiment,) = experiments(data, consolidate(data), lambda run_id, key: None)
    return store_path, experiment


def _lines(fig: Figure) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()}


def test_rates_headline_draws_error_against_step_with_the_rate_slope(tmp_path):
    from tailclip.engine.headlines import HEADLINES
    from tailclip.engine.plots import Styles

    overrides = ["task.options.runs=50", "train.steps=200", "train.log_every=10"]
    store_path, experiment = _tiny_experiment(tmp_path, "synthetic-rates", overrides)
    fig, caption = HEADLINES["synthetic-rates"].draw(experiment, Styles())
    lines = _lines(fig)
    assert set(experiment.labels.values()) == {"GClip, alpha 1.3", "GClip, alpha 1.6", "GClip, alpha 2"}
    for summary in experiment.configs:
        alpha = experiment.option(summary, "alpha")
        steps, values = experiment.series(summary, "train/avg_error/mean")
        x, y = lines[experiment.labels[summary.group_key]]
        assert np.array_equal(x, steps[steps > 0]) and np.allclose(y, values[steps > 0])
        rate = -2 * (alpha - 1) / alpha
        sx, sy = lines[f"slope {rate:.2f}"]
        assert np.log(sy[-1] / sy[0]) / np.log(sx[-1] / sx[0]) == pytest.approx(rate)
    assert fig.axes[0].get_xscale() == fig.axes[0].get_yscale() == "log"
    text = write_report(store_path, tmp_path / "rates.html").read_text()
    assert 'alt="headline figure of synthetic-rates"' in text and "Table 1" in caption


def test_bias_headline_draws_the_floor_against_threshold_and_step_size(tmp_path):
    from tailclip.engine.headlines import HEADLINES
    from tailclip.engine.plots import Styles

    overrides = ["task.options.runs=20", "train.steps=200", "task.options.average_start=100",
                 "sweep.grid.optimizer.max_norm=[0.25, 2.0]", "sweep.grid.optimizer.lr=[0.1, 0.01]"]
    _, experiment = _tiny_experiment(tmp_path, "synthetic-clipping-bias", overrides)
    fig, _ = HEADLINES["synthetic-clipping-bias"].draw(experiment, Styles())
    by_c, by_lr = fig.axes[:2]
    assert by_c.get_xlabel() == "threshold c" and by_lr.get_xlabel() == "step size lr"
    floors = {}
    for summary in experiment.configs:
        spec = experiment.optimizer(summary)
        floors[(spec["max_norm"], spec["lr"])] = summary.metrics["eval/avg_error/mean"].final.mean
    lines = {line.get_label(): line for line in by_c.get_lines()}
    for lr in (0.1, 0.01):
        line = lines[f"lr {lr:g}"]
        assert list(line.get_xdata()) == [0.25, 2.0]
        assert np.allclose(line.get_ydata(), [floors[(0.25, lr)], floors[(2.0, lr)]])
    assert max(len(ax.get_lines()) for ax in fig.axes) <= 8


def test_colours_follow_the_method_and_pngs_are_compact():
    from tailclip.engine.plots import Styles, compact_png, png_figure, thin

    first, second = Styles(), Styles()
    # the same method has the same colour in every figure; its variants differ in shade or dash
    assert first("GClip", "a")["color"] == second("GClip", "z")["color"]
    assert first("GClip", "b") != first("GClip", "a")
    assert first("SGD", "c")["color"] != first("GClip", "a")["color"]
    assert Styles.color("some new method") == Styles.color("some new method")
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    for i in range(6):
        ax.plot(np.arange(100), np.sin(np.arange(100) / (i + 3)), label=str(i))
    original = io.BytesIO()
    fig.savefig(original, format="png", dpi=80)
    compact = png_figure(fig)
    assert png_size(compact) == png_size(original.getvalue()) and len(compact) < len(original.getvalue()) / 2
    assert compact_png(compact) == compact  # nothing to gain: the input comes back
    steps, values = thin(np.arange(10_001), np.arange(10_001.0), points=1000)
    assert len(steps) <= 1002 and steps[0] == 0 and steps[-1] == 10_000 and np.array_equal(steps, values)


# ----------------------------------------------------------------------------- the advice section


@pytest.fixture(scope="module")
def advised(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``tailclip advise`` on a small heavy-tailed quadratic (20-step runs, 2 seeds), then
    ``tailclip report`` on the store it wrote."""
    import yaml
    from typer.testing import CliRunner

    from tailclip.cli import app

    root = tmp_path_factory.mktemp("advised")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "name": "advised",
        "task": {"name": "noisy-quadratic", "options": {"dim": 5, "noise": "stable", "alpha": 1.2}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 60, "batch_size": 1},
        "output": {"store": str(root / "runs" / "store.sqlite")},
    }))
    runner = CliRunner()
    advice = root / "advice.json"
    small = ["--steps", "20", "--noise-batches", "20", "--seeds", "2"]
    result = runner.invoke(app, ["advise", str(config), *small, "--json", str(advice)])
    assert result.exit_code == 0, result.output
    store = root / "runs" / "store-advise.sqlite"
    report = root / "report.html"
    result = runner.invoke(app, ["report", str(store), "-o", str(report)])
    assert result.exit_code == 0, result.output
    return {"advice": json.loads(advice.read_text()), "store": store, "report": report}


def _advice_section(text: str) -> str:
    start = text.index('<section id="advice-advised" class="advice">')
    return text[start:text.index("</section>", start)]


def test_report_of_an_advise_store_opens_with_the_advice(advised):
    from tailclip.engine.tables import escape

    text = advised["report"].read_text(encoding="utf-8")
    advice = advised["advice"]
    rec = advice["recommendation"]
    # first in the page and in the navigation, before the bake-off's experiment section
    assert text.index('<section id="advice-advised"') < text.index('<section id="exp-')
    assert re.search(r'<nav><a href="#advice-advised">Advice: advised</a>', text)
    section = _advice_section(text)
    # the verdict: what to train with, the noise, the YAML to paste, the reason
    assert f"Train with <b>{escape(rec['label'])}</b>" in section
    assert f"noise {advice['noise']['verdict']}</span>" in section
    alpha = advice["noise"]["alpha"]
    assert f"α = {alpha['value']:.2f} [{alpha['low']:.2f}, {alpha['high']:.2f}]" in section
    assert f"<pre>{escape(rec['yaml'].rstrip())}</pre>" in section and "name: " in rec["yaml"]
    assert escape(rec["reason"]) in section
    # the evidence: every finalist with its mean ± sd and seeds, the recommended one marked
    for row in advice["ranking"]:
        assert f">{escape(row['label'])}</span>" in section
        assert f"{row['mean']:.4g} ± {row['sd']:.4g}</td>" in section
    marked = re.search(r'<tr class="recommended">.*?<span class="label"[^>]*>([^<]*)</span>', section)
    assert marked is not None and marked.group(1) == escape(rec["label"])
    # the control and what would change the advice
    assert advice["control"] is not None and escape(advice["control"]["message"]) in section
    assert f"batch {advice['control']['batch_size']}</th>" in section
    assert all(f"<li>{escape(line)}</li>" in section for line in advice["what_would_change"])
    # the advice's runs are named by candidate, step size and (in the control) batch
    after = text[text.index("</section>", text.index('<section id="advice-advised"')):]
    best = advice["ranking"][0]
    lr = best["optimizer"]["lr"]
    assert f'">{escape(best["label"])}, lr {lr:.3g}</span>' in after
    control = advice["control"]
    assert f", batch {control['batch_size']}</span>" in after


def test_a_control_too_short_to_run_shows_its_reason_and_no_table(advised):
    from tailclip.engine.advice_section import advice_section_html

    control = {
        **advised["advice"]["control"],
        "outcome": "too short",
        "explained_by_noise": None,
        "large_batch": [None, None],
        "run_ids": [],
        "message": "too short to conclude: the budget affords 6 steps at batch 64 (4x)",
    }
    section = advice_section_html({**advised["advice"], "control": control}, "advice-x")
    assert "too short: no conclusion</span> too short to conclude: the budget affords 6 steps" in section
    assert "<h3>Control</h3>" in section and f"batch {control['batch_size']}</th>" not in section


def test_advice_is_recorded_once_however_many_runs_carry_it(advised):
    with ResultsStore(advised["store"], read_only=True) as store:
        recorded = store.artifacts(kind="advice/json")
    assert len(recorded) > 1 and {a.path for a in recorded} == {"advise/advised/advice.json"}
    assert advised["report"].read_text(encoding="utf-8").count('class="advice"') == 1


def test_advice_section_reads_in_headless_chromium(advised, tmp_path):
    """The advise store's report: no console error, every label (the advice's too) at most 40
    characters, nothing wider than the page; the screenshot of its first screen is kept."""
    html = advised["report"]
    shot = tmp_path / "advice.png"
    assert screenshot(html, shot, tmp_path, width=1280, height=1400) == []
    from matplotlib.image import imread

    assert imread(shot).std() > 0.05
    found = probe(html, tmp_path, sort_table="runs-table", sort_column="seed")
    assert found["errors"] == [] and found["resources"] == [] and found["tooWide"] == []
    assert found["decoded"] == found["images"] == html.read_text().count("<img")
    labels = found["labels"]
    assert {row["label"] for row in advised["advice"]["ranking"]} <= set(labels)
    assert max(len(label) for label in labels) <= 40


def _copied_store(advised: dict, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "runs"
    shutil.copytree(advised["store"].parent, target)
    return target


def test_advice_section_escapes_what_the_file_says(advised, tmp_path):
    runs = _copied_store(advised, tmp_path)
    path = runs / "advise" / "advised" / "advice.json"
    data = json.loads(path.read_text())
    data["recommendation"]["label"] = "<img src=x onerror=alert(1)>"
    path.write_text(json.dumps(data))
    text = write_report(runs / "store-advise.sqlite", tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Train with <b>&lt;img src=x onerror=alert(1)&gt;</b>" in text and "<img src=x" not in text


def test_a_missing_or_unreadable_advice_file_is_a_note(advised, tmp_path):
    runs = _copied_store(advised, tmp_path)
    path = runs / "advise" / "advised" / "advice.json"
    path.write_text("{not json")
    text = write_report(runs / "store-advise.sqlite", tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<p class="note">unreadable advice file advise/advised/advice.json (' in text
    assert '<section id="exp-' in text  # the rest of the report is there
    path.unlink()
    text = write_report(runs / "store-advise.sqlite", tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<p class="note">missing advice file: advise/advised/advice.json</p>' in text
    assert 'href="#advice-advised">Advice: advised</a>' in text


@pytest.mark.parametrize(
    ("outcome", "explained", "badge"),
    [
        ("flips", True, "flips: the gain is explained by the noise"),
        ("holds", False, "holds: the gain is not explained by the noise"),
        ("weak", None, "weak: no conclusion"),
        ("no gain", None, "no gain: no conclusion"),
    ],
)
def test_advice_control_states_its_conclusion(advised, outcome, explained, badge):
    from tailclip.engine.advice_section import advice_section_html

    data = json.loads(json.dumps(advised["advice"]))
    data["control"].update(outcome=outcome, explained_by_noise=explained)
    section = advice_section_html(data, "advice-x")
    assert f'<span class="noise-verdict control">{badge}</span>' in section


def test_advice_without_a_control_says_why(advised):
    from tailclip.engine.advice_section import advice_section_html

    data = {**advised["advice"], "control": None}
    assert "Only one finalist: nothing to compare at a larger batch." in advice_section_html(data, "advice-x")
