"""The task contract: what the engine's runner trains, behind one registry.

A task is a class registered by name with :func:`register_task`; configs refer to it as
``task: {name: <name>, options: {...}}``. Its ``Options`` (a :class:`TaskOptions`, i.e. a
pydantic model that forbids unknown keys) validates ``options`` when the config is loaded, so
a typo fails before anything runs; the classmethod ``check_config(options, context)`` may then
reject combinations with the rest of the run by raising a ``ValueError`` whose message starts
with the dotted field it blames (``"optimizer: ..."``), which becomes a one-line config error.
The runner constructs the task as ``Task(options, context)`` after seeding torch, numpy and
``random`` with the seed. A task never sees the engine's config: :class:`TaskContext` is plain
data (seed, batch size, device, the resolved optimizer spec as a mapping), so this layer
imports nothing above it.

There are two kinds, and the runner drives each with the same loop (evaluate at step 0 and
every ``train.eval_every`` steps, log, checkpoint every ``train.checkpoint_every`` steps):

**ModelTask**: one model, one ``torch.optim`` optimizer built by the runner over
``task.model.parameters()``, one learning-rate schedule. One training step is::

    batch = task.train_batch()                 # advances the task's data position
    loss, metrics = task.loss(batch)           # scalar to differentiate, 0-dim metric tensors
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

``metrics`` are logged as ``train/<key>`` (``train/loss`` is the differentiated loss unless the
task reports its own ``"loss"``, e.g. an exact objective when the backward loss carries noise).
``evaluate()`` (run under ``torch.no_grad`` with ``model.eval()``) returns
``{"loss": ..., "<metric>": ...}``, logged as ``eval/<key>``. ``steps_per_epoch()`` is the
length of one pass over the training data (``None`` for an endless stream: then the config
must give ``train.steps``, and ``train.epochs`` is rejected unless ``supports_epochs``).
Checkpoints save ``task.state_dict()``: the model's state and ``data_state()``, the position
of the data iterator (epoch, index, generator states), so a resumed run draws exactly the
batches an uninterrupted one would.

**VectorizedTask**: ``R`` independent runs held in one tensor with a leading batch dimension
(the synthetic suite: stochastic problems where a high-probability statement needs thousands
of runs). The task owns the update: it reads ``context.optimizer`` itself and applies the rule
to all ``R`` runs at once. One training step is::

    metrics = task.step(lr_factor)             # {key: tensor of shape (R,)}

where ``lr_factor`` is the schedule's multiplier for this step (the lr to use is
``context.optimizer["lr"] * lr_factor``). ``evaluate()`` returns ``{key: tensor (R,)}`` too.
The runner logs, for each key, the 10/50/90/99% quantiles and the mean over the ``R`` runs
(``train/<key>/q10``, ..., ``train/<key>/mean``; a non-finite value counts as ``+inf``: a
diverged run is the worst run) and saves the final per-run values as ``.npy`` artifacts of
kind ``per_run/<prefix>/<key>``. ``state_dict()`` must hold everything the task updates
(iterates, optimizer states, generator states). A vectorized task may name its **model twin**
(classmethod ``model_twin(options)``, a :class:`ModelTwin`): the model task that trains one of
its runs through the real optimizer classes, for what needs a model (``tailclip advise``); the
twin lists the options it does not carry.

Both kinds keep per-step values as tensors: the runner converts them to floats in batches at
log boundaries, so a step needs no host synchronisation.

**Noise diagnostics** (:mod:`tailclip.noise`, ``tailclip tails``, the ``monitor`` section) measure
a model task through ``task.noise_source()``, a :class:`NoiseSource`: the model, a loss and a
batch source in the form :func:`tailclip.noise.collect_noise` takes. The default, for every
model task, is the task's own objective on the task's own batches::

    NoiseSource(task.model, BatchLoss(lambda batch: task.loss(batch)[0]),
                data=lambda size, generator: task.train_batch(B), batch_size=B)

(``B``: ``noise_source(batch_size)``'s argument, by default the training batch size), so the
noise is that of the gradients the optimizer would see next, at one batch size per source
(``batch_size`` set: ``train_batch(B)`` draws the next ``B`` examples of the task's own
stream, so another batch size needs no second task and no second copy of the data), minibatch
mode only (a :class:`~tailclip.noise.BatchLoss` has no per-example form). Drawing advances
the data position: measure inside ``with task.preserved_data_position():``, which puts back
:meth:`ModelTask.data_state`. A task whose data is a dataset with a separable loss may override
``noise_source`` to return ``NoiseSource(model, loss_fn(output, target), dataset,
batch_size=None)``: then any batch size, disjoint seeded batches and per-example noise work.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from tailclip.noise.batches import BatchLoss

__all__ = [
    "TASKS",
    "ModelTask",
    "ModelTwin",
    "NoiseSource",
    "Task",
    "TaskContext",
    "TaskOptions",
    "VectorizedTask",
    "register_task",
]


class TaskOptions(BaseModel):
    """Base of every task's options model: unknown keys, type coercions, inf and NaN are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class TaskContext:
    """What a task gets besides its options, as plain data.

    ``seed`` seeds the task's generators; ``batch_size`` is the training batch size;
    ``device`` is where its tensors live; ``optimizer`` is the resolved optimizer spec,
    ``{"name": ..., <hyperparameter>: <value>, ...}`` with every default filled (a vectorized
    task applies that rule itself; a model task may ignore it).
    """

    seed: int
    batch_size: int
    device: torch.device
    optimizer: Mapping[str, Any]

    @property
    def optimizer_name(self) -> str:
        return str(self.optimizer["name"])

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The optimizer's keyword arguments: :attr:`optimizer` without ``name``."""
        return {k: v for k, v in self.optimizer.items() if k != "name"}


