"""The attack families on logit-rescaled models, following foolbox 3's design.

The logits of a homogeneous ReLU net grow like rho^L during long training. At such scales
float32 softmax is one-hot, cross-entropy gradients vanish and gradient attacks fail for
numerical reasons, not because the model is robust. Every attack therefore runs on
:meth:`Attack.attacked_model`: the logits divided by one constant per checkpoint, so
that their median per-point spread is the attack's ``logit_spread``. That leaves every
decision boundary (and so every robust accuracy and minimal adversarial distance)
unchanged and makes each attack's result invariant to the logit scale, while keeping the
attacked logits where float32 is well-conditioned.

The spread is not a free choice for attacks that follow a cross-entropy gradient: it is
the softmax temperature, and it decides the direction they follow. Attacks with
scale-invariant losses (logit differences, DLR, margins) keep the default 1; PGD,
AutoAttack (its APGD-CE) and DDN use 4, measured stronger (see their classes).

Two families share one entry point, :meth:`Attack.__call__`:

* fixed-epsilon attacks (:class:`FixedEpsilonAttack`) say per budget and point whether the
  point is still correctly classified under attack;
* minimal-norm attacks (:class:`MinimalNormAttack`) return per point the norm of the
  smallest adversarial perturbation found, from which robustness at any budget follows.

Only points the model classifies correctly are attacked; every adversarial example an
attack returns is checked again here (misclassified, inside [0, 1], inside the budget).
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, final

import numpy as np
import torch
from torch import nn

from ...errors import UserError
from ..threats import NORMS, ThreatModel
from .scale import LogitScaled, logit_scale
from .warm import check_starts, usable_starts

# Float32 rounding of x + delta can push a perturbation a hair past its budget or the box.
_REL_TOL = 1e-4
_ABS_TOL = 1e-6


@dataclass
class AttackResult:
    """Per-point outcome of one attack under one threat model.

    Args:
        name: Registered attack name.
        norm: ``L2`` or ``Linf``.
        epsilons: The budgets, in the order of ``robust``'s rows.
        clean_correct: bool [n], the model classifies the clean point correctly.
        robust: bool [n_eps, n], still correctly classified under attack at that budget.
        distances: float64 [n] minimal adversarial norm found (0 where the clean point is
            misclassified, inf where the attack failed); None for fixed-epsilon attacks.
        seconds: Wall-clock time of the whole evaluation.
        logit_scale: The divisor applied to the logits while attacking.
        adversarials: float32 [n, ...] the adversarial points behind ``distances`` (NaN
            where none was found); minimal-norm attacks only. They can warm-start the
            same attack on a later checkpoint (``starting_points``).
        warm_started: How many points started from given ``starting_points``.
        restarted_cold: bool [n], the points that an evaluation with ``starting_points``
            left without an adversarial example and attacked again from scratch (None:
            no starting points were used).
    """

    name: str
    norm: str
    epsilons: tuple[float, ...]
    clean_correct: np.ndarray
    robust: np.ndarray
    distances: np.ndarray | None
    seconds: float
    logit_scale: float = 1.0
    adversarials: np.ndarray | None = None
    warm_started: int = 0
    restarted_cold: np.ndarray | None = None

    def clean_accuracy(self) -> float:
        """Fraction of points classified correctly without attack."""
        return float(self.clean_correct.mean())

    def robust_accuracy(self) -> list[float]:
        """Fraction of points still correctly classified under attack, per budget."""
        return [float(r.mean()) for r in self.robust]


@dataclass
class AttackOutcome:
    """What a family's evaluation hands back to :meth:`Attack.__call__`."""

    robust: np.ndarray
    distances: np.ndarray | None = None
    adversarials: np.ndarray | None = None
    warm_started: int = 0
    restarted_cold: np.ndarray | None = None


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(xb).argmax(dim=1) for xb in x.split(batch_size)])


