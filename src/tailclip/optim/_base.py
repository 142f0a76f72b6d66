"""The thin ``torch.optim.Optimizer`` layer every tailclip optimizer stands on.

It validates each param group once, when it is added (the constructor's groups included), with
the subclass's :meth:`ClipOptimizer._check_group` and the ``check_*`` helpers here; gathers each
group's parameters and gradients (``None`` grads skipped, sparse grads rejected), checks
gradients for NaN/Inf under the ``nonfinite`` policy, and records per-step statistics. The
update itself is a functional core in each optimizer's module, called by
:meth:`ClipOptimizer._update_group`; the cores take validated hyperparameters and check nothing.

Length (over ~500 lines): one idea, the step protocol every rule shares; its parts (the
validation helpers, the model-wide step, the state_dict format) call each other and would only
be split into modules that import one another.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from tailclip.clip import (
    NORM_MODES,
    ClipMode,
    ClipStats,
    ThresholdPolicy,
    check_clip_mode,
    check_max_norm,
    clip_coefficients,
    clip_tensors_unchecked,
    scaled_tensor_norms,
    tensor_norms,
)

NONFINITE_POLICIES = ("raise", "skip")
# Version of the ``state_dict`` layout, saved under ``STATE_FORMAT_KEY``. Format 1 (no key: tailclip
# before the torch.optim options) lacks the options added since; loading fills them with the
# values that reproduce format 1's behaviour (each class's ``FORMAT_1_OPTIONS``).
STATE_FORMAT = 2
STATE_FORMAT_KEY = "tailclip_state_format"
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_lr(lr: float | Tensor) -> None:
    """A finite ``lr >= 0``: a number or a one-element floating-point tensor (what
    ``torch.compile`` users pass so that a scheduler's change does not recompile)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(
                f"Invalid learning rate: a tensor of shape {tuple(lr.shape)} and dtype {lr.dtype}; "
                "allowed: a one-element floating-point tensor"
            )
        value = float(lr.detach().reshape(()).cpu())
    elif isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ValueError(f"Invalid learning rate: {lr!r}; allowed: a number >= 0")
    else:
        value = lr
    if not 0.0 <= value < math.inf:
        raise ValueError(f"Invalid learning rate: {value}; allowed: 0 <= lr < inf")


def check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r}; allowed: True or False")


def check_unit_interval(name: str, value: float) -> None:
    """``value`` in [0, 1): betas, momentum, EMA factors."""
    if not 0.0 <= _number(name, value) < 1.0:
        raise ValueError(f"Invalid {name}: {value}; allowed: 0 <= {name} < 1")


