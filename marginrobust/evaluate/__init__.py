"""Robustness evaluation.

* :mod:`.threats`: threat models (a norm and its budgets) and the budget parser;
* :mod:`.attacks`, :mod:`.autoattack`: the registered attacks;
* :mod:`.certify`: Lipschitz-margin radii and IBP certificates; :mod:`.certify_crown`:
  CROWN and alpha-CROWN margin bounds (and the pre-activation bounds of the exact
  verifier, :mod:`.certify_exact`); :mod:`.certify_radius`: per-point certified radii of
  IBP, CROWN and alpha-CROWN by a search on ε; :mod:`.certificates`: which certifiers the
  engine runs and what it records;
* :mod:`.engine`: the :class:`~.engine.Evaluator`, attacks and certificates on tensors,
  returning typed :class:`~.unit.Evaluation` results;
* :mod:`.run`: :func:`~.run.evaluate_run`, every checkpoint of a run directory with a
  results store, resume and progress;
* :mod:`.store`: records, their keys and the per-run :class:`~.store.ResultsStore`;
* :mod:`.points`: the one seeded, class-balanced point selector.

The built-in attacks are registered on the first look-up in
:data:`marginrobust.registry.ATTACKS`, so importing a light module of this package (the
store, the points, the threats) does not import torch's attack libraries.
"""
