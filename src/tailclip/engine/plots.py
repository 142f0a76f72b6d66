"""Figure helpers of the report: compact PNGs, one colour per method, legends outside the axes.

* :func:`png_figure` draws a matplotlib figure (Agg) into a palette PNG (at most 96 colours,
  optimised): a line plot compresses 3-5x smaller than the RGBA original.
* :class:`Styles` gives every configuration a colour and a line style: the colour belongs to
  the *method* (:func:`tailclip.engine.labels.method_name`), so the same method has the same
  colour in every figure of a report; configurations of one method differ by line style and
  shade.
* :func:`legend_outside` puts the legend to the right of (or below) the axes, never over the
  data; :func:`curves_figure` and :func:`survival_figure` are the per-metric figures.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from tailclip.engine.statistics import QuantileBand, best_direction

__all__ = [
    "HEADLINE_DPI",
    "MAX_LINES",
    "Styles",
    "compact_png",
    "curves_figure",
    "legend_outside",
    "log_ticks",
    "png_base64",
    "png_figure",
    "shade",
    "survival_figure",
    "thin",
    "use_log",
]

MAX_LINES = 8
DPI = 80
HEADLINE_DPI = 100
# Fixed colours of the known methods: unclipped methods in warm colours, clipped ones in cool.
_METHOD_COLORS = {
    "SGD": "#6e6e6e", "GClip": "#1f6fb4", "CClip": "#2ca02c", "LClip": "#9467bd",
    "Adam": "#e6550d", "AdamW": "#bcbd22", "AdaGrad": "#8c564b", "ACClip": "#17becf", "δ-GClip": "#3182bd",
    "AdaGrad-Norm": "#d62728", "AdaGrad-Norm (delayed)": "#ff7f0e",
    "Clip-AdaGrad-Norm": "#17becf", "Clip-AdaGrad-Norm (delayed)": "#393b79",
    "Adam-Norm": "#8c564b", "Adam-Norm (delayed)": "#e377c2",
    "Clip-Adam-Norm": "#637939", "Clip-Adam-Norm (delayed)": "#3182bd",
    "Clip-Adam": "#393b79", "AGNI (AdamW)": "#7b4173",
}
_EXTRA = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
_DASHES = ("-", "--", ":", "-.")


class Styles:
    """Colour per method (fixed for the known methods, else by a hash of the name) and, within a
    method, a line style and shade per configuration, in the order first seen."""

    def __init__(self) -> None:
        self._variants: dict[str, list[str]] = {}

    @staticmethod
    def color(method: str) -> str:
        """The colour of ``method``, the same in every figure."""
        if method in _METHOD_COLORS:
            return _METHOD_COLORS[method]
        return _EXTRA[zlib.crc32(method.encode()) % len(_EXTRA)]

    def __call__(self, method: str, config: str) -> dict[str, Any]:
        """``color`` and ``linestyle`` keyword arguments for configuration ``config`` of ``method``."""
        variants = self._variants.setdefault(method, [])
        if config not in variants:
            variants.append(config)
        index = variants.index(config)
        return {"color": shade(self.color(method), index), "linestyle": _DASHES[(index // len(_SHADES)) % 4]}


# Lightness steps of the variants of one method: the method's colour, lighter, darker, ...
_SHADES = (0.0, 0.5, -0.45, 0.75)


def shade(color: str, index: int) -> tuple[float, float, float]:
    """``color`` made lighter (towards white) or darker (towards black) for variant ``index``."""
    rgb = np.array(mcolors.to_rgb(color))
    step = _SHADES[index % len(_SHADES)]
    mixed = rgb + (1.0 - rgb) * step if step >= 0 else rgb * (1.0 + step)
    return (float(mixed[0]), float(mixed[1]), float(mixed[2]))


def log_ticks(ax: Any, values: Sequence[float]) -> None:
    """Label a log x axis at exactly ``values`` (plain numbers), no minor labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(list(values), [f"{v:g}" for v in values])
    ax.xaxis.set_minor_formatter(NullFormatter())


