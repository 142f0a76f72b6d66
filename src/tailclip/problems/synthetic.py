"""``stochastic-quadratic``: R independent runs of an optimizer on a quadratic with heavy-tailed noise.

The problem of the theory experiments in the seeds (Remark 1, Theorem 4, Corollary 7 and
Theorem 8 of Zhang et al., NeurIPS 2020; the quadratic of Chezhegov et al.; the clipping bias
of Koloskova et al., ICML 2023)::

    f(x) = 1/2 (x - x*)^T A (x - x*),   A = diag(a_1, ..., a_d),   a_i = kappa^(-(i-1)/(d-1))
    g_k  = A (x_{k-1} - x*) + xi_k

so ``L = a_1 = 1``, ``mu = a_d = 1/kappa`` (``kappa = condition_number``), ``x* = 0`` and
``f* = 0`` (the problem is translation invariant: the noise does not depend on ``x``), and every
run starts at ``x_0 = x0 * (1, ..., 1)``. The noise is ``xi_k = noise_scale * (1/B) sum_b z_b``
(``B = train.batch_size``), where ``z_b`` in R^d has

* independent coordinates from the family (``isotropic: false``, the coordinate-wise noise
  model of Assumption 2 of Zhang et al.): :func:`tailclip.problems.samplers.sample_noise`;
* or (``isotropic: true``) a uniformly random direction ``u`` and a length ``|z|`` with ``z`` one
  draw of the family: ``z_b = |z| u``, so ``||z_b||`` has exactly the family's tail in any
  dimension (the skewed family has no isotropic form);
* ``noise: none``: ``xi = 0`` (deterministic gradients).

Each of the ``R = runs`` runs draws its own noise from one ``torch.Generator`` seeded with
``train.seed``, and the task applies the configured optimizer to all runs at once through its
functional core (:mod:`tailclip.problems.vectorized`): every run has its own norms and clipping.

Schedules of the theory (both optional):

* ``step_size: inverse``: ``eta_k = lr / (k + 1)`` for step ``k = 1, 2, ...`` (Theorem 4 uses
  ``eta_k = 4 / (mu (k + 1))``: set ``lr = 4 / mu``), times the engine schedule's factor;
* ``threshold: theory``: ``tau_k = max_norm * D * k^(1/alpha)`` (``gamma`` for delta-GClip), the
  threshold of Theorem 4 and Theorem 8 with ``max_norm`` the per-coordinate alpha-moment bound
  ``B`` of Assumption 2. ``D = d^(1/alpha) = ||(B, ..., B)||_alpha / B`` for clipping the whole
  vector (global; layer clipping of the one tensor is the same): the alpha-moment bound of the
  whole gradient's norm, since ``E||g||_2^alpha <= E||g||_alpha^alpha = sum_i E|g_i|^alpha``
  (Corollary 7); ``D = 1`` for coordinate clipping, each coordinate with its own bound
  (Theorem 8). The exponent ``1/alpha`` balances the clipping bias
  ``E|g| 1{|g| > tau} <= G^alpha tau^(1 - alpha)`` against the variance term
  ``eta_k E min(|g|, tau)^2 <= eta_k G^alpha tau^(2 - alpha)``, which gives the rate
  ``k^(-2(alpha - 1)/alpha)`` of Theorem 4.

Averaging (optional): ``average: weighted`` is Theorem 4's output
``xbar_k = sum_{j=1..k} j x_{j-1} / sum_{j=1..k} j``; ``average: uniform`` is the mean of
``x_j`` for ``average_start < j <= k`` (tail averaging; ``xbar_k = x_k`` before).

Metrics, each a tensor of shape ``(R,)`` (one value per run): after step ``k``, ``error``
``f(x_k) - f*``, ``sq_dist`` ``||x_k - x*||^2`` and ``clipped`` (1 if the optimizer clipped in
this step: its mean over runs is the fraction of runs clipped); with averaging also
``avg_error`` ``f(xbar_k) - f*`` and ``avg_sq_dist``. ``evaluate()`` adds ``clip_fraction``, the
fraction of the steps so far in which each run was clipped.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from tailclip.problems.quadratic import eigenvalues
from tailclip.problems.samplers import NOISE_FAMILIES, sample_noise, sample_noise_vectors
from tailclip.problems.task import ModelTwin, TaskContext, TaskOptions, VectorizedTask, register_task
from tailclip.problems.vectorized import VectorizedOptimizer, make_vectorized_optimizer

__all__ = ["StochasticQuadratic", "StochasticQuadraticOptions", "theory_threshold_factor"]

NoiseFamily = Literal["stable", "pareto", "student_t", "gaussian", "skewed", "none"]
if set(NoiseFamily.__args__) != {*NOISE_FAMILIES, "none"}:
    raise ImportError(
        f"stochastic-quadratic: NoiseFamily is out of sync with NOISE_FAMILIES {NOISE_FAMILIES}"
    )


class StochasticQuadraticOptions(TaskOptions):
    """Options of ``stochastic-quadratic`` (see the module docstring).

    ``alpha`` is the tail index of the stable, pareto and skewed families and the alpha of the
    ``theory`` threshold; ``df`` is Student's degrees of freedom.
    """

    runs: int = Field(1000, ge=1, le=100_000_000)
    dim: int = Field(1, ge=1, le=10_000_000)
    condition_number: float = Field(1.0, ge=1.0)
    x0: float = 1.0
    noise: NoiseFamily = "pareto"
    alpha: float = Field(1.5, gt=0.0)
    df: float = Field(3.0, gt=0.0)
    noise_scale: float = Field(1.0, ge=0.0)
    isotropic: bool = False
    step_size: Literal["constant", "inverse"] = "constant"
    threshold: Literal["constant", "theory"] = "constant"
    average: Literal["none", "weighted", "uniform"] = "none"
    average_start: int = Field(0, ge=0)
    dtype: Literal["float32", "float64"] = "float64"

    @model_validator(mode="after")
    def _check(self) -> StochasticQuadraticOptions:
        if self.noise != "none":
            sample_noise(self.noise, (1,), alpha=self.alpha, df=self.df, generator=torch.Generator())
        if self.isotropic and self.noise == "skewed":
            raise ValueError("isotropic: true with noise 'skewed'; allowed: isotropic false for skewed noise")
        if self.threshold == "theory" and not 1.0 < self.alpha <= 2.0:
            raise ValueError(f"alpha: {self.alpha} with threshold 'theory'; allowed: 1 < alpha <= 2")
        if self.average_start and self.average != "uniform":
            raise ValueError(
                "average_start: set without averaging; allowed: average 'uniform' with average_start"
            )
        return self


def theory_threshold_factor(clip_mode: str | None, dim: int, alpha: float, step: int) -> float:
    """``D k^(1/alpha)``: ``tau_k / B`` of the ``theory`` threshold (``D = d^(1/alpha)`` unless ``coord``)."""
    dimension = 1.0 if clip_mode == "coord" else dim ** (1.0 / alpha)
    return dimension * step ** (1.0 / alpha)


@register_task("stochastic-quadratic")
class StochasticQuadratic(VectorizedTask):
    """R independent runs on a diagonal quadratic with heavy-tailed gradient noise (module docstring)."""

    Options = StochasticQuadraticOptions
    options: StochasticQuadraticOptions

    def __init__(self, options: StochasticQuadraticOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        o = options
        self.dtype = getattr(torch, o.dtype)
        self.eigenvalues = eigenvalues(o.dim, o.condition_number).to(self.device, self.dtype)
        self.x = torch.full((o.runs, o.dim), o.x0, dtype=self.dtype, device=self.device)
        self.optimizer: VectorizedOptimizer = make_vectorized_optimizer(
            context.optimizer_name, self.x, context.hyperparameters
        )
        _check_threshold(o, self.optimizer)
        self.generator = torch.Generator().manual_seed(context.seed)
        self.t = 0
        self.avg_sum = torch.zeros_like(self.x) if o.average != "none" else None
        self.avg_weight = 0.0
        self.clip_count = torch.zeros(o.runs, dtype=self.dtype, device=self.device)

    @classmethod
    def check_config(cls, options: StochasticQuadraticOptions, context: TaskContext) -> None:
        """Called when a config is loaded: the optimizer must have a vectorized form (and a threshold)."""
        try:
            optimizer = make_vectorized_optimizer(
                context.optimizer_name, torch.zeros(1, 1), context.hyperparameters
            )
        except ValueError as exc:
            raise ValueError(f"optimizer: {exc}") from None
        _check_threshold(options, optimizer)

    @classmethod
    def model_twin(cls, options: StochasticQuadraticOptions) -> ModelTwin:
        """``noisy-quadratic`` with this problem, noise and start (``x* = 0``, ``x_0 = x0 (1, ..., 1)``).

        One run each: the runs become the twin's seeds. The theory's schedules (``step_size:
        inverse``, ``threshold: theory``) and averaging are devices of the experiments, not of the
        problem; the twin trains at the optimizer's constant step size and threshold and reports
        the last iterate.
        """
        o = options
        if o.noise == "none":
            raise ValueError(
                "task.options.noise: 'none' has no gradient noise to advise on; allowed: "
                + ", ".join(NOISE_FAMILIES)
            )
        why = {
            "runs": "each run of the twin is one seed",
            "step_size": "the twin trains at constant step sizes, tuned per optimizer",
            "threshold": "the twin clips at constant thresholds",
            "average": "the twin reports the last iterate",
            "average_start": "the twin reports the last iterate",
        }
        defaults = StochasticQuadraticOptions()
        changed = [key for key in why if key == "runs" or getattr(o, key) != getattr(defaults, key)]
        not_carried = tuple(f"{key}: {getattr(o, key)!r} ({why[key]})" for key in changed)
        resets = {key: getattr(defaults, key) for key in changed if key != "runs"}
        options_ = {
            "dim": o.dim,
            "condition_number": o.condition_number,
            "noise": o.noise,
            "alpha": o.alpha,
            "df": o.df,
            "scale": o.noise_scale,
            "isotropic": o.isotropic,
            "start": o.x0,
            "dtype": o.dtype,
        }
        return ModelTwin("noisy-quadratic", options_, not_carried, resets)

    @property
    def runs(self) -> int:
        return self.options.runs

    # ------------------------------------------------------------------ the problem

    def noise(self) -> Tensor:
        """``xi_k`` for every run, shape ``(R, d)`` (one batch of draws from the task's generator)."""
        o = self.options
        shape = (self.context.batch_size, o.runs, o.dim)
        if o.noise == "none":
            return torch.zeros(shape[1:], dtype=self.dtype, device=self.device)
        draws = sample_noise_vectors(
            o.noise,
            shape,
            isotropic=o.isotropic,
            alpha=o.alpha,
            df=o.df,
            generator=self.generator,
            dtype=self.dtype,
        )
        xi = draws[0] if shape[0] == 1 else draws.mean(dim=0)
        return (o.noise_scale * xi).to(self.device)

    def objective(self, x: Tensor) -> Tensor:
        """``f(x) - f* = 1/2 sum_i a_i x_i^2`` per run."""
        return 0.5 * (self.eigenvalues * x * x).sum(dim=-1)

    def step_size(self, lr_factor: float) -> float:
        """``eta_k`` of the current step ``k = self.t``."""
        lr = self.optimizer.lr * lr_factor
        return lr / (self.t + 1) if self.options.step_size == "inverse" else lr

    def threshold(self) -> float | None:
        """``tau_k`` of the current step (``None``: the optimizer's own, constant, threshold)."""
        o = self.options
        if o.threshold == "constant":
            return None
        base = self.optimizer.threshold
        assert base is not None
        return base * theory_threshold_factor(self.optimizer.clip_mode, o.dim, o.alpha, self.t)

    def averaged(self) -> Tensor:
        """``xbar_k`` (``x_k`` when no iterate has been averaged yet)."""
        if self.avg_sum is None or self.avg_weight == 0:
            return self.x
        return self.avg_sum / self.avg_weight

    # ------------------------------------------------------------------ the task protocol

    def step(self, lr_factor: float) -> dict[str, Tensor]:
        o = self.options
        self.t += 1
        if o.average == "weighted":
            self.avg_sum.add_(self.x, alpha=self.t)  # type: ignore[union-attr]
            self.avg_weight += self.t
        gradient = self.eigenvalues * self.x + self.noise()
        stats = self.optimizer.step(
            self.x, gradient, lr=self.step_size(lr_factor), threshold=self.threshold()
        )
        if o.average == "uniform" and self.t > o.average_start:
            self.avg_sum.add_(self.x)  # type: ignore[union-attr]
            self.avg_weight += 1
        clipped = stats.clipped.to(self.dtype)
        self.clip_count.add_(clipped)
        metrics = {
            "error": self.objective(self.x),
            "sq_dist": (self.x * self.x).sum(dim=-1),
            "clipped": clipped,
        }
        if o.average != "none":
            xbar = self.averaged()
            metrics["avg_error"] = self.objective(xbar)
            metrics["avg_sq_dist"] = (xbar * xbar).sum(dim=-1)
        return metrics

    def evaluate(self) -> dict[str, Tensor]:
        metrics = {
            "error": self.objective(self.x),
            "sq_dist": (self.x * self.x).sum(dim=-1),
            "clip_fraction": self.clip_count / max(self.t, 1),
        }
        if self.options.average != "none":
            xbar = self.averaged()
            metrics["avg_error"] = self.objective(xbar)
            metrics["avg_sq_dist"] = (xbar * xbar).sum(dim=-1)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "x": self.x.clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "t": self.t,
            "avg_sum": None if self.avg_sum is None else self.avg_sum.clone(),
            "avg_weight": self.avg_weight,
            "clip_count": self.clip_count.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x.copy_(state["x"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.t = int(state["t"])
        if self.avg_sum is not None:
            self.avg_sum.copy_(state["avg_sum"])
        self.avg_weight = float(state["avg_weight"])
        self.clip_count.copy_(state["clip_count"])


def _check_threshold(options: StochasticQuadraticOptions, optimizer: VectorizedOptimizer) -> None:
    if options.threshold == "theory" and optimizer.clip_mode is None:
        raise ValueError(
            f"task.options.threshold: 'theory' needs a clipping threshold, but {optimizer.name} "
            f"{'has none' if optimizer.threshold_key is None else 'does not clip (clip: null)'}; "
            "allowed: 'constant', or an optimizer that clips"
        )
