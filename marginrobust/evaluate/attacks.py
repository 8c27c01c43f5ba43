"""Adversarial attacks on logit-rescaled models, following foolbox 3's design.

The import point of the attacks; the code lives in cohesive modules:

* :mod:`.attacks_scale`: :class:`LogitScaled` and :func:`logit_scale`, why every attack
  runs on logits rescaled to a fixed median spread (invariance to the logit scale of a
  long-trained homogeneous net);
* :mod:`.attacks_base`: the :class:`Attack` base (validation, rescaling, eval mode,
  seeding, timing), the two families :class:`FixedEpsilonAttack` and
  :class:`MinimalNormAttack`, and :class:`AttackResult`;
* :mod:`.attacks_warm`: warm starts of minimal-norm attacks from earlier adversarials;
* :mod:`.attacks_foolbox`: the registered foolbox attacks ``pgd``, ``fmn``, ``ddn``,
  ``deepfool`` and ``cw`` (AutoAttack is in :mod:`.autoattack`).

Every attack class says what it is in one sentence (``description``) and whether it
returns minimal distances (``minimal_norm``).
"""

from __future__ import annotations

from .attacks_base import Attack, AttackResult, FixedEpsilonAttack, MinimalNormAttack
from .attacks_foolbox import (
    _L2FMN,  # noqa: F401  (the benchmarks call foolbox's L2 FMN with its projection fixed)
    CE_LOGIT_SPREAD,
    DDN,
    FMN,
    PGD,
    PGD_LOSSES,
    CarliniWagner,
    DeepFool,
)
from .attacks_scale import LogitScaled, logit_scale

__all__ = ["CE_LOGIT_SPREAD", "DDN", "FMN", "PGD", "PGD_LOSSES", "Attack", "AttackResult",
           "CarliniWagner", "DeepFool", "FixedEpsilonAttack", "LogitScaled", "MinimalNormAttack",
           "logit_scale"]