def _check_inputs(model: nn.Module, x: Any, y: Any, threat: Any, seed: Any,
                  norms: tuple[str, ...], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float32 inputs and int64 labels on the inputs' device."""
    if not isinstance(threat, ThreatModel):
        raise UserError(f"threat must be a ThreatModel, got {type(threat).__name__}")
    if threat.norm not in norms:
        raise UserError(f"attack {name!r} does not support the {threat.norm} norm; "
                        f"it supports {', '.join(norms)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise UserError(f"seed must be an integer, got {seed!r}")
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise UserError("inputs must be a floating-point torch tensor")
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise UserError("labels must be an integer torch tensor")
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise UserError(f"need inputs (n, ...) and labels (n,) with n >= 1, got shapes "
                        f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise UserError("inputs must be finite and lie in [0, 1]")
    param = next(model.parameters(), None)
    if param is not None and param.device != x.device:
        raise UserError(f"the model is on {param.device} but the inputs are on {x.device}")
    # float32 throughout: pyautoattack casts to float and foolbox's defaults assume it
    return x.detach().float().contiguous(), y.detach().long().to(x.device)


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while attacking; both restored afterwards.

    foolbox (through eagerpy) and FAB call ``loss.backward()``, which would otherwise
    accumulate gradients into the parameters of a model that may be mid-training.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for the attack without disturbing the caller's random streams."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


class Attack(ABC):
    """Base of all attacks: validation, logit rescaling, eval mode, seeding, timing.

    Subclasses set ``name``, ``description`` and ``norms`` and implement a family's
    ``run``.

    Attributes:
        name: The registered name.
        description: One sentence saying what the attack is (``marginrobust attacks``
            lists it); empty if a subclass gives none.
        norms: The norms it supports.
        minimal_norm: Whether it returns per-point minimal adversarial distances, which
            answer every budget at once (True for :class:`MinimalNormAttack`).
        warm_start_norms: Norms under which it starts from earlier adversarial points.
        logit_spread: The median per-point logit spread (standard deviation across
            classes) of the logits it attacks; an instance attribute where an attack
            takes it as an option.

    Args:
        batch_size: Points attacked at once (bounds memory).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = NORMS
    minimal_norm: ClassVar[bool] = False
    # Norms under which a subclass starts from earlier adversarial points (run_warm).
    warm_start_norms: ClassVar[tuple[str, ...]] = ()
    logit_spread: float = 1.0

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = positive_int_option("batch_size", batch_size)

    @torch.no_grad()
    def attacked_model(self, model: nn.Module, x: torch.Tensor) -> LogitScaled:
        """The model this attack attacks on inputs ``x``: ``model`` with its logits rescaled
        to a median spread of ``logit_spread`` over ``x`` (this puts ``model`` in eval
        mode; :meth:`__call__` restores the mode it had)."""
        scale = logit_scale(model, x, self.batch_size) / positive_option("logit_spread",
                                                                   self.logit_spread)
        return LogitScaled(model, scale).eval()

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 threat: ThreatModel, seed: int = 0,
                 starting_points: torch.Tensor | np.ndarray | None = None) -> AttackResult:
        """Attack ``model`` on ``(x, y)`` at every budget of ``threat``.

        Args:
            model: Classifier returning logits (not rescaled: this attacks
                :meth:`attacked_model`).
            x: Inputs in [0, 1], shape (n, ...), on the model's device.
            y: Integer labels, shape (n,).
            threat: Norm and budgets; the norm must be in ``self.norms``.
            seed: Seed for torch's random streams (the caller's streams are restored).
            starting_points: Earlier adversarial points, same shape as ``x`` (NaN rows:
                none), e.g. ``AttackResult.adversarials`` of the previous checkpoint.
                Used under the norms in the attack's ``warm_start_norms``, ignored
                otherwise.

        Raises:
            UserError: On invalid inputs, labels, threat model or an unsupported norm.
        """
        start = time.perf_counter()
        x, y = _check_inputs(model, x, y, threat, seed, self.norms, self.name)
        starts = (check_starts(starting_points, x) if threat.norm in self.warm_start_norms
                  else None)
        if model.training:
            warnings.warn(f"attack {self.name!r}: the model is in train mode; attacking it "
                          "in eval mode (its mode is restored afterwards)", stacklevel=2)
        with _frozen_eval(model), _seeded(int(seed), x.device):
            scaled = self.attacked_model(model, x)
            pred = _predict(scaled, x, self.batch_size)
            n_classes = int(scaled(x[:1]).shape[1])
            if int(y.min()) < 0 or int(y.max()) >= n_classes:
                raise UserError(f"labels must lie in [0, {n_classes - 1}] for this model")
            correct = pred == y
            out = self._evaluate(scaled, x, y, correct, threat, int(seed), starts)
        return AttackResult(name=self.name, norm=threat.norm, epsilons=threat.epsilons,
                            clean_correct=correct.cpu().numpy(), robust=out.robust,
                            distances=out.distances, seconds=time.perf_counter() - start,
                            logit_scale=scaled.scale, adversarials=out.adversarials,
                            warm_started=out.warm_started,
                            restarted_cold=out.restarted_cold)

    @abstractmethod
    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  correct: torch.Tensor, threat: ThreatModel, seed: int,
                  starts: torch.Tensor | None) -> AttackOutcome:
        """The family's evaluation of the clean-correct points."""

    def _batches(self, correct: torch.Tensor) -> Iterator[torch.Tensor]:
        """Indices of the clean-correct points, ``batch_size`` at a time (none if none)."""
        idx = torch.nonzero(correct).flatten()
        # split() of an empty tensor yields one empty batch, which foolbox cannot attack
        if len(idx):
            yield from idx.split(self.batch_size)

    def _adversarial(self, model: nn.Module, x_adv: torch.Tensor,
                     y: torch.Tensor) -> torch.Tensor:
        """Which returned points really are misclassified and inside [0, 1]."""
        in_box = (x_adv >= -_ABS_TOL).flatten(1).all(1) & (x_adv <= 1 + _ABS_TOL).flatten(1).all(1)
        return (_predict(model, x_adv, self.batch_size) != y) & in_box


class FixedEpsilonAttack(Attack):
    """An attack that searches for an adversarial example inside a given budget."""

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
            epsilon: float, seed: int) -> torch.Tensor:
        """Adversarial candidates for one batch of correctly classified points.

        Args:
            model: The logit-rescaled model, in eval mode.
            x: Clean inputs of the batch.
            y: Their labels.
            norm: ``L2`` or ``Linf``.
            epsilon: The budget.
            seed: The evaluation's seed (torch is already seeded with it).

        Returns:
            Perturbed inputs, same shape as ``x``.
        """

    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  correct: torch.Tensor, threat: ThreatModel, seed: int,
                  starts: torch.Tensor | None) -> AttackOutcome:
        robust = correct.unsqueeze(0).repeat(len(threat.epsilons), 1)
        over_budget = 0
        for idx in self._batches(correct):
            xb, yb = x[idx], y[idx]
            for k, eps in enumerate(threat.epsilons):
                x_adv = self.run(model, xb, yb, threat.norm, eps, seed).detach()
                adv = self._adversarial(model, x_adv, yb)
                within = threat.distances(x_adv, xb) <= eps * (1 + _REL_TOL) + _ABS_TOL
                over_budget += int((adv & ~within).sum())
                robust[k, idx] = ~(adv & within)
        if over_budget:
            warnings.warn(f"attack {self.name!r} returned {over_budget} adversarial points "
                          "outside the budget; they were not counted", stacklevel=3)
        return AttackOutcome(robust.cpu().numpy())