def png_figure(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` as a compact PNG: drawn at ``dpi``, then :func:`compact_png`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return compact_png(buffer.getvalue())


def compact_png(data: bytes) -> bytes:
    """A PNG (or JPEG) of a plot as a 96-colour palette PNG, optimised; ``data`` itself when
    that is not smaller. Plots have few colours, so the palette loses nothing visible."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, format="PNG", optimize=True
    )
    return out.getvalue() if out.tell() < len(data) else data


def png_base64(fig: Figure, dpi: int = DPI) -> str:
    """:func:`png_figure` as base64 text for a ``data:`` URI."""
    return base64.b64encode(png_figure(fig, dpi)).decode("ascii")


def legend_outside(ax: Any, *, below: bool = False) -> None:
    """The legend of ``ax``'s labelled lines beside the axes (right), or below them; the
    constrained layout makes room for it."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if below:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2, fontsize=7.5,
                  frameon=False)
    else:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def thin(steps: np.ndarray, *columns: np.ndarray, points: int = 1500) -> tuple[np.ndarray, ...]:
    """Every k-th point (and the last) so that at most about ``points`` remain: a 600-pixel-wide
    plot shows no difference, and drawing 10^4-point lines costs seconds."""
    stride = max(1, len(steps) // points)
    if stride == 1:
        return (steps, *columns)
    index = np.unique(np.append(np.arange(0, len(steps), stride), len(steps) - 1))
    return (steps[index], *(c[index] for c in columns))


def use_log(values: Sequence[np.ndarray], key: str) -> bool:
    """Log scale for a positive loss-like metric spanning more than a factor 50."""
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values] or [np.zeros(0)])
    if finite.size == 0 or np.any(finite <= 0) or best_direction(key) != "min" or key.startswith("opt/"):
        return False
    return float(finite.max()) / float(finite.min()) > 50.0


def curves_figure(
    key: str,
    bands: Sequence[QuantileBand],
    styles: Styles,
    methods: Mapping[str, str],
    labels: Mapping[str, str],
    *,
    what: str,
) -> Figure:
    """Median against the step with the outer band shaded, one line per band (configuration),
    panels of at most ``MAX_LINES`` lines; legend outside."""
    chunks = [bands[i : i + MAX_LINES] for i in range(0, len(bands), MAX_LINES)] or [[]]
    fig = Figure(figsize=(7.2, 2.8 * len(chunks)), layout="constrained")
    axes = fig.subplots(len(chunks), 1, squeeze=False)[:, 0]
    log = use_log([b.values for b in bands], key)
    for ax, chunk in zip(axes, chunks, strict=True):
        for band in chunk:
            style = styles(methods[band.id], band.id)
            qs = band.quantiles
            mid = band.at(0.5) if 0.5 in qs else band.values.mean(axis=1)
            steps, mid, low, high = thin(band.steps, mid, band.values[:, 0], band.values[:, -1])
            ax.plot(steps, mid, lw=1.4, label=labels[band.id], **style)
            if len(qs) >= 2:
                ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, lw=0)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        legend_outside(ax)
    fig.suptitle(f"{key}: {what}", fontsize=9)
    return fig


def survival_figure(
    key: str, samples: Mapping[str, np.ndarray], styles: Styles, methods: Mapping[str, str],
    labels: Mapping[str, str],
) -> Figure:
    """Empirical survival function ``P(X > x)`` of per-run final values, log-log, one line per
    configuration (a straight tail is a power law)."""
    fig = Figure(figsize=(7.2, 3.0), layout="constrained")
    ax = fig.add_subplot()
    log = True
    for ident, values in list(samples.items())[:MAX_LINES]:
        finite = np.sort(values[np.isfinite(values)])
        if finite.size == 0:
            continue
        survival = 1.0 - np.arange(finite.size) / finite.size
        log = log and bool(np.all(finite > 0))
        ax.step(finite, survival, where="post", lw=1.3, label=f"{labels[ident]} (R={finite.size})",
                **styles(methods[ident], ident))
    if log:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"final {key}")
    ax.set_ylabel("P(X > x)")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax)
    return fig
