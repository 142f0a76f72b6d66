"""The task contract (:mod:`tailclip.problems.task`) and the tasks: synthetic problems and real models.

Importing this package registers every built-in task in :data:`TASKS` (one module per task,
each decorated with :func:`register_task`). The engine reads the registry from here; nothing
in this package imports the engine.
"""

from tailclip.problems import (  # noqa: E402, I001  (after the contract they register into)
    image_classification,  # noqa: F401  (registers image-classification)
    imbalanced_softmax,  # noqa: F401  (registers imbalanced-softmax)
    language_model,  # noqa: F401  (registers language-model)
    quadratic,  # noqa: F401  (registers noisy-quadratic)
    synthetic,  # noqa: F401  (registers stochastic-quadratic)
    text_classification,  # noqa: F401  (registers text-classification)
    vae,  # noqa: F401  (registers vae)
)
from tailclip.problems.task import (
    TASKS,
    ModelTask,
    ModelTwin,
    NoiseSource,
    Task,
    TaskContext,
    TaskOptions,
    VectorizedTask,
    register_task,
)

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