class MinimalNormAttack(Attack):
    """An attack that searches for the smallest adversarial perturbation."""

    minimal_norm = True

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
            seed: int) -> torch.Tensor:
        """Smallest adversarial candidates for one batch of correctly classified points.

        Args:
            model: The logit-rescaled model, in eval mode.
            x: Clean inputs of the batch.
            y: Their labels.
            norm: ``L2`` or ``Linf``.
            seed: The evaluation's seed (torch is already seeded with it).

        Returns:
            Perturbed inputs, same shape as ``x``; failures may be anything.
        """

    def run_warm(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                 seed: int, starting_points: torch.Tensor) -> torch.Tensor:
        """Like :meth:`run`, from adversarial ``starting_points`` (one per point).

        Only called under the norms in ``warm_start_norms``; every starting point is
        misclassified by ``model`` and inside [0, 1].
        """
        raise NotImplementedError(f"attack {self.name!r} cannot be warm-started")

    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  correct: torch.Tensor, threat: ThreatModel, seed: int,
                  starts: torch.Tensor | None) -> AttackOutcome:
        distances = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        adversarials = torch.full_like(x, float("nan"))
        n_warm = 0
        for idx in self._batches(correct):
            xb, yb = x[idx], y[idx]
            if starts is None:
                x_adv = self.run(model, xb, yb, threat.norm, seed).detach()
            else:
                sp, warm = usable_starts(model, xb, yb, starts[idx], self.batch_size)
                n_warm += int(warm.sum())
                x_adv = xb.clone()
                cold = ~warm
                if warm.any():
                    x_adv[warm] = self.run_warm(model, xb[warm], yb[warm], threat.norm, seed,
                                                sp[warm]).detach()
                if cold.any():
                    x_adv[cold] = self.run(model, xb[cold], yb[cold], threat.norm,
                                           seed).detach()
            adv = self._adversarial(model, x_adv, yb)
            d = threat.distances(x_adv, xb)
            if starts is not None:
                # A start that is still adversarial as given bounds the result: keep it
                # where the warm run (which begins from a stretched start) ended further.
                given = starts[idx]
                ok = torch.isfinite(given).flatten(1).all(1)
                ok &= self._adversarial(model, given.nan_to_num(), yb)
                d_given = threat.distances(given.nan_to_num(), xb)
                closer = ok & (~adv | (d_given < d))
                x_adv[closer], adv = given[closer], adv | closer
                d = torch.where(closer, d_given, d)
            distances[idx] = torch.where(adv, d, torch.full_like(d, float("inf")))
            adversarials[idx[adv]] = x_adv[adv]
        dist = distances.cpu().numpy()
        robust = np.stack([dist > eps for eps in threat.epsilons])
        return AttackOutcome(robust, dist, adversarials.cpu().numpy(), n_warm)



def positive_int_option(name: str, value: Any) -> int:
    """``value`` as an int, or a :class:`UserError` naming option ``name`` unless it is a
    positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_option(name: str, value: Any) -> float:
    """``value`` as a float, or a :class:`UserError` naming option ``name`` unless it is a
    finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not (np.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive number, got {value!r}")
    return float(value)



def minimal_norm_kind(kind: object) -> bool:
    """Whether an attack class, or a factory registered for one, returns per-point minimal
    adversarial distances (answering every ε at once): the one rule the evaluator and the
    report both ask.

    Decided by the class, never by a name: its ``minimal_norm`` flag where it has one, else
    whether it is a :class:`MinimalNormAttack` subclass, so plugin attacks count too.
    """
    flag = getattr(kind, "minimal_norm", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(kind, type) and issubclass(kind, MinimalNormAttack)
