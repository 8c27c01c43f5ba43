"""Adversarial attacks on logit-rescaled models, following foolbox 3's design.

The import point of the attacks; the code lives in cohesive modules:

* :mod:`.scale`: :class:`LogitScaled` and :func:`logit_scale`, why every attack
  runs on logits rescaled to a fixed median spread (invariance to the logit scale of a
  long-trained homogeneous net);
* :mod:`.base`: the :class:`Attack` base (validation, rescaling, eval mode,
  seeding, timing), the two families :class:`FixedEpsilonAttack` and
  :class:`MinimalNormAttack`, and :class:`AttackResult`;
* :mod:`.warm`: warm starts of minimal-norm attacks from earlier adversarials;
* :mod:`.foolbox_attacks`: the registered foolbox attacks ``pgd``, ``fmn``, ``ddn``,
  ``deepfool`` and ``cw`` (AutoAttack is in :mod:`.autoattack`).

Every attack class says what it is in one sentence (``description``) and whether it
returns minimal distances (``minimal_norm``).
"""

from __future__ import annotations

from .base import Attack, AttackResult, FixedEpsilonAttack, MinimalNormAttack
from .foolbox_attacks import (
    CE_LOGIT_SPREAD,
    DDN,
    FMN,
    PGD,
    PGD_LOSSES,
    CarliniWagner,
    DeepFool,
    ProjectedL2FMN,
)
from .scale import LogitScaled, logit_scale

__all__ = ["CE_LOGIT_SPREAD", "DDN", "FMN", "PGD", "PGD_LOSSES", "Attack", "AttackResult",
           "CarliniWagner", "DeepFool", "FixedEpsilonAttack", "LogitScaled", "MinimalNormAttack",
           "ProjectedL2FMN", "logit_scale"]
