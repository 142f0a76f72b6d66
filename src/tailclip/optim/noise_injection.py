"""NoiseInjection: adaptive gradient noise injection (AGNI) in front of any torch optimizer.

AGNI ("Adaptive Gradient Noise Injection for Improved Transformer Fine Tuning") perturbs each
parameter tensor's gradient with Gaussian noise scaled by the observed gradient variance and
by the gradient's own norm, then lets the base optimizer (AdamW in the paper) step::

    g <- g + z * sqrt(eta sigma^2) * ||g||,        z ~ N(0, I),   eta = 0.01

``sigma^2`` is a per-coordinate variance and ``||g||`` the Euclidean norm of the tensor's
gradient ``g`` (per tensor, as the published code's ``torch.norm(p.grad)``). Two estimators of
``sigma^2`` are offered (``variance=``):

* ``"microbatch"`` (the paper's): the unbiased sample variance of the gradients of the
  micro-batches accumulated into the step. Call :meth:`NoiseInjection.accumulate` after each
  micro-batch's backward; it records ``d_k = p.grad - (p.grad at the previous call)``, the
  *increment* of the accumulated gradient, exactly as the user's loss scales it (a loss divided
  by ``K`` micro-batches records ``d_k = g_k / K``, so ``sigma^2 = Var(g_k) / K^2``). Over the
  ``n`` records of a step::

      sigma^2 = 1/(n-1) sum_k (d_k - dbar)^2 = (S2 - S1^2 / n) / (n-1),   S1 = sum_k d_k,  S2 = sum_k d_k^2

  ``S1`` is the accumulated gradient itself (kept as the snapshot the next increment needs).
  ``S2`` is summed in float64: ``S2 - S1^2 / n`` keeps about 9 more digits than in float32, and
  the squares of gradients scaled by a ``GradScaler`` (up to 2^127) do not overflow.

  With ``n < 2`` the variance is zero and the published code silently adds no noise; here the
  step still adds none, but warns (once per optimizer) and names ``variance="ema"`` as the fix.
  A parameter first seen at record ``k`` counts as zero in the ``k - 1`` records before.
  ``g`` is ``p.grad`` at :meth:`~NoiseInjection.step`. If it was rescaled after the last record
  (``GradScaler.unscale_``, clipping), sigma follows it into the units of ``g``:
  ``sigma^2 <- c^2 sigma^2`` with ``c = ||g|| / ||sum_k d_k||`` per tensor (``c = 1`` when ``p.grad``
  is untouched). Gradients must be zeroed between steps, as in any accumulation loop;
  :meth:`~NoiseInjection.zero_grad` also discards the records of a step that was not taken
  (a step ``GradScaler`` skipped).

* ``"ema"``: an exponentially weighted per-coordinate variance of the step gradients ``g_t``
  across steps (``beta = ema_beta``; ``beta_1 = 0`` at a tensor's first step, then ``beta``)::

      delta_t = g_t - mu_{t-1}
      mu_t    = mu_{t-1} + (1 - beta_t) delta_t                       (mu_1 = g_1)
      s_t     = beta_t (s_{t-1} + (1 - beta_t) delta_t^2)              (s_1 = 0)
      W_t     = beta_t^2 W_{t-1} + (1 - beta_t)^2                      (W_1 = 1)
      sigma^2 = s_t / (1 - W_t)                                       (t >= 2)

  ``s_t`` is the weighted population variance of ``g_1..g_t`` under the EMA weights ``w`` and
  ``W_t = sum w^2``; dividing by ``1 - W_t`` makes it unbiased for i.i.d. gradients (at t = 2,
  ``(g_2 - g_1)^2 / 2``), as Adam's bias correction does for the mean. The first step adds no
  noise; from the second on the noise is nonzero. It includes the drift of the mean gradient
  over roughly ``1 / (1 - beta)`` steps, and needs no gradient accumulation.

The noise ``z`` comes from ``generator`` (or a generator the optimizer owns, seeded from the
global RNG at construction and saved by ``state_dict``), drawn as one flat vector per (device,
dtype: float32, float64 for float64 parameters) over the gradients that receive noise, in
param-group order; the foreach path draws those values block by block just before their use
(:class:`NormalStream`), never holding them all. The noised gradient stays in ``p.grad``.
The step reads nothing on the host.
Memory per parameter element: a float32 and a float64 buffer (``"microbatch"``), or two float32
buffers (``"ema"``); float64 parameters keep everything in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from tailclip.clip import tensor_norms
from tailclip.optim._base import check_nonnegative
from tailclip.optim._kernels import cpu_blocks

VARIANCE_ESTIMATORS = ("microbatch", "ema")

_NO_NOISE_WARNING = (
    "NoiseInjection(variance='microbatch') recorded {n} micro-batch gradient(s) in this step: the "
    "variance over fewer than 2 micro-batches is zero, so no noise was added. Call accumulate() after "
    "each of >= 2 micro-batch backwards per step, or pass variance=\"ema\" (a running variance across "
    "steps) to train without gradient accumulation. This warning is shown once."
)


def _accumulation_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def record_microbatch_(
    grads: list[Tensor], sums: list[Tensor], sums_sq: list[Tensor], foreach: bool
) -> None:
    """Record ``d = g - S1`` (``g`` the accumulated gradient, ``S1`` the previous one):
    ``S2 += d^2`` (in ``S2``'s dtype, float64), then ``S1 = g``."""
    if foreach and grads:
        current = [g.to(s.dtype) for g, s in zip(grads, sums, strict=True)]
        increments = torch._foreach_sub(current, sums)
        torch._foreach_addcmul_(sums_sq, increments, increments)
        torch._foreach_copy_(sums, current)
        return
    for g, s1, s2 in zip(grads, sums, sums_sq, strict=True):
        g = g.to(s1.dtype)
        d = g - s1
        s2.addcmul_(d, d)
        s1.copy_(g)


def microbatch_std_(sums: list[Tensor], sums_sq: list[Tensor], count: int, foreach: bool) -> list[Tensor]:
    """``sigma = sqrt(max(0, S2 - S1^2 / n) / (n - 1))`` for ``n = count >= 2``, written into ``S2``."""
    if foreach and sums:
        torch._foreach_addcmul_(sums_sq, sums, sums, value=-1.0 / count)
        torch._foreach_clamp_min_(sums_sq, 0.0)
        torch._foreach_mul_(sums_sq, 1.0 / (count - 1))
        torch._foreach_sqrt_(sums_sq)
        return sums_sq
    for s1, s2 in zip(sums, sums_sq, strict=True):
        s2.addcmul_(s1, s1, value=-1.0 / count).clamp_min_(0.0).mul_(1.0 / (count - 1)).sqrt_()
    return sums_sq


def ema_variance_update_(
    means: list[Tensor], variances: list[Tensor], grads: list[Tensor], betas: list[float], foreach: bool
) -> None:
    """``delta = g - mu``; ``mu += (1 - beta) delta``; ``s = beta (s + (1 - beta) delta^2)``.

    ``betas`` holds one factor per tensor (0 at a tensor's first observation: ``mu = g``, ``s = 0``).
    """
    weights = [1.0 - b for b in betas]
    if foreach and means:
        deltas = torch._foreach_sub(grads, means)
        torch._foreach_add_(means, torch._foreach_mul(deltas, weights))
        torch._foreach_addcmul_(variances, deltas, deltas, weights)
        torch._foreach_mul_(variances, betas)
        return
    for mean, var, g, w, b in zip(means, variances, grads, weights, betas, strict=True):
        delta = g - mean
        mean.add_(delta * w)
        var.addcmul_(delta, delta, value=w)
        var.mul_(b)


def ema_weight_sum_sq(steps: int, beta: float) -> float:
    """``W_t = sum_k w_k^2`` of the EMA weights after ``t = steps`` observations (``W_1 = 1``)."""
    decay = beta ** (2 * (steps - 1))
    return decay + (1.0 - beta) / (1.0 + beta) * (1.0 - decay)


def noise_factors(norms: Tensor, eta: float, rescale: Tensor | None) -> Tensor:
    """``sqrt(eta) * r_k * ||g_k||`` per tensor (``r_k = rescale[k]``, default 1)."""
    factors = norms * eta**0.5
    if rescale is not None:
        factors = factors * rescale.to(factors.device, factors.dtype)
    return factors


def agni_noise_(
    grads: list[Tensor],
    sigmas: list[Tensor],
    normals: list[Tensor],
    *,
    eta: float,
    foreach: bool,
    norms: Tensor | None = None,
    rescale: Tensor | None = None,
) -> Tensor:
    """Add ``n_k = z_k * sqrt(eta) * r_k * ||g_k|| * sigma_k`` to each gradient ``g_k`` in place.

    ``sigma_k`` is the per-coordinate standard deviation (any float dtype), ``z_k = normals[k]``
    standard normal draws of ``g_k``'s shape, overwritten with the noise ``n_k`` (computed in
    their dtype, added in the gradient's). ``r_k = rescale[k]`` (a 1-D tensor, default 1) scales
    each tensor's noise; ``norms`` may pass the per-tensor norms of ``grads``. Returns the
    per-tensor noise norms. Pure torch: no host synchronisation, no data-dependent branching.
    """
    if norms is None:
        norms = tensor_norms(grads, foreach)
    factors = [
        f.to(z.device, z.dtype)
        for f, z in zip(noise_factors(norms, eta, rescale).unbind(), normals, strict=True)
    ]
    add_noise_(grads, sigmas, normals, factors, foreach)
    return tensor_norms(normals, foreach)


def add_noise_(
    grads: list[Tensor], sigmas: list[Tensor], normals: list[Tensor], factors: list[Tensor], foreach: bool
) -> None:
    """``z_k <- z_k * f_k * sigma_k`` (in ``normals``, their dtype), then ``g_k += z_k``: the noise
    arithmetic of :func:`agni_noise_` for 0-dim factors ``f_k`` already in ``z_k``'s dtype."""
    if foreach and grads:
        torch._foreach_mul_(normals, factors)
        torch._foreach_mul_(normals, sigmas)
        torch._foreach_add_(grads, normals)
    else:
        for g, sigma, z, f in zip(grads, sigmas, normals, factors, strict=True):
            g.add_(z.mul_(f).mul_(sigma))


class NormalStream:
    """The values of one flat ``torch.randn(total)`` draw, handed out in consecutive pieces.

    torch's sampler pairs the values of a draw within aligned runs of 16 and redraws the last
    16 when the length is not a multiple of 16. Drawing in runs whose lengths are multiples of
    16, the last one at least 16 long (or the whole draw), therefore gives exactly the values of
    the flat draw, in order, without ever holding all of them: each piece is drawn when it is
    needed (a few values left over from a run wait for the next piece).
    """

    def __init__(
        self, total: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.undrawn = total
        self.generator = generator
        self.spare = torch.empty(0, device=device, dtype=dtype)

    def take(self, n: int) -> Tensor:
        """The next ``n`` values, a contiguous 1-D tensor."""
        need = n - self.spare.numel()
        if need > 0:
            size = min(self.undrawn, -(-need // 16) * 16)
            if self.undrawn - size < 16:
                size = self.undrawn
            if size < need:
                raise ValueError(f"Invalid take: {n} values; {self.spare.numel() + self.undrawn} left")
            drawn = torch.empty(self.spare.numel() + size, device=self.spare.device, dtype=self.spare.dtype)
            drawn[: self.spare.numel()].copy_(self.spare)
            drawn[self.spare.numel():].normal_(generator=self.generator)
            self.undrawn -= size
            self.spare = drawn
        out, self.spare = self.spare[:n], self.spare[n:]
        return out

    def take_like(self, tensors: list[Tensor]) -> list[Tensor]:
        """The next values, one piece shaped like each of ``tensors`` (in this stream's dtype)."""
        sizes = [t.numel() for t in tensors]
        flat = self.take(sum(sizes))
        return [chunk.view(t.shape) for chunk, t in zip(flat.split(sizes), tensors, strict=True)]


class NoiseInjection(Optimizer):
    """AGNI: add variance-scaled Gaussian noise to the gradients, then step any ``base_optimizer``.

    Args:
        base_optimizer: a constructed ``torch.optim.Optimizer`` (AdamW in the paper); its
            ``param_groups`` and ``state`` are this wrapper's, so LR schedulers work on either.
        eta: noise scale ``eta >= 0`` (paper: 0.01).
        variance: ``"microbatch"`` (sample variance of the micro-batch gradients recorded by
            :meth:`accumulate`; warns once if a step has fewer than 2) or ``"ema"`` (running
            variance of the step gradients across steps; no accumulation needed).
        ema_beta: EMA factor ``beta`` in (0, 1) for ``variance="ema"``.
        generator: ``torch.Generator`` for the noise, on the parameters' device. If ``None``,
            the optimizer owns one per device, seeded from the global RNG at construction, and
            saves its state in :meth:`state_dict` (a generator passed in is the caller's to save).
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.

    After each :meth:`step`, :attr:`last_noise_norm` is the norm of all injected noise and
    :attr:`last_grad_norm` that of the gradients before it (0-dim tensors, no host sync).

    Reference: "AGNI: Adaptive Gradient Noise Injection for Improved Transformer Fine Tuning".
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        eta: float = 0.01,
        variance: str = "microbatch",
        ema_beta: float = 0.99,
        generator: torch.Generator | None = None,
        foreach: bool = True,
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise ValueError(
                f"Invalid base_optimizer: {type(base_optimizer).__name__}; allowed: a torch.optim.Optimizer"
            )
        check_nonnegative("eta", eta)
        if variance not in VARIANCE_ESTIMATORS:
            raise ValueError(f"Invalid variance: {variance!r}; allowed: 'microbatch' or 'ema'")
        if not 0.0 < ema_beta < 1.0:
            raise ValueError(f"Invalid ema_beta: {ema_beta}; allowed: 0 < ema_beta < 1")
        params = [p for group in base_optimizer.param_groups for p in group["params"]]
        if generator is not None:
            for p in params:
                if p.device.type != generator.device.type:
                    raise ValueError(
                        f"Invalid generator: on {generator.device}, parameters on {p.device}; "
                        "allowed: a generator on the parameters' device, or None"
                    )
        # Optimizer.__init__ installs the step hooks; the groups, defaults and state are then the
        # base's own objects, so schedulers and users that edit them reach the base optimizer.
        super().__init__(params, {})
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.defaults = base_optimizer.defaults
        self.state = base_optimizer.state
        self.eta = float(eta)
        self.variance = variance
        self.ema_beta = float(ema_beta)
        self.foreach = bool(foreach)
        self.generator = generator
        self._seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item()) if generator is None else None
        self._owned_generators: dict[str, torch.Generator] = {}
        self.noise_state: dict[Tensor, dict[str, Any]] = {}
        self.microbatches = 0
        self._warned = False
        device = params[0].device
        self.last_noise_norm = torch.zeros((), device=device)
        self.last_grad_norm = torch.zeros((), device=device)

    def __repr__(self) -> str:
        return (
            f"NoiseInjection(eta={self.eta}, variance={self.variance!r}, ema_beta={self.ema_beta}, "
            f"foreach={self.foreach},\n  base_optimizer={self.base_optimizer!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults/state/param_groups; the wrapper needs all of it
        return dict(self.__dict__)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to the base optimizer (the groups are shared)."""
        if hasattr(self, "base_optimizer"):
            self.base_optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients (base optimizer) and discard micro-batch records of a step not taken."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)
        if self.microbatches:
            self._reset_microbatches()

    def _params_with_grad(self) -> list[Tensor]:
        params = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("NoiseInjection does not support sparse gradients")
                params.append(p)
        return params

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        key = str(device)
        if key not in self._owned_generators:
            self._owned_generators[key] = torch.Generator(device=device).manual_seed(self._seed)
        return self._owned_generators[key]

    def _normals(self, like: list[Tensor]) -> list[Tensor]:
        """``z ~ N(0, I)`` shaped like each gradient, float32 (float64 for float64): one flat draw
        per (device, dtype), buckets in order of first appearance."""
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, t in enumerate(like):
            buckets.setdefault((t.device, _accumulation_dtype(t)), []).append(i)
        normals: list[Tensor | None] = [None] * len(like)
        for (device, dtype), index in buckets.items():
            sizes = [like[i].numel() for i in index]
            flat = torch.randn(sum(sizes), generator=self._generator(device), device=device, dtype=dtype)
            for i, chunk in zip(index, flat.split(sizes), strict=True):
                normals[i] = chunk.view_as(like[i])
        return normals  # type: ignore[return-value]

    @torch.no_grad()
    def accumulate(self) -> None:
        """Record the micro-batch gradient ``d_k = p.grad - (p.grad at the last record)``.

        Call after each micro-batch's backward (``variance="microbatch"``); a no-op with
        ``variance="ema"``, so one training loop serves both estimators.
        """
        if self.variance != "microbatch":
            return
        params = self._params_with_grad()
        self.microbatches += 1
        for p in params:
            if p not in self.noise_state:
                self.noise_state[p] = {
                    "grad_sum": torch.zeros_like(p, dtype=_accumulation_dtype(p)),
                    "grad_sum_sq": torch.zeros_like(p, dtype=torch.float64),
                }
        states = [self.noise_state[p] for p in params]
        record_microbatch_(
            [p.grad for p in params], [s["grad_sum"] for s in states], [s["grad_sum_sq"] for s in states],
            self.foreach,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Inject the noise into ``p.grad``, then step the base optimizer; returns the closure's loss.

        The closure (if any) is evaluated once here; the base optimizer steps without it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params_with_grad()
        grads = [p.grad for p in params]
        device = self.last_noise_norm.device
        norms = tensor_norms(grads, self.foreach) if grads else torch.zeros(0, device=device)
        self.last_grad_norm = torch.linalg.vector_norm(norms).to(device)
        if self.variance == "ema" and self.foreach:
            self.last_noise_norm = self._ema_noise_blocked(params, norms).to(device)
            self.base_optimizer.step()
            return loss
        if self.variance == "microbatch":
            noised, sigmas = self._microbatch_sigmas(params)
        else:
            noised, sigmas = self._ema_sigmas(params)
        if noised:
            # select by unbind + stack: indexing with a list would copy the index to the device
            noised_norms = norms
            if len(noised) < len(params):
                unbound = norms.unbind()
                noised_norms = torch.stack([unbound[i] for i in noised])
            rescale = self._rescale(params, noised, noised_norms) if self.variance == "microbatch" else None
            noised_grads = [grads[i] for i in noised]
            if self.foreach:  # "microbatch": the foreach "ema" step returned above
                factors = noise_factors(noised_norms, self.eta, rescale).unbind()
                noise_norm = self._inject_blocked(noised_grads, list(factors), [sigmas], lambda _, s: s)
            else:
                noise_norm = torch.linalg.vector_norm(agni_noise_(
                    noised_grads, sigmas, self._normals(noised_grads),
                    eta=self.eta, foreach=False, norms=noised_norms, rescale=rescale,
                ))
            self.last_noise_norm = noise_norm.to(device)
        else:
            self.last_noise_norm = torch.zeros((), device=device)
        if self.variance == "microbatch":
            self._reset_microbatches()
        self.base_optimizer.step()
        return loss

    def _microbatch_sigmas(self, params: list[Tensor]) -> tuple[list[int], list[Tensor]]:
        """Indices of the tensors with records and their sigma (float64, in place of ``S2``)."""
        n = self.microbatches
        if n < 2:
            if not self._warned:
                warnings.warn(_NO_NOISE_WARNING.format(n=n), UserWarning, stacklevel=5)
                self._warned = True
            return [], []
        noised = [i for i, p in enumerate(params) if p in self.noise_state]
        states = [self.noise_state[params[i]] for i in noised]
        sums, sums_sq = [s["grad_sum"] for s in states], [s["grad_sum_sq"] for s in states]
        return noised, microbatch_std_(sums, sums_sq, n, self.foreach)

    def _rescale(self, params: list[Tensor], noised: list[int], noised_norms: Tensor) -> Tensor:
        """``c = ||g|| / ||S1||`` per tensor (``S1 = sum_k d_k``, its norm in float64 as it may hold
        scaled gradients): 1 unless ``p.grad`` changed after the last record."""
        sums = [self.noise_state[params[i]]["grad_sum"] for i in noised]
        if self.foreach:
            recorded_norms = torch._foreach_norm(sums, 2, dtype=torch.float64)
        else:
            recorded_norms = [torch.linalg.vector_norm(s, dtype=torch.float64) for s in sums]
        recorded = torch.stack([r.to(noised_norms.device) for r in recorded_norms])
        current = noised_norms.to(torch.float64)
        return torch.where(recorded > 0, current / recorded, torch.ones_like(recorded))

    def _reset_microbatches(self) -> None:
        self.microbatches = 0
        buffers = [b for state in self.noise_state.values() for b in state.values()]
        if self.foreach and buffers:
            torch._foreach_zero_(buffers)
        else:
            for b in buffers:
                b.zero_()

    def _ema_inputs(
        self, params: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[float]]:
        """Count this step and gather the EMA mean, variance, gradient and beta of each tensor
        (beta 0 on a tensor's first step: its mean starts at ``g_1``)."""
        means, variances, grads, betas = [], [], [], []
        for p in params:
            state = self.noise_state.get(p)
            if state is None:
                dtype = _accumulation_dtype(p)
                state = self.noise_state[p] = {
                    "steps": 0,
                    "mean": torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format),
                    "var": torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format),
                }
            state["steps"] += 1
            betas.append(self.ema_beta if state["steps"] > 1 else 0.0)
            means.append(state["mean"])
            variances.append(state["var"])
            grads.append(p.grad.to(state["mean"].dtype))
        return means, variances, grads, betas

    def _ema_sigmas(self, params: list[Tensor]) -> tuple[list[int], list[Tensor]]:
        """Update the EMAs; indices of the tensors past their first step and their sigma."""
        means, variances, grads, betas = self._ema_inputs(params)
        ema_variance_update_(means, variances, grads, betas, self.foreach)
        noised = [i for i, p in enumerate(params) if self.noise_state[p]["steps"] > 1]
        if not noised:
            return [], []
        steps = [self.noise_state[params[i]]["steps"] for i in noised]
        corrections = [1.0 / (1.0 - ema_weight_sum_sq(t, self.ema_beta)) for t in steps]
        noised_vars = [variances[i] for i in noised]
        if self.foreach:
            sigmas = torch._foreach_mul(noised_vars, corrections)
            torch._foreach_sqrt_(sigmas)
        else:
            sigmas = [(v * c).sqrt_() for v, c in zip(noised_vars, corrections, strict=True)]
        return noised, sigmas

    def _ema_noise_blocked(self, params: list[Tensor], norms: Tensor) -> Tensor:
        """Foreach ``"ema"`` step in one pass per cache block: the EMA update of
        :func:`ema_variance_update_`, ``sigma`` and the noise of :func:`agni_noise_` (the same
        elementwise ops, the same draws), without a full-size ``sigma`` or ``delta``. Returns
        the norm of the injected noise."""
        means, variances, grads, betas = self._ema_inputs(params)
        noised = [i for i, p in enumerate(params) if self.noise_state[p]["steps"] > 1]
        fresh = [i for i, p in enumerate(params) if self.noise_state[p]["steps"] == 1]
        if fresh:
            ema_variance_update_([means[i] for i in fresh], [variances[i] for i in fresh],
                                 [grads[i] for i in fresh], [0.0] * len(fresh), True)
        if not noised:
            return torch.zeros(())
        corrections = [
            1.0 / (1.0 - ema_weight_sum_sq(self.noise_state[params[i]]["steps"], self.ema_beta))
            for i in noised
        ]
        weight, beta = 1.0 - self.ema_beta, self.ema_beta

        def sigmas(index: list[int], mean: list[Tensor], var: list[Tensor], g: list[Tensor]) -> list[Tensor]:
            deltas = torch._foreach_sub(g, mean)
            torch._foreach_add_(mean, torch._foreach_mul(deltas, weight))
            torch._foreach_addcmul_(var, deltas, deltas, weight)
            torch._foreach_mul_(var, beta)
            block = torch._foreach_mul(var, [corrections[k] for k in index])
            torch._foreach_sqrt_(block)
            return block

        scaled_norms = (norms * self.eta**0.5).unbind()
        return self._inject_blocked(
            [params[i].grad for i in noised], [scaled_norms[i] for i in noised],
            [[means[i] for i in noised], [variances[i] for i in noised], [grads[i] for i in noised]],
            sigmas,
        )

    def _inject_blocked(
        self,
        targets: list[Tensor],
        factors: list[Tensor],
        lists: list[list[Tensor]],
        sigmas: Callable[..., list[Tensor]],
    ) -> Tensor:
        """``target += z * factor * sigma`` per cache block (:func:`cpu_blocks` over ``targets``
        and ``lists``), ``z`` drawn just before its use (:class:`NormalStream`: the values of
        :meth:`_normals`). ``sigmas(index, *pieces)`` gives a block's sigma from its pieces of
        ``lists``. Returns the norm of the noise, summed as the loop path sums it."""
        dtypes = [_accumulation_dtype(t) for t in targets]
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for k, (t, dtype) in enumerate(zip(targets, dtypes, strict=True)):
            buckets.setdefault((t.device, dtype), []).append(k)
        # in param order and in the loop path's dtype (float64 if any noise is), as it sums them
        norm_dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        noise_norms: list[tuple[int, Tensor]] = []  # (tensor, norm of a piece of its noise)
        device = factors[0].device
        for (bucket_device, dtype), bucket in buckets.items():
            size = sum(targets[k].numel() for k in bucket)
            stream = NormalStream(size, self._generator(bucket_device), bucket_device, dtype)
            bucket_factors = [factors[k].to(bucket_device, dtype) for k in bucket]
            bucket_lists = [[targets[k] for k in bucket]]
            bucket_lists += [[tensors[k] for k in bucket] for tensors in lists]
            for index, (target, *pieces) in cpu_blocks(bucket_lists):
                z = stream.take_like(target)
                block_sigmas = sigmas([bucket[k] for k in index], *pieces)
                add_noise_(target, block_sigmas, z, [bucket_factors[k] for k in index], True)
                norms = torch._foreach_norm(z, 2, dtype=norm_dtype)
                noise_norms += [(bucket[k], n.to(device)) for k, n in zip(index, norms, strict=True)]
        noise_norms.sort(key=lambda entry: entry[0])
        return torch.linalg.vector_norm(torch.stack([n for _, n in noise_norms]))

    def _param_index(self) -> dict[Tensor, int]:
        params = [p for group in self.param_groups for p in group["params"]]
        return {p: i for i, p in enumerate(params)}

    def state_dict(self) -> dict[str, Any]:
        """``{"base_optimizer": base state dict, "noise_injection": variance state, generators}``.

        Variance buffers are keyed by the parameter's index in param-group order (as torch's).
        Micro-batch buffers are saved only when a step's accumulation is in progress.
        """
        index = self._param_index()
        saved: dict[int, dict[str, Any]] = {}
        if self.variance == "ema" or self.microbatches > 0:
            for p, state in self.noise_state.items():
                saved[index[p]] = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
        return {
            "base_optimizer": self.base_optimizer.state_dict(),
            "noise_injection": {
                "eta": self.eta,
                "variance": self.variance,
                "ema_beta": self.ema_beta,
                "microbatches": self.microbatches,
                "seed": self._seed,
                "generators": {k: g.get_state() for k, g in self._owned_generators.items()},
                "state": saved,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimizer's state, the variance state and the owned generators' states."""
        noise = state_dict["noise_injection"]
        if noise["variance"] != self.variance:
            raise ValueError(
                f"Invalid state_dict: saved with variance={noise['variance']!r}, "
                f"this optimizer has variance={self.variance!r}"
            )
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self.eta = noise["eta"]
        self.ema_beta = noise["ema_beta"]
        self.microbatches = noise["microbatches"]
        params = [p for group in self.param_groups for p in group["params"]]
        self.noise_state = {}
        for i, state in noise["state"].items():
            p = params[int(i)]
            self.noise_state[p] = {
                k: v.to(p.device, copy=True) if isinstance(v, Tensor) else v
                for k, v in state.items()
            }
        if self.generator is None:
            self._seed = noise["seed"] if noise["seed"] is not None else self._seed
            self._owned_generators = {}
            for key, generator_state in noise["generators"].items():
                self._generator(torch.device(key)).set_state(generator_state)
