"""Tasks for the experiment engine: synthetic problems and real models.

Importing this package registers every built-in task in :data:`tailclip.engine.tasks.TASKS`
(one module per task, each decorated with :func:`~tailclip.engine.tasks.register_task`).
"""

from tailclip.problems import (
    image_classification,  # noqa: F401  (registers image-classification)
    imbalanced_softmax,  # noqa: F401  (registers imbalanced-softmax)
    language_model,  # noqa: F401  (registers language-model)
    quadratic,  # noqa: F401  (registers noisy-quadratic)
    synthetic,  # noqa: F401  (registers stochastic-quadratic)
    text_classification,  # noqa: F401  (registers text-classification)
    vae,  # noqa: F401  (registers vae)
)
