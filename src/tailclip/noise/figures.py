"""Figures of the noise diagnostics, drawn with matplotlib's object API (no pyplot state).

Each function returns a ``matplotlib.figure.Figure``; :func:`save_figure` writes it as PNG with
the Agg canvas. matplotlib is imported inside the functions, so ``tailclip.noise`` loads
without it.

* :func:`noise_histogram`: the noise-norm histogram against the Gaussian reference, as in Zhang
  et al. (NeurIPS 2020, Fig. 1b/c/f/g): log-spaced bins over the full range of both samples,
  log axes, nothing clamped, so the largest norms stay visible.
* :func:`hill_figure`: the Hill plot ``alpha_k`` against ``k``.
* :func:`moments_figure`: the running variance ``V_m`` (their Fig. 1d/h) and the max-to-sum
  ratio ``R_m(2)``, both against ``m`` on log-log axes.
* :func:`alpha_over_training`: ``alpha`` with its interval over steps from a
  :class:`~tailclip.noise.TailMonitor` history, with the fraction of clipped steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tailclip.noise.estimators import TailIndex


def _figure(width: float = 6.4, height: float = 4.2, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (Agg canvas) to ``path``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def noise_histogram(
    norms: np.ndarray, reference: np.ndarray | None = None, *, bins: int = 60, title: str | None = None
) -> Any:
    """Histogram of the noise norms (fraction of samples per log-spaced bin) and the reference."""
    norms = np.asarray(norms, dtype=np.float64)
    pooled = norms if reference is None else np.concatenate([norms, np.asarray(reference, dtype=np.float64)])
    positive = pooled[pooled > 0]
    low, high = positive.min(), positive.max()
    if high <= low:
        high = low * 1.01
    edges = np.geomspace(low, high * (1 + 1e-9), bins + 1)
    fig, ax = _figure()
    ax.hist(
        norms,
        bins=edges,
        weights=np.full(norms.shape, 1.0 / norms.size),
        color="tab:red",
        alpha=0.6,
        label=f"noise norms ||xi_j|| (n = {norms.size})",
    )
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float64)
        ax.hist(
            reference,
            bins=edges,
            weights=np.full(reference.shape, 1.0 / reference.size),
            histtype="step",
            color="black",
            linewidth=1.5,
            label="Gaussian, same coordinate variances",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("noise norm")
    ax.set_ylabel("fraction of samples per bin")
    ax.set_title(title or "Gradient-noise norms")
    ax.legend(loc="best", fontsize="small")
    return fig


def hill_figure(hill: TailIndex, mohammadi: TailIndex | None = None) -> Any:
    """Hill plot of ``hill`` (a Hill :class:`TailIndex`), with the chosen ``k`` and Mohammadi's alpha."""
    if not hill.hill_k:
        raise ValueError("Invalid hill: no Hill plot data; allowed: a TailIndex from method='hill'")
    k = np.asarray(hill.hill_k)
    alpha = np.asarray(hill.hill_alpha)
    fig, ax = _figure()
    ax.plot(k, alpha, color="tab:blue", label="Hill estimate alpha_k")
    ax.axvline(
        hill.k, color="tab:blue", linestyle=":", label=f"chosen k = {hill.k}: alpha = {hill.alpha:.2f}"
    )
    if mohammadi is not None:
        ax.axhspan(mohammadi.low, mohammadi.high, color="tab:orange", alpha=0.2)
        ax.axhline(mohammadi.alpha, color="tab:orange", label=f"Mohammadi alpha = {mohammadi.alpha:.2f}")
    ax.axhline(2.0, color="gray", linestyle="--", linewidth=1, label="alpha = 2 (finite variance)")
    finite = alpha[np.isfinite(alpha)]
    top = max(3.0, float(np.quantile(finite, 0.9)) * 1.2) if finite.size else 3.0
    ax.set_ylim(0.0, top)
    ax.set_xscale("log")
    ax.set_xlabel("k (number of upper order statistics)")
    ax.set_ylabel("alpha")
    ax.set_title("Hill plot of the noise norms")
    ax.legend(loc="best", fontsize="small")
    return fig


def moments_figure(
    variance: tuple[np.ndarray, np.ndarray],
    ratio: tuple[np.ndarray, np.ndarray],
    *,
    variance_exponent: float | None = None,
    ratio_slope: float | None = None,
) -> Any:
    """Running variance ``V_m`` and max-to-sum ratio ``R_m(2)`` against ``m``, log-log."""
    fig, (left, right) = _figure(width=10.0, ncols=2)
    m, v = variance
    label = "V_m" if variance_exponent is None else f"V_m (slope {variance_exponent:.2f})"
    left.plot(m, v, color="tab:red", label=label)
    left.axhline(v[-1], color="gray", linestyle="--", linewidth=1, label="flat: finite variance")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("sample size m")
    left.set_ylabel("mean squared noise norm")
    left.set_title("Running variance")
    left.legend(loc="best", fontsize="small")
    m, r = ratio
    label = "R_m(2)" if ratio_slope is None else f"R_m(2) (trend slope {ratio_slope:.2f})"
    right.plot(m, r, color="tab:purple", label=label)
    right.plot(
        m,
        np.minimum(1.0, np.log(np.maximum(m, 2)) / m),
        color="gray",
        linestyle="--",
        linewidth=1,
        label="log m / m (Gaussian scale)",
    )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("sample size m")
    right.set_ylabel("max_j ||xi_j||^2 / sum_j ||xi_j||^2")
    right.set_title("Max-to-sum ratio")
    right.legend(loc="best", fontsize="small")
    return fig


def alpha_over_training(history: Sequence[dict[str, Any]]) -> Any:
    """``alpha`` and its interval against the step, and the fraction of clipped steps if logged."""
    if not history:
        raise ValueError("Invalid history: empty; allowed: TailMonitor.history with at least one record")
    steps = np.array([h["step"] for h in history], dtype=np.float64)

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if h.get(key) is None else h[key] for h in history], dtype=np.float64)

    fig, ax = _figure()
    ax.fill_between(
        steps, column("alpha_low"), column("alpha_high"), color="tab:orange", alpha=0.25, label="interval"
    )
    ax.plot(steps, column("alpha"), marker="o", color="tab:orange", label="tail index alpha")
    ax.axhline(2.0, color="gray", linestyle="--", linewidth=1)
    ax.set_ylim(0.0, 2.1)
    ax.set_xlabel("step")
    ax.set_ylabel("alpha")
    ax.set_title("Tail index over training")
    clip = column("clip_fraction")
    if np.isfinite(clip).any():
        twin = ax.twinx()
        twin.plot(
            steps, clip, color="tab:green", linestyle="-.", marker="s", label="clipped steps (fraction)"
        )
        twin.set_ylim(0.0, 1.05)
        twin.set_ylabel("fraction of clipped steps")
        twin.legend(loc="lower right", fontsize="small")
    ax.legend(loc="lower left", fontsize="small")
    return fig