class Task(ABC):
    """Common base of :class:`ModelTask` and :class:`VectorizedTask` (see the module docstring)."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["model", "vectorized"]]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    supports_epochs: ClassVar[bool] = False

    def __init__(self, options: TaskOptions, context: TaskContext) -> None:
        self.options = options
        self.context = context
        self.device = context.device

    @classmethod
    def check_config(cls, options: TaskOptions, context: TaskContext) -> None:
        """Reject a run this task cannot do: ``ValueError("<dotted.field>: <what is wrong>")``."""
        return None

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Evaluation metrics at the current iterate(s)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the task is (saved in checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass(frozen=True)
class NoiseSource:
    """What the noise diagnostics measure: ``collect_noise(model, loss_fn, data, batch_size=...)``.

    ``loss_fn`` is ``loss_fn(output, target)`` or a :class:`~tailclip.noise.BatchLoss`; ``data``
    follows :mod:`tailclip.noise.batches`; ``batch_size`` is the only batch size ``data`` can
    give (``None``: any).
    """

    model: nn.Module
    loss_fn: Callable[..., Tensor]
    data: Any
    batch_size: int | None = None

    def check_batch_size(self, batch_size: int) -> None:
        """``ValueError`` unless ``data`` can give batches of ``batch_size``."""
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ValueError(
                f"Invalid batch_size: {batch_size}; allowed: {self.batch_size} (this task measures "
                "noise on its training batches)"
            )


class ModelTask(Task):
    """A model trained by one torch optimizer; subclasses set ``self.model`` in ``__init__``."""

    kind: ClassVar[Literal["model"]] = "model"
    model: nn.Module

    def steps_per_epoch(self) -> int | None:
        """Optimizer steps in one pass over the training data; ``None`` for an endless stream."""
        return None

    @abstractmethod
    def train_batch(self, batch_size: int | None = None) -> Any:
        """The next training batch of ``batch_size`` examples (``None``: ``context.batch_size``).

        On ``self.device``; advances the data position. Training always draws at the context's
        batch size; another size serves the noise diagnostics (:meth:`noise_source`).
        """

    @abstractmethod
    def loss(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The scalar loss to differentiate and extra 0-dim train metrics (no host sync)."""

    def noise_source(self, batch_size: int | None = None) -> NoiseSource:
        """The model, loss and batches the noise diagnostics measure (see the module docstring).

        The default draws ``train_batch(batch_size)`` (``None``: the training batch size; the
        sampler's generator is not used) and differentiates ``loss(batch)[0]``.
        """
        if batch_size is None:
            batch_size = self.context.batch_size
        at_training_size = batch_size == self.context.batch_size

        def draw(size: int, generator: torch.Generator) -> Any:
            source.check_batch_size(size)
            # the training size is drawn by the call the runner makes, train_batch()
            return self.train_batch() if at_training_size else self.train_batch(size)

        source = NoiseSource(self.model, BatchLoss(lambda batch: self.loss(batch)[0]), draw, batch_size)
        return source

    @contextmanager
    def preserved_data_position(self) -> Iterator[None]:
        """Run a block that may draw batches; put the data position (:meth:`data_state`) back after."""
        state = copy.deepcopy(self.data_state())
        try:
            yield
        finally:
            self.load_data_state(state)

    def data_state(self) -> dict[str, Any]:
        """Position of the data iterator (generator states, epoch, index)."""
        return {}

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`data_state`."""

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "data": self.data_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.load_data_state(state["data"])


@dataclass(frozen=True)
class ModelTwin:
    """One run of a vectorized task as a model task: ``task`` with ``options`` (same problem, same
    noise, same start). ``not_carried``: the options it cannot carry, each ``"key: value (why)"``;
    ``resets``: the vectorized task's options that, set to these values, make its runs train as the
    twin does (e.g. a constant step size instead of a schedule)."""

    task: str
    options: dict[str, Any]
    not_carried: tuple[str, ...]
    resets: dict[str, Any]


class VectorizedTask(Task):
    """``R`` independent runs in one tensor; the task applies the optimizer's rule itself."""

    kind: ClassVar[Literal["vectorized"]] = "vectorized"

    @classmethod
    def model_twin(cls, options: TaskOptions) -> ModelTwin | None:
        """The model task that trains one run of this task (``None``: there is none). Raises a
        ``ValueError`` naming the option (``"task.options.<key>: ..."``) that has no twin."""
        return None

    @property
    @abstractmethod
    def runs(self) -> int:
        """``R``, the number of independent runs."""

    @abstractmethod
    def step(self, lr_factor: float) -> dict[str, Tensor]:
        """One update of all runs with lr ``optimizer.lr * lr_factor``; metrics of shape ``(R,)``."""

    @abstractmethod
    def evaluate(self) -> dict[str, Tensor]:
        """Evaluation metrics of shape ``(R,)``."""


TASKS: dict[str, type[Task]] = {}

T = TypeVar("T", bound=type[Task])


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: register a task under ``name`` (unique) in :data:`TASKS`."""

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, (ModelTask, VectorizedTask))):
            raise TypeError(f"register_task({name!r}): {cls!r} is not a ModelTask or VectorizedTask subclass")
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, TaskOptions)):
            raise TypeError(f"register_task({name!r}): {cls.__name__}.Options must subclass TaskOptions")
        existing = TASKS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"Invalid task name: {name!r} is already registered by {existing.__qualname__}")
        cls.name = name
        TASKS[name] = cls
        return cls

    return decorate
