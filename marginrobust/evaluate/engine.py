"""The evaluation engine: attacks and certificates on tensors, returning typed results.

For each (split, norm, ε) it gives clean accuracy, the robust accuracy of every attack,
certified accuracy, and the per-point worst case over the attacks; minimal-norm attacks
and certificates also give per-point distances and radii. Consistency between the
figures is checked and violations are recorded as flags, never hidden (see
:mod:`.consistency`). A model that cannot be certified still gets every attack figure;
its certificate records say why they were skipped.

The engine touches no file: running a whole run directory, with resume and progress, is
:func:`marginrobust.evaluate.run.evaluate_run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import resolve_device
from ..precision import measurement_precision
from ..registry import ATTACKS
from .attack_options import attack_config, is_minimal_norm, worst_config
from .attacks import Attack
from .attacks import autoattack as _autoattack  # noqa: F401  (registers the attack)
from .certify.certifiers import (
    CERTIFICATES,
    CERTIFIERS,
    DEFAULT_CERTIFIERS,
    Certifier,
    NotCertifiable,
    record_keys,
    resolve_certifiers,
)
from .consistency import consistency_flags
from .points import select_points
from .store import EvalRecord, RecordKey, records_frame
from .threats import ThreatModel, default_threats, normalize_norm
from .unit import Evaluation, PriorResults, Unit

if TYPE_CHECKING:
    from ..data import Dataset

DEFAULT_ATTACKS = ("autoattack", "pgd", "fmn")


@dataclass(frozen=True)
class UnitRequest:
    """One evaluation unit as a runner names it: a checkpoint's model on one split's ``n``
    points under some threat models (what :meth:`Evaluator.pending_attacks`,
    :meth:`Evaluator.expected_keys` and :meth:`Evaluator.evaluate_unit` take)."""

    checkpoint: str
    split: str
    n: int
    threats: tuple[ThreatModel, ...]


class Evaluator:
    """Runs attacks and certificates on classifiers with inputs in [0, 1].

    Args:
        threats: Threat models (norm + ε grid); a norm in ``norms`` without one here
            uses the dataset's default grid.
        norms: The norms to evaluate (default: those of ``threats``, else L2 and Linf).
        attacks: Registered attack names (``autoattack``, ``pgd``, ``fmn``, ``ddn``,
            ``deepfool``, ``cw``, plugins) or :class:`Attack` instances.
        certify: The certifiers: ``True`` for the default set (``lipschitz``, ``ibp``,
            and ``crown`` and ``exact`` where each is cheap), ``False`` for none, or names from
            ``lipschitz``, ``ibp``, ``crown``, ``alpha-crown`` and ``exact``
            (:mod:`.certify.certifiers`). A certifier that cannot run gets skipped records
            saying why.
        n: Points per split.
        seed: Seed of the point selection and of every attack.
        device: ``auto``, ``cpu`` or ``cuda``.
        attack_options: Per attack name, keyword options for its factory, e.g.
            ``{"autoattack": {"version": "custom", "attacks_to_run": ["apgd-ce"]}}``.
        warm_start: Start each checkpoint's minimal-norm attacks that support it (FMN L2)
            from the previous checkpoint's adversarial points (stored under
            ``eval/adversarials/``). Off by default, because with it a checkpoint's
            results depend on the checkpoints before it. ``python -m benchmarks --only
            warm`` measures what it saves.
    """

    def __init__(self, threats: Sequence[ThreatModel] | None = None,
                 norms: Sequence[str] | None = None,
                 attacks: Sequence[str | Attack] = DEFAULT_ATTACKS,
                 certify: bool | Sequence[str] = True,
                 n: int = 500, seed: int = 0, device: str = "auto",
                 attack_options: dict[str, dict[str, Any]] | None = None,
                 warm_start: bool = False) -> None:
        if n < 1:
            raise UserError(f"the number of points must be positive, not {n}")
        self.threats = list(threats or [])
        if norms is None:
            norms = [t.norm for t in self.threats] or ["L2", "Linf"]
        self.norms = [normalize_norm(v) for v in norms]
        for t in self.threats:
            if t.norm not in self.norms:
                self.norms.append(t.norm)
        options = attack_options or {}
        unknown = sorted(set(options) - set(ATTACKS.names()))
        if unknown:
            raise UserError(f"options given for unknown attacks: {', '.join(unknown)}")
        self.attacks: list[Attack] = [
            a if isinstance(a, Attack) else ATTACKS.get(a)(**options.get(a, {}))
            for a in attacks]
        self.certifiers = resolve_certifiers(certify)
        self.certify = bool(self.certifiers)
        self.n = n
        self.seed = seed
        self.warm_start = warm_start
        self.device = resolve_device(device)
        self._certifier = Certifier(self.certifiers, by_default=certify is True)

    def threats_for(self, dataset: str | None) -> list[ThreatModel]:
        """The threat models used on ``dataset``: given ones, else its default grids."""
        given = {t.norm: t for t in self.threats}
        if all(norm in given for norm in self.norms):
            return [given[norm] for norm in self.norms]
        if dataset is None:
            raise UserError("give the epsilons of every norm (no dataset to take defaults from)")
        defaults = {t.norm: t for t in default_threats(dataset.split(":")[0])}
        return [given.get(norm) or defaults[norm] for norm in self.norms]

    def attacks_for(self, norm: str) -> list[Attack]:
        """The attacks that run under ``norm``."""
        return [a for a in self.attacks if norm in a.norms]

    def config_of(self, attack: Attack, norm: str) -> str:
        """The ``config`` of ``attack``'s records under ``norm`` (canonical JSON)."""
        return attack_config(attack, norm, self.warm_start)

    def worst_config_of(self, norm: str) -> str:
        """The ``config`` of the ``worst`` records under ``norm``."""
        return worst_config(self.attacks_for(norm), norm, self.warm_start)

    # ------------------------------------------------------------------ one model, one split
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str = "test",
                 checkpoint: str = "model", context: dict[str, Any] | None = None,
                 threats: Sequence[ThreatModel] | None = None) -> Evaluation:
        """Evaluate one model on fixed points.

        Args:
            model: Classifier returning logits.
            x, y: The evaluation points (inputs in [0, 1]) and labels.
            split: Label of the points (``test`` or ``train``).
            checkpoint: Label of the model in the records.
            context: Extra record fields (epoch, step, margins...: ``CONTEXT_FIELDS``).
            threats: Override the evaluator's threat models.
        """
        return self._evaluate(model, x, y, split, checkpoint, context, threats)

    def evaluate_unit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      request: UnitRequest, context: dict[str, Any] | None = None,
                      prior: PriorResults | None = None,
                      on_step: Callable[[str], None] | None = None) -> Evaluation:
        """Evaluate ``request`` on its points ``x, y``, skipping the figures in
        ``prior.done`` and reusing ``prior``'s arrays (a resumed unit gives the same
        numbers); ``on_step`` is called once per attack run of :meth:`pending_attacks`.

        Raises:
            UserError: If ``x`` does not hold the request's ``n`` points.
        """
        if len(x) != request.n:
            raise UserError(f"the unit asks for {request.n} points, {len(x)} were given")
        return self._evaluate(model, x, y, request.split, request.checkpoint, context,
                              request.threats, prior, on_step)

    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str,
                  checkpoint: str, context: dict[str, Any] | None,
                  threats: Sequence[ThreatModel] | None, prior: PriorResults | None = None,
                  on_step: Callable[[str], None] | None = None) -> Evaluation:
        """:meth:`evaluate`, skipping ``prior.done`` figures and reusing ``prior`` arrays;
        ``on_step`` is called once per attack run of :meth:`pending_attacks`.

        Runs with TF32 off (the caller's flags restored after): attack figures and the
        clean accuracy are measurements, and TF32 moves margins in the fourth digit.
        """
        with measurement_precision():
            return self._evaluate_exact(model, x, y, split, checkpoint, context, threats,
                                        prior, on_step)

    def _evaluate_exact(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str,
                        checkpoint: str, context: dict[str, Any] | None,
                        threats: Sequence[ThreatModel] | None, prior: PriorResults | None,
                        on_step: Callable[[str], None] | None) -> Evaluation:
        threats = list(threats or self.threats_for(None))
        model = model.to(self.device).eval()
        x, y = x.to(self.device), y.to(self.device)
        unit = Unit(self.seed, split, checkpoint, len(x), context or {},
                    prior or PriorResults())
        clean = self._clean(unit, model, x, y)
        if self.certify:
            self._certifier.certificates(unit, model, x, y, threats, clean)
        for threat in threats:
            for attack, todo in self._pending(unit, threat):
                self._attack(unit, attack, model, x, y, todo)
                if on_step:
                    on_step(f"{split} {attack.name} {threat.norm}")
            if self.certify:
                self._certifier.exact(unit, model, x, y, threat, clean,
                                      self._attack_distances(unit, threat.norm))
            for eps in threat.epsilons:
                self._worst_and_flags(unit, threat.norm, eps, clean)
        return Evaluation(split, checkpoint, unit.records, unit.arrays, unit.adversarials)

    def _pending(self, unit: Unit, threat: ThreatModel) -> list[tuple[Attack, ThreatModel]]:
        out = []
        for attack in self.attacks_for(threat.norm):
            config = self.config_of(attack, threat.norm)
            todo = [e for e in threat.epsilons
                    if not unit.done(attack.name, threat.norm, e, config)]
            if todo:
                out.append((attack, ThreatModel(threat.norm, tuple(todo))))
        return out

    def pending_attacks(self, request: UnitRequest, done: frozenset[RecordKey],
                        ) -> list[tuple[Attack, ThreatModel]]:
        """The attack runs an evaluation of ``request`` will make (one progress step each),
        given the ``done`` figures."""
        unit = Unit(self.seed, request.split, request.checkpoint, request.n, {},
                    PriorResults(done=done))
        return [p for t in request.threats for p in self._pending(unit, t)]

    def expected_keys(self, request: UnitRequest) -> set[RecordKey]:
        """The keys of every figure an evaluation of ``request`` gives."""
        unit = Unit(self.seed, request.split, request.checkpoint, request.n, {},
                    PriorResults())
        keys = set()
        for t in request.threats:
            attacks = self.attacks_for(t.norm)
            for eps in t.epsilons:
                keys |= {unit.rkey(a.name, t.norm, eps, self.config_of(a, t.norm))
                         for a in attacks}
                if attacks:
                    keys.add(unit.rkey("worst", t.norm, eps, self.worst_config_of(t.norm)))
                keys |= set(record_keys(unit, self.certifiers, t.norm, eps))
        return keys

    @staticmethod
    def _clean(unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        key = unit.akey("clean", None, None, "correct")
        clean = unit.get(key)
        if clean is None:
            with torch.no_grad():
                logits = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)])
            clean = unit.arrays[key] = (logits.argmax(1) == y).cpu().numpy()
        return clean

    # ------------------------------------------------------------------ attacks
    def _attack(self, unit: Unit, attack: Attack, model: nn.Module, x: torch.Tensor,
                y: torch.Tensor, threat: ThreatModel) -> None:
        norm = threat.norm
        config = self.config_of(attack, norm)
        dist_key = unit.akey(attack.name, norm, None, "distances", config)
        seconds_key = unit.akey(attack.name, norm, None, "seconds", config)
        stored = unit.get(dist_key)
        if is_minimal_norm(attack) and stored is not None:
            # One minimal-norm run answers every ε: reuse it rather than attack again.
            clean = unit.get(unit.akey("clean", None, None, "correct"))
            seconds = float(unit.get(seconds_key))
            for eps in threat.epsilons:
                unit.record(attack.name, norm, eps, config, clean, stored > eps, seconds,
                            stored)
            return
        adv_key = unit.akey(attack.name, norm, None, "adversarial", config)
        warm = self.warm_start and norm in attack.warm_start_norms
        result = attack(model, x, y, threat, seed=self.seed,
                        starting_points=unit.prior.starts.get(adv_key) if warm else None)
        if result.distances is not None:
            unit.arrays[dist_key] = result.distances
            unit.arrays[seconds_key] = np.array(result.seconds)
            if warm and result.adversarials is not None:
                unit.adversarials[adv_key] = result.adversarials
        for i, eps in enumerate(threat.epsilons):
            unit.arrays[unit.akey(attack.name, norm, eps, "robust", config)] = result.robust[i]
            unit.record(attack.name, norm, eps, config, result.clean_correct, result.robust[i],
                        result.seconds / len(threat.epsilons), result.distances)

    def _attack_distances(self, unit: Unit, norm: str) -> np.ndarray | None:
        """Per point, the smallest distance any minimal-norm attack found (None: none)."""
        found = [unit.get(unit.akey(a.name, norm, None, "distances", self.config_of(a, norm)))
                 for a in self.attacks_for(norm)]
        found = [d for d in found if d is not None]
        return np.minimum.reduce(found) if found else None

    def _worst_and_flags(self, unit: Unit, norm: str, eps: float, clean: np.ndarray) -> None:
        robust, distances = {}, {}
        for a in self.attacks_for(norm):
            config = self.config_of(a, norm)
            dist = unit.get(unit.akey(a.name, norm, None, "distances", config))
            r = dist > eps if dist is not None else unit.get(
                unit.akey(a.name, norm, eps, "robust", config))
            if r is not None:
                robust[a.name] = r
            if dist is not None:
                distances[a.name] = dist
        config = self.worst_config_of(norm)
        if robust and not unit.done("worst", norm, eps, config):
            unit.record("worst", norm, eps, config, clean,
                        np.logical_and.reduce([clean, *robust.values()]), 0.0)
        combined = (self._certifier.combined(unit, norm, eps, clean) if self.certify
                    else None)
        certified, radius = combined if combined is not None else (None, None)
        flags = consistency_flags(eps, clean, robust, certified, distances, radius)
        if flags:
            for r in unit.records:
                if r.norm == norm and r.eps == float(eps):
                    r.flags = sorted(set(r.flags) | set(flags))
            warnings.warn(f"consistency violation ({unit.split}, {norm}, eps={eps:g}): "
                          + "; ".join(flags), stacklevel=4)

    # ------------------------------------------------------------------ a model on a dataset
    def evaluate_data(self, model: nn.Module, data: Dataset | str,
                      splits: Sequence[str] = ("test",)) -> Any:
        """Evaluate ``model`` on fixed points of a dataset (a :class:`Dataset` or a name),
        chosen by :func:`~.points.select_points` from (``n``, ``seed``).

        Returns:
            A pandas DataFrame, one row per (split, method, norm, ε).
        """
        if isinstance(data, str):
            from ..data import load_dataset

            data = load_dataset(data)
        threats = self.threats_for(data.spec.name)
        records: list[EvalRecord] = []
        for split, pts in select_points(data, self.n, self.seed, splits).items():
            records.extend(self.evaluate(model, pts.x, pts.y, split, threats=threats).records)
        return records_frame(records)


__all__ = ["CERTIFICATES", "CERTIFIERS", "DEFAULT_ATTACKS", "DEFAULT_CERTIFIERS", "UnitRequest",
           "Evaluation", "Evaluator", "NotCertifiable", "PriorResults"]
