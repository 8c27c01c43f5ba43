"""Robustness evaluation.

* :mod:`.threats`: threat models (a norm and its budgets) and the budget parser;
* :mod:`.attacks`, :mod:`.autoattack`: the registered attacks;
* :mod:`.certify`: Lipschitz-margin radii and IBP certificates;
* :mod:`.engine`: the :class:`~.engine.Evaluator`, attacks and certificates on tensors,
  returning typed :class:`~.unit.Evaluation` results;
* :mod:`.run`: :func:`~.run.evaluate_run`, every checkpoint of a run directory with a
  results store, resume and progress;
* :mod:`.store`: records, their keys and the per-run :class:`~.store.ResultsStore`;
* :mod:`.points`: the one seeded, class-balanced point selector.

Importing the package registers the built-in attacks.
"""

from . import attacks, autoattack  # noqa: F401  (registers the attacks)
