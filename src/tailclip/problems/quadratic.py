"""``noisy-quadratic``: a quadratic with heavy-tailed additive gradient noise, trained by any optimizer.

The objective (the setting of Remark 1 of Zhang et al., NeurIPS 2020, in ``d`` dimensions)::

    f(x) = 1/2 (x - x*)^T A (x - x*),   A = diag(a_1, ..., a_d),   a_i = kappa^(-(i-1)/(d-1))

so ``L = a_1 = 1``, ``mu = a_d = 1/kappa`` (``kappa = condition_number``), ``f* = 0``; ``x*`` is
drawn from ``N(0, I_d)`` with ``instance_seed`` (one problem instance across training seeds)
and ``x_0 = 0``; with ``start: s`` instead ``x* = 0`` and ``x_0 = s (1, ..., 1)``, one run of
``stochastic-quadratic`` (its ``x0``). The stochastic gradient of step ``t`` is::

    g_t = A (x_t - x*) + xi_t,   xi_t = scale * (1/B) sum_{b=1..B} z_b

with ``B = train.batch_size`` and ``z_b`` vectors of iid coordinates from the noise family
(``isotropic: true``: a uniformly random direction whose length is one draw of the family;
:func:`tailclip.problems.samplers.sample_noise_vectors`; ``student_t`` with ``df <= 2`` has
infinite variance: the heavy-tailed regime of the clipping papers), drawn from a
``torch.Generator`` seeded with ``train.seed``. It is realised as the gradient of ``f(x) + <xi_t, x>``, so any
``torch.optim`` optimizer trains it unchanged.

Metrics: ``train/loss`` is the exact ``f(x_{t-1}) - f*`` at the point where the gradient was
taken (not the noisy surrogate), ``train/noise_norm`` is ``||xi_t||``; ``eval/loss`` is
``f(x_t) - f*`` and ``eval/distance`` is ``||x_t - x*||``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from tailclip.problems.samplers import NOISE_FAMILIES, sample_noise_vectors
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = ["NoisyQuadratic", "NoisyQuadraticOptions", "QuadraticModel"]

NoiseFamily = Literal["stable", "pareto", "student_t", "gaussian", "skewed"]
if set(NoiseFamily.__args__) != set(NOISE_FAMILIES):
    raise ImportError(f"noisy-quadratic: NoiseFamily is out of sync with NOISE_FAMILIES {NOISE_FAMILIES}")


class NoisyQuadraticOptions(TaskOptions):
    """Options of ``noisy-quadratic``; ``alpha`` is the tail index of stable/pareto/skewed noise."""

    dim: int = Field(10, ge=1, le=10_000_000)
    condition_number: float = Field(10.0, ge=1.0)
    noise: NoiseFamily = "student_t"
    df: float = Field(1.5, gt=0.0)
    alpha: float = Field(1.5, gt=0.0)
    scale: float = Field(1.0, ge=0.0)
    isotropic: bool = False
    start: float | None = None
    instance_seed: int = Field(0, ge=0, lt=2**63)
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _check_family_parameters(self) -> NoisyQuadraticOptions:
        sample_noise_vectors(
            self.noise,
            (1,),
            isotropic=self.isotropic,
            alpha=self.alpha,
            df=self.df,
            generator=torch.Generator(),
        )
        return self


class QuadraticModel(nn.Module):
    """The iterate ``x`` (the one parameter, from ``x0``, default 0), the fixed ``A = diag(eigenvalues)``
    and ``x*``."""

    def __init__(self, eigenvalues: Tensor, x_star: Tensor, x0: Tensor | None = None) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.zeros_like(x_star) if x0 is None else x0.clone())
        self.register_buffer("eigenvalues", eigenvalues)
        self.register_buffer("x_star", x_star)

    def objective(self) -> Tensor:
        """``f(x) = 1/2 sum_i a_i (x_i - x*_i)^2``."""
        return 0.5 * (self.eigenvalues * (self.x - self.x_star) ** 2).sum()

    def distance(self) -> Tensor:
        """``||x - x*||``."""
        return torch.linalg.vector_norm(self.x - self.x_star)


def eigenvalues(dim: int, condition_number: float) -> Tensor:
    """``a_i = kappa^(-(i-1)/(d-1))``, geometric from 1 to ``1/kappa`` (float64)."""
    if dim == 1:
        return torch.ones(1, dtype=torch.float64)
    exponents = torch.arange(dim, dtype=torch.float64) / (dim - 1)
    return torch.tensor(float(condition_number), dtype=torch.float64) ** (-exponents)


@register_task("noisy-quadratic")
class NoisyQuadratic(ModelTask):
    """A diagonal quadratic with additive heavy-tailed gradient noise (see the module docstring)."""

    Options = NoisyQuadraticOptions
    options: NoisyQuadraticOptions

    def __init__(self, options: NoisyQuadraticOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        self.dtype = getattr(torch, options.dtype)
        if options.start is None:
            instance = torch.Generator().manual_seed(options.instance_seed)
            x_star, x0 = torch.randn(options.dim, generator=instance, dtype=torch.float64), None
        else:
            x_star = torch.zeros(options.dim, dtype=torch.float64)
            x0 = torch.full((options.dim,), options.start, dtype=self.dtype)
        self.model = QuadraticModel(
            eigenvalues(options.dim, options.condition_number).to(self.dtype), x_star.to(self.dtype), x0
        ).to(self.device)
        self.noise_generator = torch.Generator().manual_seed(context.seed)

    def train_batch(self, batch_size: int | None = None) -> Tensor:
        """``xi_t``: the mean of ``B`` noise vectors times ``scale``, on the task's device."""
        o = self.options
        size = batch_size or self.context.batch_size
        draws = sample_noise_vectors(
            o.noise,
            (size, o.dim),
            isotropic=o.isotropic,
            alpha=o.alpha,
            df=o.df,
            generator=self.noise_generator,
        )
        return (o.scale * draws.mean(dim=0)).to(self.device, self.dtype)

    def loss(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        objective = self.model.objective()
        surrogate = objective + torch.dot(batch, self.model.x)
        return surrogate, {"loss": objective.detach(), "noise_norm": torch.linalg.vector_norm(batch)}

    def evaluate(self) -> dict[str, Any]:
        return {"loss": self.model.objective(), "distance": self.model.distance()}

    def data_state(self) -> dict[str, Any]:
        return {"noise_generator": self.noise_generator.get_state()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.noise_generator.set_state(state["noise_generator"])