def check_betas(betas: tuple[float | Tensor, float | Tensor]) -> None:
    """Each beta in [0, 1): numbers, or one-element tensors (as ``torch.optim.Adam`` takes)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r}; allowed: a pair (beta1, beta2)")
    for i, beta in enumerate(betas):
        value = beta
        if isinstance(beta, Tensor) and beta.numel() == 1:
            value = float(beta.detach().reshape(()).cpu())
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}; allowed: [0, 1)")


def check_nonnegative(name: str, value: float) -> None:
    """A finite ``value >= 0``."""
    if not 0.0 <= _number(name, value) < math.inf:
        raise ValueError(f"Invalid {name}: {value}; allowed: 0 <= {name} < inf")


def check_positive(name: str, value: float) -> None:
    """A finite ``value > 0``."""
    if not 0.0 < _number(name, value) < math.inf:
        raise ValueError(f"Invalid {name}: {value}; allowed: 0 < {name} < inf")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: {value!r}; allowed: a number")
    return value


def unsupported(name: str, value: object, reason: str) -> None:
    """The one-line error of an option that has no meaning for a rule (or in a combination)."""
    raise ValueError(f"Invalid {name}: {value!r}; {reason}")


def check_real_params(params: Tensor | Iterable[Any], owner: str) -> None:
    """Reject complex parameters when a group is added (torch would fail at the step)."""
    for p in [params] if isinstance(params, Tensor) else params:
        p = p[1] if isinstance(p, tuple) else p  # named parameters
        if isinstance(p, Tensor) and p.is_complex():
            raise ValueError(
                f"Invalid params: {owner} got a {p.dtype} parameter; allowed: real floating point "
                "(float32, float64, bfloat16, float16)"
            )


def check_clipping(clip: object, max_norm: object) -> None:
    """A clipping mode and its threshold: a number > 0, or an adaptive policy (global or group
    clipping only)."""
    check_clip_mode(clip)
    if isinstance(max_norm, ThresholdPolicy):
        if clip not in ("global", "group"):
            raise ValueError(
                f"Invalid max_norm: a {type(max_norm).__name__} policy needs clip='global' or 'group', "
                f"got clip={clip!r}"
            )
        return
    if isinstance(max_norm, Tensor):
        raise ValueError(
            "Invalid max_norm: a tensor; allowed: max_norm > 0 (a number) or a ThresholdPolicy "
            "(AutoClip, ZClip)"
        )
    check_max_norm(max_norm)


@dataclass
class StepRecord:
    """What a step leaves behind: statistics, the skip count, and its per-step context (each
    adaptive threshold resolved on the model-wide norm, a shared scalar's start value).

    An object of its own because ``torch.compile`` drops attribute assignments on an
    ``Optimizer`` instance (a compiled ``opt.step`` would leave ``group_stats`` empty) while it
    keeps those on the objects the optimizer holds.
    """

    group_stats: list[ClipStats] = field(default_factory=list)
    skipped_steps: int = 0
    thresholds: dict[int, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


class ClipOptimizer(Optimizer):
    """Base class: gathering, checks and statistics shared by tailclip's optimizers.

    Model-wide quantities: global clipping (``clip="global"``) divides by ONE norm over every
    parameter of every group whose mode is ``"global"``, each group applying its own
    ``max_norm`` to it; with one threshold that is ``clip_grad_norm_(all_params, max_norm)``
    followed by the unclipped update. ``clip="group"`` clips each group by its own norm. A rule
    whose quantity is model-wide by the paper (NSGD's momentum norm, delta-GClip's ``G``)
    declares it with :meth:`_model_wide`. With one such group the rule's core computes the norm
    itself; with several, :meth:`step` takes the per-tensor norms of each group's quantity
    (:meth:`_model_norms`), combines them into the model-wide norm and hands it to every
    :meth:`_update_group` (``model_norm``), after resolving each adaptive threshold policy once
    on it (:meth:`_threshold`).

    After each :meth:`step`, :attr:`group_stats` holds one :class:`~tailclip.clip.ClipStats`
    per param group that had gradients (the group's own norms, before and after, clipped by
    the model-wide factor), and :attr:`step_stats` their combination: the model-wide gradient
    norm before and after clipping, the clip factor, whether clipping was active. They are
    tensors made from norms the step takes anyway: reading them costs nothing until a value is
    needed on the host.

    ``nonfinite="raise"`` raises ``FloatingPointError`` naming the first parameter whose
    gradient holds NaN or Inf; ``"skip"`` skips the whole step (parameters and state untouched)
    and counts it in :attr:`skipped_steps`. Either check reads one scalar on the host per step.
    A finite gradient is never called non-finite: when its norm overflows the accumulation (a
    float32 gradient past ~1e19), the step's norms are taken again, scaled, in float64
    (:func:`~tailclip.clip.scaled_tensor_norms`), and that step's statistics are float64. The
    norms a rule takes of another quantity (``g + wd x``, a momentum) are not rescaled.

    Group-level state (a scalar, as Adam-Norm's second moment) lives in the state of a first
    parameter under the keys in :attr:`GROUP_STATE_KEYS`, so ``state_dict`` saves it once and
    every ``torch.optim`` tool handles it; those keys keep their saved dtype and device on load
    (torch would cast them to the parameter's dtype). A model-wide scalar
    (:meth:`_shares_group_state`) is one for all the groups sharing it, in the state of the
    first parameter of the first such group; a per-group one in that of the group's first
    parameter. When several groups with gradients share it, :meth:`step` calls
    :meth:`_prepare_model_step` before any update.

    An adaptive threshold (:class:`~tailclip.clip.ThresholdPolicy`) keeps a history of the
    norms it sees. Under global clipping one policy object serves every group it is given to
    and sees the model-wide norm once per step; under ``clip="group"`` a policy object that
    would serve a second group is copied for that group, so each group's threshold follows its
    own norms.
    """

    GROUP_STATE_KEYS: tuple[str, ...] = ()
    FORMAT_1_OPTIONS: dict[str, Any] = {}

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        foreach: bool = True,
        nonfinite: str = "raise",
    ) -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r}; allowed: 'raise' or 'skip'")
        self._record = StepRecord()
        self._check_group(defaults)
        defaults = {**defaults, "foreach": bool(foreach), "nonfinite": nonfinite}
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim keeps only defaults, state and param_groups: deepcopy and pickle keep the
        # step record too (the last step's stats, the skip count)
        return {**super().__getstate__(), "_record": self._record}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_record" not in self.__dict__:  # pickled without it
            self._record = StepRecord()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim`` semantics; the group (given or inherited values) is validated (an
        invalid one is not added), and a threshold policy already serving a group is copied."""
        if isinstance(param_group, dict):
            if not isinstance(param_group.get("params"), (Tensor, set, type(None))):
                param_group = {**param_group, "params": list(param_group["params"])}  # read a generator once
            check_real_params(param_group.get("params") or [], type(self).__name__)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group)
        except ValueError:
            self.param_groups.pop()  # nothing half-added
            raise
        policy = group.get("max_norm")
        served = any(g.get("max_norm") is policy for g in self.param_groups[:-1])
        if isinstance(policy, ThresholdPolicy) and served and group.get("clip") != "global":
            group["max_norm"] = copy.deepcopy(policy)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise a one-line ``ValueError`` naming the first invalid hyperparameter of ``group``.

        Called for every group as it is added (``torch.optim`` adds the constructor's groups
        through :meth:`add_param_group`): the one place a rule's hyperparameters are checked.
        """

    @property
    def group_stats(self) -> list[ClipStats]:
        """One :class:`~tailclip.clip.ClipStats` per param group that had gradients, last step."""
        return self._record.group_stats

    @group_stats.setter
    def group_stats(self, value: list[ClipStats]) -> None:
        self._record.group_stats = value

    @property
    def skipped_steps(self) -> int:
        """Steps skipped under ``nonfinite="skip"``."""
        return self._record.skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self._record.skipped_steps = value

    @property
    def step_stats(self) -> ClipStats:
        """Statistics of the last step, model-wide: the groups' norms combined in squares."""
        return ClipStats.combine(self.group_stats)

    def _model_wide(self, group: dict[str, Any]) -> bool:
        """Whether the group's clipping norm is the model-wide one (default: ``clip="global"``)."""
        return group.get("clip") == "global"

    def _model_norms(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], norms: Tensor
    ) -> Tensor:
        """Per-tensor norms of the quantity the group clips (or normalises) by the model-wide norm.

        Default: the raw gradients' ``norms``. A rule that clips another quantity (``g + wd x``,
        a momentum) overrides it; it must not change any state.
        """
        return norms

    def _threshold(self, group: dict[str, Any]) -> float | Tensor | ThresholdPolicy:
        """The group's ``max_norm``; an adaptive policy already resolved on the model-wide norm
        this step (see :meth:`step`) is its threshold tensor."""
        policy = group.get("max_norm")
        return self._record.thresholds.get(id(policy), policy)

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if p.dtype not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"{type(self).__name__} got a {p.dtype} parameter; "
                    "allowed: float32, float64, bfloat16, float16"
                )
            params.append(p)
            grads.append(p.grad)
        return params, grads

    def _nonfinite_parameter(self, group_index: int) -> str:
        group = self.param_groups[group_index]
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                name = names[i] if names else f"index {i}"
                return f"param group {group_index}, parameter {name} (shape {tuple(p.shape)})"
        return f"param group {group_index}"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gathered = []
        for index, group in enumerate(self.param_groups):
            params, grads = self._gather(group)
            if group.get("clip") is not None:
                # a threshold edited in param_groups after construction (as schedulers edit lr)
                check_max_norm(group["max_norm"])
            if params:
                norms = tensor_norms(grads, group["foreach"])
                gathered.append((index, group, params, grads, norms))
        if not gathered:
            self._record.group_stats = []
            return loss
        device = gathered[0][4].device
        group_norms = torch.stack([torch.linalg.vector_norm(n).to(device) for *_, n in gathered])
        if torch.compiler.is_compiling() and self._check_finite_compiled(gathered, group_norms):
            pass
        elif not bool(torch.isfinite(group_norms).all()):
            # a finite gradient whose square overflowed the accumulation (float32: norms past
            # ~1.8e19) is clipped, not called non-finite: take the norms again, scaled, in float64
            gathered = [(i, g, p, gr, scaled_tensor_norms(gr)) for i, g, p, gr, _ in gathered]
            group_norms = torch.stack([torch.linalg.vector_norm(n).to(device) for *_, n in gathered])
            if not bool(torch.isfinite(group_norms).all()):
                bad = next(g for g, n in zip(gathered, group_norms) if not torch.isfinite(n))
                if bad[1]["nonfinite"] == "raise":
                    raise FloatingPointError(
                        f"{type(self).__name__}: non-finite gradient in "
                        f"{self._nonfinite_parameter(bad[0])}; "
                        "pass nonfinite='skip' to skip such steps"
                    )
                self._record.skipped_steps += 1
                self._record.group_stats = [ClipStats.of(n, n) for n in group_norms]
                return loss
        model_norm = self._model_norm(gathered)
        try:
            self._record.group_stats = [
                self._update_group(
                    group, params, grads, norms, model_norm if self._model_wide(group) else None
                )
                for _, group, params, grads, norms in gathered
            ]
        finally:
            self._record.thresholds = {}
            self._record.shared = {}
        return loss

    def _check_finite_compiled(
        self,
        gathered: list[tuple[int, dict[str, Any], list[Tensor], list[Tensor], Tensor]],
        group_norms: Tensor,
    ) -> bool:
        """The ``nonfinite`` policy inside ``torch.compile``, where a host read breaks the graph;
        ``True`` when it was checked here, ``False`` to check it on the host as eagerly.

        ``"raise"``: a device-side assertion (``torch._assert_async``), no host sync, so
        ``fullgraph=True`` traces it; it raises a ``RuntimeError`` (not naming the parameter,
        which would need the host) and does not tell an overflowing finite gradient from a
        non-finite one. ``"skip"`` decides on the host whether the step happens: the graph
        breaks there, and under ``fullgraph=True`` compilation fails with a message naming
        ``nonfinite``.
        """
        if any(group["nonfinite"] == "skip" for _, group, *_ in gathered):
            torch._dynamo.graph_break(
                msg=f"tailclip: {type(self).__name__}(nonfinite='skip') decides on the host whether to "
                "step, which torch.compile(fullgraph=True) cannot trace; pass nonfinite='raise' "
                "(a device-side check) or compile without fullgraph=True"
            )
            return False
        torch._assert_async(
            torch.isfinite(group_norms).all(),
            f"tailclip: {type(self).__name__}: non-finite gradient (nonfinite='raise' under torch.compile)",
        )
        return True

    def _model_norm(
        self, gathered: list[tuple[int, dict[str, Any], list[Tensor], list[Tensor], Tensor]]
    ) -> Tensor | None:
        """The model-wide norm over the model-wide groups, when there are several (else ``None``:
        the one group's core takes it itself); resolves each adaptive threshold once on it."""
        model = [entry for entry in gathered if self._model_wide(entry[1])]
        if len(model) < 2:
            return None
        device = model[0][4].device
        quantity = [
            self._model_norms(group, params, grads, norms)
            for _, group, params, grads, norms in model
        ]
        model_norm = torch.linalg.vector_norm(torch.cat([q.to(device) for q in quantity]))
        for _, group, *_ in model:
            policy = group.get("max_norm")
            if isinstance(policy, ThresholdPolicy) and id(policy) not in self._record.thresholds:
                self._record.thresholds[id(policy)] = policy.threshold(model_norm)
        self._prepare_model_step([entry[1:] for entry in model], model_norm)
        return model_norm

    def _prepare_model_step(
        self, model: list[tuple[dict[str, Any], list[Tensor], list[Tensor], Tensor]], model_norm: Tensor
    ) -> None:
        """Before any update of a step that several model-wide groups share: ``model`` holds
        their ``(group, params, grads, norms)``. Rules with a shared group-level state override it."""

    def _shares_group_state(self, group: dict[str, Any]) -> bool:
        """Whether the group's :attr:`GROUP_STATE_KEYS` state is the model-wide one."""
        return False

    def _group_state(self, group: dict[str, Any]) -> dict[str, Any]:
        """The state dict holding the group-level keys: that of the group's first parameter, or
        for a model-wide state that of the first parameter of the first group sharing it."""
        if self._shares_group_state(group):
            group = next(g for g in self.param_groups if g["params"] and self._shares_group_state(g))
        return self.state[group["params"][0]]

    def _group_scalars(self, group: dict[str, Any]) -> dict[str, Any]:
        """The group-level state a group's update advances: its state dict, or, when several
        groups share a model-wide one this step, a copy of its value at the start of the step
        (each group advances it by the same model-wide quantity; :meth:`_store_group_scalars`
        writes the result back once)."""
        state = self._group_state(group)
        start = self._record.shared.get("start")
        if start is None or not self._shares_group_state(group):
            return state
        return {k: v.clone() for k, v in start.items()}

    def _shared_update_norm(self, group: dict[str, Any]) -> Tensor | None:
        """The model-wide quantity a shared group-level state takes this step (``None``: the
        group's own), set by :meth:`_prepare_model_step` under ``"update_norm"``."""
        return self._record.shared.get("update_norm") if self._shares_group_state(group) else None

    def _store_group_scalars(self, group: dict[str, Any], scalars: dict[str, Any]) -> None:
        state = self._group_state(group)
        if scalars is not state:
            for key, value in scalars.items():
                state[key].copy_(value)

    @abstractmethod
    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        norms: Tensor,
        model_norm: Tensor | None = None,
    ) -> ClipStats:
        """Apply the update rule to one group; ``norms`` are the raw gradients' tensor norms.

        ``model_norm``: the model-wide norm of the group's clipped quantity when several groups
        share it (``None``: the group's own); the threshold is :meth:`_threshold`."""

    def _check_shared_layout(self, state_dict: dict[str, Any]) -> None:
        """A model-wide group-level state is saved once; a state with one per group (saved with
        tailclip's earlier per-group layout) fails with a message saying what to change."""
        holders = [
            group["params"][0] for saved, group in zip(state_dict["param_groups"], self.param_groups)
            if saved["params"] and self._shares_group_state(saved)
            and any(k in state_dict["state"].get(saved["params"][0], {}) for k in self.GROUP_STATE_KEYS)
        ]
        if len(holders) > 1:
            raise ValueError(
                f"Invalid state_dict: {len(holders)} param groups hold a {self.GROUP_STATE_KEYS[0]!r} "
                "(the per-group layout before clip='global' became model-wide); to keep one scalar per "
                "group, set clip='group' in the saved param_groups and in the optimizer"
            )

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim`` state dict; adaptive threshold policies are saved as their state."""
        state = super().state_dict()
        state[STATE_FORMAT_KEY] = STATE_FORMAT
        for group in state["param_groups"]:
            policy = group.get("max_norm")
            if isinstance(policy, ThresholdPolicy):
                group["max_norm"] = {"policy": type(policy).__name__, "state": policy.state_dict()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; a saved policy state is loaded into this optimizer's policy.

        ``torch.optim`` deep-copies the saved groups, so each group gets its own policy object
        back afterwards (the one the optimizer was built with) with the saved state loaded.
        """
        version = state_dict.get(STATE_FORMAT_KEY, 1)
        if version not in (1, STATE_FORMAT):
            raise ValueError(
                f"Invalid state_dict: {STATE_FORMAT_KEY}={version!r}; allowed: 1 or {STATE_FORMAT}"
            )
        if version == 1:
            state_dict = {
                **state_dict,
                "param_groups": [{**self.FORMAT_1_OPTIONS, **g} for g in state_dict["param_groups"]],
            }
        state_dict = {k: v for k, v in state_dict.items() if k != STATE_FORMAT_KEY}
        self._check_shared_layout(state_dict)
        group_states = []
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            entry = state_dict["state"].get(saved_group["params"][0], {}) if saved_group["params"] else {}
            kept = {k: v for k, v in entry.items() if k in self.GROUP_STATE_KEYS}
            if kept:
                group_states.append((group["params"][0], kept))
        policies: dict[int, tuple[ThresholdPolicy, dict[str, Tensor]]] = {}
        groups = []
        for index, (saved, current) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            saved = dict(saved)
            entry = saved.get("max_norm")
            if isinstance(entry, dict) and "policy" in entry:
                policy = current.get("max_norm")
                if not isinstance(policy, ThresholdPolicy) or type(policy).__name__ != entry["policy"]:
                    raise ValueError(
                        f"Invalid state_dict: saved max_norm is a {entry['policy']} policy; "
                        "construct the optimizer with the same policy before loading"
                    )
                policies[index] = (policy, entry["state"])
                saved["max_norm"] = None
            groups.append(saved)
        super().load_state_dict({**state_dict, "param_groups": groups})
        for p, kept in group_states:
            self.state[p].update({k: v.clone() for k, v in kept.items()})
        for index, (policy, policy_state) in policies.items():
            policy.load_state_dict(policy_state)
            self.param_groups[index]["max_norm"] = policy


def clipped_norm(
    group: dict[str, Any], tensors: list[Tensor], norms: Tensor, threshold: object, model_norm: Tensor | None
) -> Tensor:
    """``||u||`` of the group's clipped ``tensors`` (per-tensor ``norms``), without updating
    anything; global clipping by ``model_norm``. A shared second moment sums its square."""
    mode: ClipMode = group["clip"]
    if mode in NORM_MODES:
        return clip_coefficients(norms, mode, threshold, model_norm)[1].clipped_norm  # type: ignore[arg-type]
    return clip_tensors_unchecked(tensors, mode, threshold, group["foreach"], norms)[1].clipped_norm  # type: ignore[arg-type]
