"""Step 2 of ``tailclip advise``: the optimizers worth a bake-off, each with the reason it is there.

Always: the config's own optimizer (its spec without the keys left at their defaults) and AdamW
(the default a user would reach for; left out when the config's optimizer is already Adam-like).
Clipping at the measured gradient-norm quantiles (``q50`` of the warm-up norms ``||g_t||``, the
threshold a 50th percentile AutoClip rule settles on): global clipping (GClip), its adaptive-threshold variant
(AutoClip at the 50th percentile) and coordinate clipping (CClip) at the root-mean-square
coordinate ``q50 / sqrt(d)``. Where the noise is heavy-tailed or inconclusive: clipped Adam
(Chezhegov et al.: clipping repairs Adam's high-probability convergence under heavy tails) and
ACClip (Zhang et al., NeurIPS 2020). Where the noise is light-tailed: AGNI around AdamW (noise
scaled by the observed gradient variance, added before the step: a regulariser for a noise that
has no tails to tame; the running (EMA) variance, which gives noise with one micro-batch per step,
where the paper's micro-batch variance gives none). Where local smoothness grows with the gradient norm:
delta-GClip (Tucat et al., TMLR 2025; Zhang et al., ICLR 2020: clipped steps provably beat fixed
ones under (L0, L1)-smoothness).

Each candidate gets a learning-rate range ``[lr_ref / 30, 30 lr_ref]``. ``lr_ref`` is the config's
step size when the candidate is of the config's family (SGD-like or Adam-like), else ``(1 - beta)
/ L`` for SGD-like rules (``L`` the median probed smoothness, ``beta`` the momentum) and ``1e-2``
for Adam-like ones.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from tailclip.advise._engine import optimizer_class
from tailclip.advise.measure import Measurement

__all__ = ["Candidate", "choose_candidates", "is_clipped", "lr_of", "with_lr"]

SGD_FAMILY = ("sgd", "clip_sgd", "delta_gclip", "acclip", "nsgd")
ADAM_FAMILY = ("adam", "adamw", "clip_adam")
ADAM_DEFAULT_LR = 1e-2
LR_SPAN = 30.0


@dataclass(frozen=True)
class Candidate:
    """An optimizer spec without ``lr`` (``spec``), its learning-rate range, and why it is a candidate."""

    label: str
    spec: dict[str, Any]
    lr_low: float
    lr_high: float
    reason: str
    clipped: bool = field(default=False)

    def with_lr(self, lr: float) -> dict[str, Any]:
        """The full optimizer spec at ``lr`` (what a config's ``optimizer:`` section holds)."""
        return with_lr(self.spec, lr)

    def lr_grid(self, points: int) -> list[float]:
        """``points`` step sizes, log-spaced over ``[lr_low, lr_high]`` (3 significant digits)."""
        if points == 1:
            return [float(f"{math.sqrt(self.lr_low * self.lr_high):.3g}")]
        ratio = self.lr_high / self.lr_low
        return [float(f"{self.lr_low * ratio ** (i / (points - 1)):.3g}") for i in range(points)]


def with_lr(spec: dict[str, Any], lr: float) -> dict[str, Any]:
    """``spec`` with step size ``lr`` (3 significant digits; AGNI's goes to its base optimizer)."""
    if spec.get("name") == "noise_injection":
        return {**spec, "base_optimizer": with_lr(spec.get("base_optimizer") or {}, lr)}
    return {**spec, "lr": float(f"{lr:.3g}")}


def lr_of(spec: dict[str, Any]) -> float:
    """The step size of an optimizer spec (AGNI's is its base optimizer's); 0 when absent."""
    if spec.get("name") == "noise_injection":
        return lr_of(spec.get("base_optimizer") or {})
    return float(spec.get("lr") or 0.0)


def without_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without the plain keyword arguments equal to the constructor's defaults (AGNI's base too)."""
    parameters = inspect.signature(optimizer_class(spec["name"])).parameters
    out = {}
    for key, value in spec.items():
        default = parameters[key].default if key in parameters else inspect.Parameter.empty
        default = list(default) if isinstance(default, tuple) else default  # YAML has lists, not tuples
        if key == "base_optimizer" and isinstance(value, dict):
            out[key] = without_defaults(value)
        elif key == "name" or isinstance(value, dict) or value != default:
            out[key] = value
    return out


def is_clipped(spec: dict[str, Any]) -> bool:
    """Whether a spec clips: delta-GClip and ACClip always, ``clip_*`` rules unless ``clip`` is null."""
    name = spec.get("name")
    if name == "noise_injection":
        return is_clipped(spec.get("base_optimizer") or {})
    if name in ("delta_gclip", "acclip"):
        return True
    return (
        str(name).startswith("clip_")
        and spec.get("clip", "global" if name == "clip_sgd" else None) is not None
    )


def _family(name: str) -> str:
    return "adam" if name in ADAM_FAMILY or name == "noise_injection" else "sgd"


def choose_candidates(config_optimizer: dict[str, Any], measurement: Measurement) -> list[Candidate]:
    """The candidates for ``config_optimizer`` (a resolved optimizer spec) given ``measurement``."""
    own = without_defaults(dict(config_optimizer))
    own_lr = lr_of(own)
    own.pop("lr", None)
    own_family = _family(own["name"])
    momentum = float(own.get("momentum", 0.0)) if own["name"] in ("sgd", "clip_sgd") else 0.0
    smooth = [v for v in measurement.smoothness.smoothness if math.isfinite(v) and v > 0]
    curvature = sorted(smooth)[len(smooth) // 2] if smooth else math.nan

    def lr_ref(family: str) -> float:
        if family == own_family and own_lr > 0:
            return own_lr
        if family == "adam":
            return ADAM_DEFAULT_LR
        return (1.0 - momentum) / curvature if math.isfinite(curvature) else 0.01

    def make(label: str, spec: dict[str, Any], reason: str, family: str | None = None) -> Candidate:
        ref = lr_ref(family or _family(spec["name"]))
        return Candidate(label, spec, ref / LR_SPAN, ref * LR_SPAN, reason, is_clipped(spec))

    verdict = measurement.verdict
    q50 = float(f"{measurement.grad_norm_quantiles['q50']:.3g}")
    coord = float(f"{measurement.coordinate_rms_median:.3g}")
    # from the resolved spec: AdamW's default 0.01 is the config's weight decay too
    weight_decay = float(config_optimizer.get("weight_decay", 0.0) or 0.0)
    heavy_ball = {"momentum": momentum} if momentum else {}
    out = [
        make("yours", own, f"the config's own optimizer ({own['name']}), the baseline to beat", own_family),
        make(
            "adamw",
            {"name": "adamw", "weight_decay": weight_decay},
            "AdamW, the default most users reach for",
        ),
        make(
            "gclip",
            {"name": "clip_sgd", **heavy_ball, "clip": "global", "max_norm": q50},
            f"global clipping at the median warm-up gradient norm ({q50:.3g})",
        ),
        make(
            "autoclip",
            {
                "name": "clip_sgd",
                **heavy_ball,
                "clip": "global",
                "max_norm": {"policy": "autoclip", "percentile": 50.0},
            },
            "global clipping with an adaptive threshold (AutoClip, running 50th percentile of the norms)",
        ),
        make(
            "cclip",
            {"name": "clip_sgd", **heavy_ball, "clip": "coord", "max_norm": coord},
            f"coordinate clipping at the RMS coordinate of the median norm ({coord:.3g}): sign-like steps",
        ),
    ]
    if verdict != "light-tailed":
        q90 = float(f"{measurement.grad_norm_quantiles['q90']:.3g}")
        out.append(
            make(
                "clip-adam",
                {"name": "clip_adam", "clip": "global", "max_norm": q90, "weight_decay": weight_decay},
                f"noise {verdict}: clipping repairs Adam's high-probability convergence under heavy tails "
                f"(Chezhegov et al.); threshold at the q90 norm ({q90:.3g})",
            )
        )
        out.append(
            make(
                "acclip",
                {"name": "acclip"},
                f"noise {verdict}: ACClip's adaptive coordinate thresholds (Zhang et al., NeurIPS 2020)",
                "sgd",
            )
        )
    if verdict == "light-tailed":
        out.append(
            make(
                "agni",
                {
                    "name": "noise_injection",
                    "eta": 0.01,
                    "variance": "ema",
                    "base_optimizer": {"name": "adamw", "weight_decay": weight_decay},
                },
                "noise light-tailed: AGNI adds noise scaled by the observed gradient variance before AdamW "
                "(a regulariser; running variance, so one micro-batch per step still gives noise)",
            )
        )
    if measurement.smoothness.grows:
        out.append(
            make(
                "delta-gclip",
                {"name": "delta_gclip", "gamma": q50, "delta": 0.01},
                f"local smoothness grows with the gradient norm (L1 = {measurement.smoothness.l1:.3g}): "
                "clipped steps provably beat fixed ones (Zhang et al., ICLR 2020); delta-GClip keeps a floor",
            )
        )
    if own["name"] in ("adam", "adamw"):  # AdamW would repeat the baseline
        out = [c for c in out if c.label != "adamw"]
    seen: set[str] = set()
    unique = []
    for candidate in out:  # the config's own optimizer may coincide with a proposed one
        key = repr(sorted(candidate.spec.items()))
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique
