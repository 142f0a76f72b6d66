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
param-group order, block by block just before their use (:class:`NormalStream`), never
holding them all. Both variance estimators run one blocked pass (:func:`cpu_blocks`): per
block, the estimator's ``sigma`` (for ``"ema"`` the EMA update itself), then the noise; the
``foreach`` flag only chooses multi-tensor ops or a per-tensor loop inside a block, with the
same numbers. The noised gradient stays in ``p.grad``. The step reads one scalar on the host
(the non-finite check, see :class:`NoiseInjection`).
Memory per parameter element: a float32 and a float64 buffer (``"microbatch"``), or two float32
buffers (``"ema"``); float64 parameters keep everything in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from tailclip.clip import tensor_norms
from tailclip.optim._agni import (
    NormalStream,
    accumulation_dtype,
    add_noise_,
    ema_variance_update_,
    ema_weight_sum_sq,
    microbatch_std_,
    noise_factors,
    record_microbatch_,
)
from tailclip.optim._base import ClipOptimizer, check_nonnegative
from tailclip.optim._kernels import cpu_blocks

VARIANCE_ESTIMATORS = ("microbatch", "ema")

_NO_NOISE_WARNING = (
    "NoiseInjection(variance='microbatch') recorded {n} micro-batch gradient(s) in this step: the "
    "variance over fewer than 2 micro-batches is zero, so no noise was added. Call accumulate() after "
    "each of >= 2 micro-batch backwards per step, or pass variance=\"ema\" (a running variance across "
    "steps) to train without gradient accumulation. This warning is shown once."
)


def _shared_with_base(name: str) -> property:
    """The base optimizer's attribute ``name``, read and written through the wrapper.

    ``torch.optim.Optimizer.load_state_dict`` replaces ``param_groups`` with a new list, so
    holding the base's list would lose it on load (and an LR scheduler's changes with it).
    Before the base is attached (inside ``Optimizer.__init__``) the wrapper keeps its own.
    """

    def get(self: NoiseInjection) -> Any:
        base = self.__dict__.get("base_optimizer")
        return getattr(base, name) if base is not None else self.__dict__[f"_own_{name}"]

    def set_(self: NoiseInjection, value: Any) -> None:
        base = self.__dict__.get("base_optimizer")
        if base is not None:
            setattr(base, name, value)
        else:
            self.__dict__[f"_own_{name}"] = value

    return property(get, set_, doc=f"The base optimizer's ``{name}``.")


def _replica_seed(seed: int, device: torch.device) -> int:
    """``seed`` of rank 0 when ``torch.distributed`` is initialised (one broadcast), else ``seed``."""
    if not (dist.is_available() and dist.is_initialized()):
        return seed
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    shared = torch.tensor([seed], dtype=torch.int64, device=on)
    dist.broadcast(shared, src=0)
    return int(shared.item())


class NoiseInjection(Optimizer):
    """AGNI: add variance-scaled Gaussian noise to the gradients, then step any ``base_optimizer``.

    Args:
        base_optimizer: a constructed ``torch.optim.Optimizer`` (AdamW in the paper); its
            ``param_groups``, ``state`` and ``defaults`` are this wrapper's (the same objects,
            also after :meth:`load_state_dict`), so LR schedulers work on either.
        eta: noise scale ``eta >= 0`` (paper: 0.01).
        variance: ``"microbatch"`` (sample variance of the micro-batch gradients recorded by
            :meth:`accumulate`; warns once if a step has fewer than 2) or ``"ema"`` (running
            variance of the step gradients across steps; no accumulation needed).
        ema_beta: EMA factor ``beta`` in (0, 1) for ``variance="ema"``.
        generator: ``torch.Generator`` for the noise, on the parameters' device. If ``None``,
            the optimizer owns one per device, seeded from the global RNG at construction (from
            rank 0's global RNG when ``torch.distributed`` is initialised, so DDP replicas draw
            the same noise and stay identical), and saves its state in :meth:`state_dict`. A
            generator passed in is the caller's to seed (per rank, for different noise on each
            replica) and to save.
        foreach: multi-tensor path (default) or a per-tensor loop with the same results.

    Non-finite gradients are checked before any AGNI state is touched (one host read per
    step). With a tailclip base optimizer its ``nonfinite`` policy decides: ``"raise"`` raises
    ``FloatingPointError``, ``"skip"`` skips the step; any other base (``torch.optim.AdamW``)
    is not stepped and a ``UserWarning`` says so. Either way a skipped step leaves parameters,
    the base's state and AGNI's state (variances, micro-batch records, generators) as they
    were, and counts in :attr:`skipped_steps`; the records of the step are discarded by the
    next :meth:`zero_grad`, as for a step ``GradScaler`` skips.

    After each :meth:`step`, :attr:`last_noise_norm` is the norm of all injected noise and
    :attr:`last_grad_norm` that of the gradients before it (0-dim tensors).

    Reference: "AGNI: Adaptive Gradient Noise Injection for Improved Transformer Fine Tuning".
    """

    param_groups = _shared_with_base("param_groups")
    state = _shared_with_base("state")
    defaults = _shared_with_base("defaults")

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
        # Optimizer.__init__ installs the step hooks; from then on the groups, defaults and
        # state are the base's own objects (the properties above).
        super().__init__(params, {})
        for name in ("param_groups", "state", "defaults"):
            del self.__dict__[f"_own_{name}"]
        self.base_optimizer = base_optimizer
        self.eta = float(eta)
        self.variance = variance
        self.ema_beta = float(ema_beta)
        self.foreach = bool(foreach)
        self.generator = generator
        device = params[0].device
        self._seed = None
        if generator is None:
            self._seed = _replica_seed(int(torch.randint(0, 2**62, (), dtype=torch.int64).item()), device)
        self._owned_generators: dict[str, torch.Generator] = {}
        self.noise_state: dict[Tensor, dict[str, Any]] = {}
        self.microbatches = 0
        self.skipped_steps = 0
        self._warned = False
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
        if "base_optimizer" in self.__dict__:
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
                    "grad_sum": torch.zeros_like(p, dtype=accumulation_dtype(p)),
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
        device = self.last_noise_norm.device
        norms = tensor_norms([p.grad for p in params], self.foreach) if params else torch.zeros(0)
        self.last_grad_norm = torch.linalg.vector_norm(norms).to(device)
        self.last_noise_norm = torch.zeros((), device=device)
        if not bool(torch.isfinite(norms).all()):
            self._skip_nonfinite()
            return loss
        if self.variance == "microbatch":
            noise = self._microbatch_noise(params, norms)
            self._reset_microbatches()
        else:
            noise = self._ema_noise(params, norms)
        if noise is not None:
            self.last_noise_norm = noise.to(device)
        self.base_optimizer.step()
        return loss

    def _skip_nonfinite(self) -> None:
        """A step with a non-finite gradient: the base's policy, or skip and warn."""
        if isinstance(self.base_optimizer, ClipOptimizer):
            self.base_optimizer.step()  # raises, or skips touching nothing, by its nonfinite policy
        else:
            warnings.warn(
                f"NoiseInjection: non-finite gradient; step skipped (base "
                f"{type(self.base_optimizer).__name__} not stepped, parameters and state unchanged)",
                UserWarning, stacklevel=5,
            )
        self.skipped_steps += 1

    def _microbatch_noise(self, params: list[Tensor], norms: Tensor) -> Tensor | None:
        """Noise of ``variance="microbatch"``: ``sigma`` from the records, in place of ``S2``."""
        n = self.microbatches
        if n < 2:
            if not self._warned:
                warnings.warn(_NO_NOISE_WARNING.format(n=n), UserWarning, stacklevel=5)
                self._warned = True
            return None
        noised = [i for i, p in enumerate(params) if p in self.noise_state]
        if not noised:
            return None
        states = [self.noise_state[params[i]] for i in noised]
        sums, sums_sq = [s["grad_sum"] for s in states], [s["grad_sum_sq"] for s in states]
        noised_norms = _select(norms, noised, len(params))
        factors = noise_factors(noised_norms, self.eta, self._rescale(sums, noised_norms))

        def sigmas(index: list[int], s1: list[Tensor], s2: list[Tensor]) -> list[Tensor]:
            return microbatch_std_(s1, s2, n, self.foreach)

        return self._inject([params[i].grad for i in noised], list(factors.unbind()), [sums, sums_sq], sigmas)

    def _rescale(self, sums: list[Tensor], noised_norms: Tensor) -> Tensor:
        """``c = ||g|| / ||S1||`` per tensor (``S1 = sum_k d_k``, its norm in float64 as it may hold
        scaled gradients): 1 unless ``p.grad`` changed after the last record."""
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

    def _ema_noise(self, params: list[Tensor], norms: Tensor) -> Tensor | None:
        """Noise of ``variance="ema"``: count the step; a tensor's first step sets ``mu = g_1``
        (no noise); later steps update the EMAs block by block, where the noise needs them."""
        means, variances, grads, noised, fresh = [], [], [], [], []
        for i, p in enumerate(params):
            state = self.noise_state.get(p)
            if state is None:
                dtype = accumulation_dtype(p)
                state = self.noise_state[p] = {
                    "steps": 0,
                    "mean": torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format),
                    "var": torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format),
                }
            state["steps"] += 1
            (noised if state["steps"] > 1 else fresh).append(i)
            means.append(state["mean"])
            variances.append(state["var"])
            grads.append(p.grad.to(state["mean"].dtype))
        if fresh:
            ema_variance_update_([means[i] for i in fresh], [variances[i] for i in fresh],
                                 [grads[i] for i in fresh], [0.0] * len(fresh), self.foreach)
        if not noised:
            return None
        corrections = [
            1.0 / (1.0 - ema_weight_sum_sq(self.noise_state[params[i]]["steps"], self.ema_beta))
            for i in noised
        ]

        def sigmas(index: list[int], mean: list[Tensor], var: list[Tensor], g: list[Tensor]) -> list[Tensor]:
            ema_variance_update_(mean, var, g, [self.ema_beta] * len(index), self.foreach)
            block = [corrections[k] for k in index]
            if self.foreach:
                std = torch._foreach_mul(var, block)
                torch._foreach_sqrt_(std)
                return std
            return [(v * c).sqrt_() for v, c in zip(var, block, strict=True)]

        factors = noise_factors(_select(norms, noised, len(params)), self.eta, None)
        return self._inject(
            [params[i].grad for i in noised], list(factors.unbind()),
            [[means[i] for i in noised], [variances[i] for i in noised], [grads[i] for i in noised]],
            sigmas,
        )

    def _inject(
        self,
        targets: list[Tensor],
        factors: list[Tensor],
        lists: list[list[Tensor]],
        sigmas: Callable[..., list[Tensor]],
    ) -> Tensor:
        """``target += z * factor * sigma`` per cache block (:func:`cpu_blocks` over ``targets``
        and ``lists``), ``z`` drawn just before its use (:class:`NormalStream`: one flat draw per
        (device, dtype) bucket, buckets in order of first appearance). ``sigmas(index, *pieces)``
        gives a block's sigma from its pieces of ``lists`` (``index``: their tensors' positions).
        Returns the norm of the noise (float64 if any noise is)."""
        dtypes = [accumulation_dtype(t) for t in targets]
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for k, (t, dtype) in enumerate(zip(targets, dtypes, strict=True)):
            buckets.setdefault((t.device, dtype), []).append(k)
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
                add_noise_(target, block_sigmas, z, [bucket_factors[k] for k in index], self.foreach)
                if self.foreach:
                    norms = torch._foreach_norm(z, 2, dtype=norm_dtype)
                else:
                    norms = [torch.linalg.vector_norm(piece, dtype=norm_dtype) for piece in z]
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


def _select(values: Tensor, index: list[int], total: int) -> Tensor:
    """``values[index]`` by unbind + stack: indexing with a list would copy it to the device."""
    if len(index) == total:
        return values
    unbound = values.unbind()
    return torch.stack([unbound[i] for i in index])
