"""The experiment engine: validated configs, a runner that resumes, a SQLite store, sweeps.

* :mod:`tailclip.engine.config`: the config schema and its validation (``parse_config``);
  :mod:`~tailclip.engine.yaml_loading` (YAML files, built-in configs, ``--set`` overrides),
  :mod:`~tailclip.engine.optimizer_spec` (optimizer hyperparameters, resolved once),
  :mod:`~tailclip.engine.identity` (run ids), :mod:`~tailclip.engine.grid` (sweep expansion),
  :mod:`~tailclip.engine.devices` (``train.device``).
* :mod:`tailclip.engine.schedules`: learning-rate schedules.
* :mod:`tailclip.engine.train_steps`: the steps of a model task and of a vectorized task.
* :mod:`tailclip.engine.runner`: ``run_one``: train one config, log, checkpoint, resume.
* :mod:`tailclip.engine.tails`: ``tailclip tails``, the noise of a config's task.
* :mod:`tailclip.engine.store`: ``ResultsStore``, the SQLite results store.
* :mod:`tailclip.engine.sweep`: the local sweep backend (a process pool claiming runs).

Tasks and their registry live below the engine, in :mod:`tailclip.problems`.
Submodules are imported on demand; this package imports nothing itself.
"""
