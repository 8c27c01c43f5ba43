"""Robustness evaluation.

* :mod:`.threats`: threat models (a norm and its budgets) and the budget parser;
* :mod:`.attacks`: the registered attacks, one module per family (foolbox's, AutoAttack),
  on a shared base (:mod:`.attacks.base`: what every attack validates and returns);
* :mod:`.certify`: the certifiers, one module each (Lipschitz margin and IBP, CROWN and
  alpha-CROWN, the exact verifier), the per-point radius search, and
  :mod:`.certify.certifiers`: which certifiers the engine runs and what it records;
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
