"""NoiseReport: every diagnostic of one noise sample, as JSON, PNG figures and an HTML section.

:meth:`NoiseReport.from_sample` computes, from a :class:`~tailclip.noise.NoiseSample`:

* the vector-mode Mohammadi tail index (on the projected noise vectors) with its bootstrap
  interval, and Hill's estimator on the exact norms with its Hill plot;
* the batch-size check: the tail index of the noise at ``4B`` (means of four noises of ``B``);
* the max-to-sum trend and the running-variance growth exponent;
* the outlier ratios, the gradient noise scale ``B_simple`` and the verdict
  (:mod:`tailclip.noise.verdict`);
* a Gaussian reference sample of norms with the noise's per-coordinate variances.

:func:`tails_report` is the one call behind ``tailclip tails``: collect, analyse, write
``noise_report.json``, the PNGs and ``noise_section.html`` to a folder.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tailclip.noise._json import dumps
from tailclip.noise._model import LossFn
from tailclip.noise.batches import BatchLoss
from tailclip.noise.collect import NoiseSample, collect_noise
from tailclip.noise.estimators import TailIndex, tail_index
from tailclip.noise.statistics import (
    NoiseScale,
    OutlierRatios,
    gaussian_reference,
    larger_batch_noise,
    loglog_slope,
    max_to_sum_ratio,
    max_to_sum_slope,
    outlier_ratios,
    running_variance,
)
from tailclip.noise.verdict import Verdict, verdict

REPORT_JSON = "noise_report.json"
HTML_SECTION = "noise_section.html"
FIGURES = {
    "histogram": "noise_histogram.png",
    "hill": "hill_plot.png",
    "moments": "running_variance.png",
    "training": "alpha_over_training.png",
}
BATCH_FACTOR = 4


@dataclass
class NoiseReport:
    """The diagnostics of one noise sample; :meth:`to_dict` is the JSON summary.

    The arrays (``norms``, ``reference_norms``, the running-variance and max-to-sum curves) are
    kept for the figures and left out of the JSON; ``history`` is a monitor history, if any.
    """

    sample: dict[str, Any]
    tail: TailIndex
    hill: TailIndex
    tail_4b: TailIndex | None
    ratio_slope: float
    variance_exponent: float
    outliers: OutlierRatios
    noise_scale: NoiseScale
    verdict: Verdict
    norms: np.ndarray
    reference_norms: np.ndarray
    variance_curve: tuple[np.ndarray, np.ndarray]
    ratio_curve: tuple[np.ndarray, np.ndarray]
    history: list[dict[str, Any]] | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_sample(
        cls,
        sample: NoiseSample,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        k1: int = 10,
        ci: float = 0.95,
        n_boot: int = 200,
        seed: int = 0,
        reference_n: int = 4096,
    ) -> NoiseReport:
        """Run every diagnostic on ``sample`` (needs ``sample.n >= 2 k1``).

        The ``4B`` check needs ``sample.n >= 8 k1`` and is skipped (``None``) below that.
        ``reference_n`` Gaussian reference norms are drawn with ``seed``.
        """
        tail = sample.tail_index("mohammadi", k1=k1, ci=ci, n_boot=n_boot, seed=seed)
        hill = sample.tail_index("hill", k1=k1, ci=ci)
        tail_4b = None
        if sample.n >= 2 * k1 * BATCH_FACTOR:
            larger = larger_batch_noise(sample.projections, BATCH_FACTOR)
            tail_4b = tail_index(larger, "mohammadi", k1, ci, n_boot, seed, center=True)
        ratio_slope = max_to_sum_slope(sample.norms, 2.0, seed=seed)
        m_min = max(10, sample.n // 100)
        variance_curve = running_variance(sample.norms, center=False, num=256)
        ratio_curve = max_to_sum_ratio(sample.norms, 2.0, num=256)
        return cls(
            sample=sample.summary(),
            tail=tail,
            hill=hill,
            tail_4b=tail_4b,
            ratio_slope=ratio_slope,
            variance_exponent=loglog_slope(*variance_curve, m_min=m_min),
            outliers=outlier_ratios(sample.norms),
            noise_scale=sample.noise_scale(),
            verdict=verdict(tail, tail_4b=tail_4b, ratio_slope=ratio_slope),
            norms=sample.norms,
            reference_norms=gaussian_reference(sample.coord_variance, reference_n, seed),
            variance_curve=variance_curve,
            ratio_curve=ratio_curve,
            history=list(history) if history else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as a dict; :meth:`to_json` turns it into strict JSON (NaN and Inf as null)."""
        return {
            "verdict": self.verdict.to_dict(),
            "sample": dict(self.sample),
            "tail_index": self.tail.to_dict(),
            "hill": self.hill.to_dict(),
            "tail_index_4b": None if self.tail_4b is None else self.tail_4b.to_dict(),
            "max_to_sum_slope": self.ratio_slope,
            "variance_exponent": self.variance_exponent,
            "outlier_ratios": self.outliers.to_dict(),
            "noise_scale": self.noise_scale.to_dict(),
            "gaussian_reference": {
                "n": int(self.reference_norms.size),
                "norm_median": float(np.median(self.reference_norms)),
                "norm_max": float(np.max(self.reference_norms)),
            },
            "history": self.history,
            "figures": {k: p.name for k, p in self.paths.items() if p.suffix == ".png"},
        }

    def to_json(self) -> str:
        """The summary as strict JSON text."""
        return dumps(self.to_dict())

    def figures(self) -> dict[str, Any]:
        """The matplotlib figures by name (``training`` only with a history)."""
        from tailclip.noise import figures

        out = {
            "histogram": figures.noise_histogram(
                self.norms,
                self.reference_norms,
                title=f"Gradient-noise norms: alpha = {self.tail.alpha:.2f} ({self.verdict.label})",
            ),
            "hill": figures.hill_figure(self.hill, self.tail),
            "moments": figures.moments_figure(
                self.variance_curve,
                self.ratio_curve,
                variance_exponent=self.variance_exponent,
                ratio_slope=self.ratio_slope,
            ),
        }
        if self.history:
            out["training"] = figures.alpha_over_training(self.history)
        return out

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the PNGs, ``noise_report.json`` and ``noise_section.html`` to ``out_dir``."""
        from tailclip.noise.figures import save_figure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {name: save_figure(fig, out / FIGURES[name]) for name, fig in self.figures().items()}
        self.paths["json"] = out / REPORT_JSON
        self.paths["json"].write_text(self.to_json())
        self.paths["html"] = out / HTML_SECTION
        self.paths["html"].write_text(self.html())
        return dict(self.paths)

    def html(self, image_prefix: str = "") -> str:
        """An HTML ``<section>`` with the verdict, a table of the numbers and the saved figures.

        Images are referenced as ``image_prefix + file name`` (call :meth:`save` first).
        """
        t, h, s = self.tail, self.hill, self.sample
        rows = [
            ("Verdict", self.verdict.label),
            ("Tail index (Mohammadi, vector)", f"{t.alpha:.3f} [{t.low:.3f}, {t.high:.3f}], k1 = {t.k1}"),
            ("Tail index (Hill, norms)", f"{h.alpha:.3f} [{h.low:.3f}, {h.high:.3f}], k = {h.k}"),
            (
                "Tail index at 4B",
                "-"
                if self.tail_4b is None
                else f"{self.tail_4b.alpha:.3f} [{self.tail_4b.low:.3f}, {self.tail_4b.high:.3f}]",
            ),
            ("Max-to-sum trend (slope)", f"{self.ratio_slope:.3f}"),
            ("Running-variance exponent", f"{self.variance_exponent:.3f}"),
            ("Outlier ratios rho_mR / rho_eR", f"{self.outliers.rho_mR:.3g} / {self.outliers.rho_eR:.3g}"),
            ("Noise scale B_simple", self.noise_scale.text()),
            (
                "Sample",
                f"n = {s['n']} ({s['mode']}), B = {s['batch_size']}, M = {s['mean_batches']} "
                f"x {s['mean_batch_size']}, step = {s['step']}, d = {s['num_params']}",
            ),
        ]
        table = "\n".join(
            f"    <tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
        )
        reasons = "\n".join(f"    <li>{html.escape(r)}</li>" for r in self.verdict.reasons)
        images = "\n".join(
            f'  <figure><img src="{html.escape(image_prefix + p.name)}" alt="{html.escape(name)}"></figure>'
            for name, p in self.paths.items()
            if p.suffix == ".png"
        )
        return (
            '<section class="tailclip-noise">\n'
            "  <h2>Gradient noise</h2>\n"
            f"  <p>Verdict: <strong>{html.escape(self.verdict.label)}</strong></p>\n"
            f"  <ul>\n{reasons}\n  </ul>\n"
            f"  <table>\n{table}\n  </table>\n"
            f"{images}\n"
            "</section>\n"
        )


def tails_report(
    model: nn.Module,
    loss_fn: LossFn | BatchLoss,
    data: Any,
    out_dir: str | Path,
    *,
    batch_size: int,
    mean_batches: int = 16,
    noise_batches: int = 200,
    per_sample: bool = False,
    seed: int = 0,
    projection_dim: int = 256,
    step: int | None = None,
    history: Sequence[dict[str, Any]] | None = None,
    k1: int = 10,
    ci: float = 0.95,
    n_boot: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> NoiseReport:
    """Collect a noise sample of ``model`` and write its report to ``out_dir``.

    Arguments as :func:`~tailclip.noise.collect_noise` and :meth:`NoiseReport.from_sample`;
    ``history`` (a :class:`~tailclip.noise.TailMonitor` history) adds the alpha-over-training
    figure; ``progress(done, total)`` is called after each batch. Returns the report, whose
    ``paths`` name the written files (JSON, PNGs, HTML section).
    """
    sample = collect_noise(
        model,
        loss_fn,
        data,
        batch_size=batch_size,
        mean_batches=mean_batches,
        noise_batches=noise_batches,
        per_sample=per_sample,
        seed=seed,
        projection_dim=projection_dim,
        step=step,
        progress=progress,
    )
    report = NoiseReport.from_sample(sample, history=history, k1=k1, ci=ci, n_boot=n_boot, seed=seed)
    report.save(out_dir)
    return report
