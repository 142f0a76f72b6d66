"""The experiment engine: validated configs, a runner that resumes, a SQLite store, sweeps.

* :mod:`tailclip.engine.config`: the YAML schema, ``--set`` overrides, sweep expansion, run ids.
* :mod:`tailclip.engine.tasks`: the task protocol (model tasks, vectorized tasks) and registry.
* :mod:`tailclip.engine.schedules`: learning-rate schedules.
* :mod:`tailclip.engine.runner`: ``run_one``: train one config, log, checkpoint, resume.
* :mod:`tailclip.engine.store`: ``ResultsStore``, the SQLite results store.
* :mod:`tailclip.engine.sweep`: the local sweep backend (a process pool claiming runs).

Submodules are imported on demand; this package imports nothing itself.
"""
