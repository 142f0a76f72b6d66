"""NoiseReport and tails_report: verdicts on known noise, PNG figures, strict JSON, the HTML section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable
from torch import nn

from tailclip.noise import NoiseReport, collect_noise, tails_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def linear_problem(x: np.ndarray) -> tuple[nn.Module, object, tuple[torch.Tensor, torch.Tensor]]:
    """loss = mean output of a linear map: the example gradient is the input row x_j."""
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], 1, bias=False).double()
    data = torch.from_numpy(x)
    return model, (lambda out, y: out.mean()), (data, torch.zeros(len(x)))


def strict_json(text: str) -> dict:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_heavy_tailed_report_files(tmp_path: Path) -> None:
    x = levy_stable.rvs(1.5, 0.0, size=(8 * 420, 24), random_state=np.random.default_rng(0))
    model, loss_fn, data = linear_problem(x)
    history = [
        {"step": s, "alpha": a, "alpha_low": a - 0.1, "alpha_high": min(2.0, a + 0.1), "clip_fraction": c}
        for s, a, c in ((100, 1.9, 0.2), (200, 1.6, 0.5), (300, 1.5, None))
    ]
    calls = []
    report = tails_report(
        model,
        loss_fn,
        data,
        tmp_path / "out",
        batch_size=8,
        mean_batches=20,
        noise_batches=400,
        step=300,
        history=history,
        progress=lambda done, total: calls.append(done),
    )
    assert calls == list(range(1, 421))
    assert report.verdict.label == "heavy-tailed"
    assert abs(report.tail.alpha - 1.5) < 0.25 and report.tail_4b is not None
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {
        "noise_report.json",
        "noise_section.html",
        "noise_histogram.png",
        "hill_plot.png",
        "running_variance.png",
        "alpha_over_training.png",
    }
    for png in (tmp_path / "out").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    summary = strict_json((tmp_path / "out" / "noise_report.json").read_text())
    assert summary["verdict"]["label"] == "heavy-tailed"
    assert summary["tail_index"]["alpha"] == pytest.approx(report.tail.alpha)
    assert summary["sample"]["step"] == 300 and summary["sample"]["batch_size"] == 8
    assert summary["noise_scale"]["b_small"] == 8 and summary["noise_scale"]["b_big"] == 160
    assert summary["history"][2]["clip_fraction"] is None
    assert set(summary["figures"]) == {"histogram", "hill", "moments", "training"}
    html = (tmp_path / "out" / "noise_section.html").read_text()
    assert html.startswith('<section class="tailclip-noise">') and html.rstrip().endswith("</section>")
    assert html.count("<img ") == 4 and 'src="noise_histogram.png"' in html
    assert "<strong>heavy-tailed</strong>" in html
    assert report.html(image_prefix="noise/").count('src="noise/') == 4


def test_light_tailed_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8 * 420, 24)) * np.exp(rng.normal(size=24))
    model, loss_fn, data = linear_problem(x)
    report = tails_report(model, loss_fn, data, tmp_path, batch_size=8, mean_batches=20, noise_batches=400)
    assert report.verdict.label == "light-tailed"
    assert report.tail.high == 2.0 and report.tail.alpha > 1.8 and report.ratio_slope < -0.5
    assert not (tmp_path / "alpha_over_training.png").exists()
    # the Gaussian reference has the noise's mean squared norm
    assert np.mean(report.reference_norms**2) == pytest.approx(np.mean(report.norms**2), rel=0.05)


def test_from_sample_without_batch_check_and_figures() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(1200, 4)
    sample = collect_noise(
        model,
        nn.CrossEntropyLoss(),
        (x, (x[:, 0] > 0).long()),
        batch_size=16,
        mean_batches=10,
        noise_batches=50,
    )
    report = NoiseReport.from_sample(sample, n_boot=50, reference_n=500)
    assert report.tail_4b is None and "batch_size" not in report.verdict.votes  # 50 < 8 * k1
    assert report.reference_norms.shape == (500,)
    d = strict_json(report.to_json())
    assert d["tail_index_4b"] is None and d["hill"]["method"] == "hill" and d["figures"] == {}
    figures = report.figures()
    assert set(figures) == {"histogram", "hill", "moments"}
    ax = figures["histogram"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # no clamping: the bins reach the largest norm of both samples
    right_edge = max(p.get_x() + p.get_width() for p in ax.patches if hasattr(p, "get_width"))
    assert right_edge >= max(report.norms.max(), report.reference_norms.max())
    assert sum(p.get_height() for p in ax.patches if hasattr(p, "get_height")) == pytest.approx(1.0)
