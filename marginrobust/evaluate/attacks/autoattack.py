"""AutoAttack (Croce & Hein, 2020) through ``pyautoattack``, as a fixed-epsilon attack.

Like every attack of :mod:`marginrobust.evaluate.attacks`, it runs on the logit-rescaled
model; the points it reports as broken are checked again there (misclassified, inside
[0, 1] and inside the budget).

Of its attacks only APGD-CE follows a cross-entropy gradient and so depends on the logit
scale; APGD-DLR and APGD-T (DLR ratios of logit differences), FAB (linearised logit
differences) and Square (a logit margin) do not. APGD-CE had PGD's weakness at spread 1
(200 digits test points, paper CNN width 0.5 bias first, 4 seeds, robust fraction at
epochs 10 / 120, APGD-CE alone): Linf 0.1, raw model 0.428 / 0.481, spread 1 0.492 /
0.550, spread 4 0.427 / 0.466; L2 1.0, raw 0.002 / 0.048, spread 1 0.004 / 0.009,
spread 4 0.001 / 0.001. So AutoAttack runs at spread 4, in one run as before.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from pyautoattack import AutoAttack as _PyAutoAttack
from torch import nn

from ...errors import UserError
from ...registry import register_attack
from .base import FixedEpsilonAttack, positive_option
from .foolbox_attacks import CE_LOGIT_SPREAD

VERSIONS = ("standard", "plus", "rand", "custom")
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

# pyautoattack targets the 9 most likely wrong classes; fewer exist below 10 classes.
_MAX_TARGETS = 9


@register_attack("autoattack")
class AutoAttack(FixedEpsilonAttack):
    """AutoAttack at each budget: ``pyautoattack.AutoAttack(...).run_standard_evaluation``.

    The ``standard`` version runs APGD-CE, APGD-T, FAB-T and Square; ``custom`` runs
    ``attacks_to_run``. Targeted attacks use ``min(9, classes - 1)`` target classes, and
    need at least 4 classes (the DLR losses compare the 3rd and 4th largest logits).

    Args:
        version: ``standard``, ``plus``, ``rand`` or ``custom``.
        attacks_to_run: With ``version="custom"`` only: a subset of ``apgd-ce``,
            ``apgd-dlr``, ``fab``, ``square``, ``apgd-t``, ``fab-t``.
        logit_spread: Median per-point logit spread of the attacked logits (the softmax
            temperature of APGD-CE; the other attacks do not depend on it).
        batch_size: Points per batch inside AutoAttack.
    """

    name = "autoattack"
    description = ("AutoAttack (pyautoattack): by default APGD-CE, APGD-T, FAB-T and Square, a "
                   "point robust only if it survives all.")

    def __init__(self, version: str = "standard", attacks_to_run: Sequence[str] | None = None,
                 logit_spread: float = CE_LOGIT_SPREAD, batch_size: int = 256) -> None:
        super().__init__(batch_size)
        if version not in VERSIONS:
            raise UserError(f"unknown AutoAttack version {version!r}; use one of "
                            f"{', '.join(VERSIONS)}")
        if version == "custom":
            if not attacks_to_run:
                raise UserError("AutoAttack version 'custom' needs attacks_to_run, "
                                "e.g. ['apgd-ce', 'apgd-t']")
            unknown = sorted(set(attacks_to_run) - set(ATTACK_NAMES))
            if unknown:
                raise UserError(f"unknown AutoAttack attacks {unknown}; use any of "
                                f"{', '.join(ATTACK_NAMES)}")
        elif attacks_to_run is not None:
            raise UserError(f"attacks_to_run needs version='custom', not {version!r}")
        self.version = version
        self.attacks_to_run = list(attacks_to_run) if attacks_to_run else None
        self.logit_spread = positive_option("logit_spread", logit_spread)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
            epsilon: float, seed: int) -> torch.Tensor:
        adversary = _PyAutoAttack(model, attacks=self.attacks_to_run, device=x.device,
                                  eps=epsilon, norm=norm, seed=seed, version=self.version)
        # the constructor has no verbose option and turns it on; off it keeps the logs quiet
        adversary.verbose = False
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        if n_classes < 4 and {"apgd-dlr", "apgd-t"} & set(adversary.attacks_to_run):
            raise UserError(f"AutoAttack's DLR losses need at least 4 classes, the model has "
                            f"{n_classes}; use version='custom' with e.g. ['apgd-ce', 'fab']")
        targets = min(_MAX_TARGETS, n_classes - 1)
        adversary.apgd_targeted.n_target_classes = min(
            adversary.apgd_targeted.n_target_classes, targets)
        adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, targets)
        # pyautoattack's dynamic-defence check ends with sys.settrace(None), which would
        # switch off a debugger's or coverage's tracer for the rest of the process
        tracer = sys.gettrace()
        try:
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=self.batch_size)
        finally:
            sys.settrace(tracer)
        return x_adv
