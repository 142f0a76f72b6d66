"""Estimates outside their domain: a NaN loss raises naming the batch; a negative noise scale is undefined."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from tailclip.cli import app
from tailclip.noise import collect_noise, noise_scale_from_squared_norms


def test_noise_scale_inside_its_domain_is_a_measurement() -> None:
    est = noise_scale_from_squared_norms(5.0, 2.0, 2, 8)
    assert est.undefined == "" and est.b_simple == pytest.approx(est.trace / est.g2)
    assert est.text() == f"{est.b_simple:.4g}" and est.to_dict()["b_simple"] == est.b_simple


@pytest.mark.parametrize(
    ("sq_small", "sq_big", "b_small", "b_big", "reason"),
    [
        pytest.param(100.0, 1.0, 8, 160, "|G|^2 estimated at -4.21 <= 0", id="negative-g2"),
        pytest.param(1.0, 0.05, 1, 20, "|G|^2 estimated at 0 <= 0", id="zero-g2"),
        pytest.param(1.0, 2.0, 2, 8, "tr(Sigma) estimated at -2.67 < 0", id="negative-trace"),
        pytest.param(math.inf, 2.0, 2, 8, "not finite", id="non-finite"),
    ],
)
def test_noise_scale_outside_its_domain_is_undefined_with_the_reason(
    sq_small: float, sq_big: float, b_small: int, b_big: int, reason: str
) -> None:
    est = noise_scale_from_squared_norms(sq_small, sq_big, b_small, b_big)
    assert math.isnan(est.b_simple) and reason in est.undefined
    assert est.text() == f"undefined ({est.undefined})"
    data = est.to_dict()
    assert data["b_simple"] is None and data["undefined"] == est.undefined


class NanAfter:
    """A batch-mean loss that turns NaN from its ``bad``-th call on (1-based)."""

    def __init__(self, bad: int) -> None:
        self.calls, self.bad = 0, bad

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = nn.functional.mse_loss(output, target)
        return loss * math.nan if self.calls >= self.bad else loss


@pytest.mark.parametrize(
    ("bad", "where"), [(1, "mean batch 1 of 3"), (5, "noise batch 2 of 4")], ids=["mean", "noise"]
)
def test_collect_noise_raises_naming_the_batch_whose_loss_is_not_finite(bad: int, where: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    data = (x, x.sum(1, keepdim=True))
    with pytest.raises(ValueError, match=f"the gradient of {where} is not finite"):
        collect_noise(model, NanAfter(bad), data, batch_size=4, mean_batches=3, noise_batches=4)


def test_tails_reports_an_infinite_variance_noise_scale_as_undefined(tmp_path: Path) -> None:
    """The issue's case: a 50-d quadratic with alpha-stable noise (alpha 1.2) printed B_simple -66.7."""
    config = {
        "name": "tq",
        "task": {"name": "noisy-quadratic", "options": {"dim": 50, "noise": "stable", "alpha": 1.2,
                                                         "dtype": "float64"}},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 50, "batch_size": 1, "seed": 0},
        "output": {"store": str(tmp_path / "runs" / "s.sqlite")},
    }  # fmt: skip
    path = tmp_path / "tq.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tails", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    scale = json.loads((out / "noise_report.json").read_text())["noise_scale"]
    assert scale["g2"] < 0 and scale["b_simple"] is None and "|G|^2 estimated" in scale["undefined"]
    assert "undefined (|G|^2 estimated" in " ".join(result.stdout.split())
    assert "undefined (|G|^2 estimated" in (out / "noise_section.html").read_text()
