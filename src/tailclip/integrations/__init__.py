"""Callbacks that put tailclip optimizers inside the training stacks people use.

* :mod:`tailclip.integrations.transformers`: ``TailclipTrainerCallback`` for the Hugging Face
  ``Trainer`` and ``make_optimizer`` (a tailclip optimizer, AGNI included, with Trainer's
  decay / no-decay groups).
* :mod:`tailclip.integrations.lightning`: ``TailclipCallback`` for ``lightning.pytorch``.

Each module imports its framework; this package imports neither (``pip install
tailclip[integrations]`` brings ``lightning`` and ``accelerate``, ``tailclip[tasks]``
``transformers``). Recipes: ``docs/integrations.md``.
"""
