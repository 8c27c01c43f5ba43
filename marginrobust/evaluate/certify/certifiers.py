"""Certificates inside the engine: which certifiers run, what they compute and record, and
certificate records marked as skipped, with the reason, for a model that cannot be
certified (its attack figures are computed all the same).

The certifiers (``Evaluator(certify=...)``: ``True`` for :data:`DEFAULT_CERTIFIERS`,
``False`` for none, or names from :data:`CERTIFIERS`; in the default set CROWN runs only
where :func:`.crown.crown_cost` is at most :data:`CROWN_DEFAULT_MAX`, elsewhere its
records are skipped saying how to ask for it):

* ``lipschitz``: Lipschitz-margin radii per norm (:func:`.lipschitz_ibp.lipschitz_radii`);
* ``ibp``: interval bound propagation, certified or not at each ε (as before), and now a
  radius per norm too, by a search on ε (:func:`.radius.certified_radii`);
* ``crown``, ``alpha-crown``: radii per norm by the same search on their margin bounds;
* ``exact``: the exact minimal Linf distance by MILP (:mod:`.exact`) within a
  per-point time limit, after the attacks (their distances cap it); its radius is the
  proven lower bound, and a point left open around a budget ε is decided at ε by a
  feasibility MILP. Linf only: it has no L2 records. In the default set it runs only on
  nets of at most ``exact.EXACT_MAX_UNITS`` ReLU units.

Each certifier ``name`` records ``certify-<name>`` per (norm, ε): the certified fraction
(radius > ε; IBP: its direct check at ε) and the median radius. Its per-point arrays are
``radius`` per norm (and IBP's ``certified`` per ε), under the certifier's options as
config. ``certified`` records the points certified by any of those that ran, with them in
its config (``{}``, as before, for exactly Lipschitz and IBP, so old records keep their
meaning).

The certificate mathematics is in the ``certify*`` modules; this module decides what to
compute, what to reuse from an interrupted evaluation, and what to record. (About 430
lines: the five certifiers' bookkeeping shares the resume and record logic, which would
be spread over as many modules otherwise.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import UserError
from ...margins import param_norm
from ..consistency import certified_mask
from ..store import NO_OPTIONS, ArrayKey, canonical_json
from ..threats import NORMS, ThreatModel
from ..unit import Unit
from .crown import ALPHA_LR, ALPHA_STEPS, crown_cost
from .lipschitz_ibp import ibp_certified, lipschitz_radii
from .operator_norms import operator_norm_bounds
from .radius import certified_radii
from .tracing import NotCertifiable, build_chain, certify_reason

CERTIFIERS = ("lipschitz", "ibp", "crown", "alpha-crown", "exact")
# alpha-CROWN is left out: 5 to 15 times CROWN's time for radii within 1 % of CROWN's on
# the digits nets (README, certificates). ``exact`` runs by default only on nets of at most
# exact.EXACT_MAX_UNITS ReLU units (elsewhere its records are skipped, saying so).
DEFAULT_CERTIFIERS = ("lipschitz", "ibp", "crown", "exact")
# In the default set CROWN runs where it is cheap: at most this many multiply-adds per
# point and bound (crown.crown_cost, an upper estimate) on the device. On the CPU
# 1e7 admits MLPs such as 64-64-32-10 (3e4) and a conv-ReLU-linear net of 1,024 units (8e5),
# and leaves out the CPU bench's digits CNN at width 0.5 (3e8: 0.2 to 0.5 s per point and
# norm on one core, tens of times its attacks). The cuda figure assumes a GPU 1000 times
# faster and is not measured.
CROWN_DEFAULT_MAX = {"cpu": 1e7, "cuda": 1e10}
COMBINED = "certified"
# Every method a certificate record may carry.
CERTIFICATES = (*(f"certify-{name}" for name in CERTIFIERS), COMBINED)
# The certifiers whose combination the records of config {} hold (written before CROWN).
LEGACY = frozenset({"lipschitz", "ibp"})
# Relative precision of the radii found by search, and exact's seconds per point.
RADIUS_TOL = 1e-3
EXACT_TIME_LIMIT = 30.0


def resolve_certifiers(certify: bool | Sequence[str]) -> tuple[str, ...]:
    """The certifier names of ``Evaluator(certify=...)``, in :data:`CERTIFIERS` order.

    Raises:
        UserError: For an unknown name (naming the allowed ones), or ``exact`` where the
            exact verifier is not available.
    """
    if certify is True:
        return DEFAULT_CERTIFIERS
    if certify is False or certify is None:
        return ()
    names = [certify] if isinstance(certify, str) else list(certify)
    unknown = [n for n in names if n not in CERTIFIERS]
    if unknown:
        raise UserError(f"unknown certifier {', '.join(map(repr, unknown))}; use True, False "
                        f"or names from {', '.join(CERTIFIERS)}")
    if "exact" in names and _exact_module() is None:
        raise UserError("the exact certifier is not available in this version")
    return tuple(n for n in CERTIFIERS if n in names)


def _exact_module() -> Any:
    try:
        from . import exact
    except ImportError:
        return None
    return exact


def method(name: str) -> str:
    """The records' method of certifier ``name``: ``certify-<name>``."""
    return f"certify-{name}"


def certifier_config(name: str) -> str:
    """The options that decide certifier ``name``'s figures, as canonical JSON (the
    records' config; Lipschitz and IBP records have none)."""
    options: dict[str, Any] = {}
    if name in ("crown", "alpha-crown"):
        options["rel_tol"] = RADIUS_TOL
    if name == "alpha-crown":
        options.update(steps=ALPHA_STEPS, lr=ALPHA_LR)
    if name == "exact":
        options["time_limit"] = EXACT_TIME_LIMIT
    return canonical_json(options)


def radius_config(name: str) -> str:
    """The config of certifier ``name``'s radius arrays (IBP's radius is searched too,
    though its records, decided by the direct check at ε, have none)."""
    return canonical_json({"rel_tol": RADIUS_TOL}) if name == "ibp" else certifier_config(
        name)


def combined_config(names: Sequence[str]) -> str:
    """The config of the ``certified`` records of these certifiers."""
    if set(names) == LEGACY:
        return NO_OPTIONS
    return canonical_json({"certificates": {method(n): json.loads(certifier_config(n))
                                            for n in names}})


def certifiers_for(names: Sequence[str], norm: str) -> tuple[str, ...]:
    """The certifiers among ``names`` that run under ``norm`` (exact: Linf only)."""
    return tuple(n for n in names if not (n == "exact" and norm != "Linf"))


def record_keys(unit: Unit, names: Sequence[str], norm: str, eps: float) -> list[Any]:
    """The keys of the certificate records of one (norm, ε)."""
    here = certifiers_for(names, norm)
    keys = [unit.rkey(method(n), norm, eps, certifier_config(n)) for n in here]
    if here:
        keys.append(unit.rkey(COMBINED, norm, eps, combined_config(here)))
    return keys


class Certifier:
    """Computes and records the certificates of evaluations, sharing the operator-norm
    bounds of one model state between its splits.

    Args:
        names: The certifiers to run (:func:`resolve_certifiers`).
        by_default: They are the default set (then CROWN runs only where it is cheap).
    """

    def __init__(self, names: Sequence[str] = DEFAULT_CERTIFIERS,
                 by_default: bool = False) -> None:
        self.names = tuple(names)
        self.by_default = by_default
        self._bounds_key: tuple[Any, ...] | None = None
        self._bounds_cache: list[Any] = []

    def bounds(self, model: nn.Module, shape: tuple[int, ...]) -> list[Any]:
        """Operator-norm bounds, computed once per model state and shared by the splits."""
        # ρ in the key: the same module object trained further must get new bounds.
        key = (id(model), shape, param_norm(model))
        if self._bounds_key != key:
            self._bounds_cache = operator_norm_bounds(model, shape)
            self._bounds_key = key
        return self._bounds_cache

    def not_certifiable(self, model: nn.Module, shape: tuple[int, ...]) -> str | None:
        """Why ``model`` cannot be certified, in one sentence (None if it can)."""
        return certify_reason(model, shape)

    # ------------------------------------------------------------------ before the attacks
    def certificates(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     threats: Sequence[ThreatModel], clean: np.ndarray) -> None:
        """Every certifier but ``exact``: arrays and per-certifier records (for a model that
        cannot be certified, skipped records saying why)."""
        grid = [(t.norm, e) for t in threats for e in t.epsilons]
        names = [n for n in self.names if n != "exact"]
        pending = [(norm, eps, n) for norm, eps in grid for n in certifiers_for(names, norm)
                   if not unit.done(method(n), norm, eps, certifier_config(n))]
        reason = None
        if pending or any(unit.get(self._radius_key(unit, n, norm)) is None
                          for n in names for norm in {t.norm for t in threats}):
            reason = self.not_certifiable(model, tuple(x.shape[1:]))
            if reason is None:
                costly = self._left_out("crown", model, tuple(x.shape[1:]), x.device)
                if costly is not None:
                    names.remove("crown")
                    self._skip(unit, [unit.rkey(method("crown"), norm, eps,
                                                certifier_config("crown"))
                                      for norm, eps, n in pending if n == "crown"],
                               clean, costly)
                    pending = [p for p in pending if p[2] != "crown"]
                try:
                    self._compute(unit, model, x, y, threats, clean, names)
                except NotCertifiable as exc:
                    reason = str(exc)
        if reason is not None:
            keys = [k for norm, eps in grid for k in record_keys(unit, self.names, norm, eps)
                    if k.method != method("exact")]
            self._skip(unit, keys, clean, reason)
            return
        for norm, eps, name in pending:
            self._record(unit, name, norm, eps, clean)

    def _left_out(self, name: str, model: nn.Module, shape: tuple[int, ...],
                  device: torch.device) -> str | None:
        """Why the default set leaves certifier ``name`` (``crown`` or ``exact``) out for
        ``model`` as too costly (None: it runs, by default because it is cheap, or because
        it was asked for by name)."""
        if not (self.by_default and name in self.names):
            return None
        chain = build_chain(model, shape)
        if name == "crown":
            cost = crown_cost(chain)
            limit = CROWN_DEFAULT_MAX.get(device.type, CROWN_DEFAULT_MAX["cpu"])
            if cost <= limit:
                return None
            return (f"CROWN runs by default only where it is cheap: about {cost:.1e} "
                    f"multiply-adds per point and bound for this model, above {limit:.0e} "
                    f"on {device.type}; ask for it by name (certify=[..., 'crown'])")
        exact_module = _exact_module()
        if exact_module.exact_is_cheap(chain):
            return None
        return (f"the exact verifier runs by default only on networks of at most "
                f"{exact_module.EXACT_MAX_UNITS} ReLU units and max-pool outputs; ask for it "
                f"by name (certify=[..., 'exact']; up to {EXACT_TIME_LIMIT:g} s per point)")

    def _radius_key(self, unit: Unit, name: str, norm: str | None) -> ArrayKey:
        return unit.akey(method(name), norm, None, "radius", radius_config(name))

    def _seconds_key(self, unit: Unit, name: str, norm: str | None) -> ArrayKey:
        return unit.akey(method(name), norm, None, "seconds", radius_config(name))

    def _compute(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 threats: Sequence[ThreatModel], clean: np.ndarray,
                 names: Sequence[str]) -> None:
        norms = [t.norm for t in threats]
        if "lipschitz" in names:
            self._lipschitz(unit, model, x, y)
        if "ibp" in names:
            for t in threats:
                for eps in t.epsilons:
                    self._ibp(unit, model, x, y, t.norm, eps, clean)
        for name in names:
            if name in ("ibp", "crown", "alpha-crown"):
                for norm in norms:
                    self._bisected(unit, name, model, x, y, norm, clean)

    def _lipschitz(self, unit: Unit, model: nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> None:
        keys = {norm: self._radius_key(unit, "lipschitz", norm) for norm in NORMS}
        if any(unit.get(k) is None for k in keys.values()):
            start = time.perf_counter()
            res = lipschitz_radii(model, x, y, bounds=self.bounds(model, tuple(x.shape[1:])))
            unit.arrays[keys["L2"]], unit.arrays[keys["Linf"]] = res.l2, res.linf
            unit.arrays[self._seconds_key(unit, "lipschitz", None)] = np.array(
                time.perf_counter() - start)

    def _bisected(self, unit: Unit, name: str, model: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, norm: str, clean: np.ndarray) -> None:
        """Radii of a bound-propagation certifier by search on ε (correct points only)."""
        key = self._radius_key(unit, name, norm)
        if unit.get(key) is not None:
            return
        start = time.perf_counter()
        radius = np.zeros(len(clean))
        idx = np.flatnonzero(clean)
        if len(idx):
            radius[idx] = certified_radii(model, x[idx], y[idx], name, norm, RADIUS_TOL)
        unit.arrays[key] = radius
        unit.arrays[self._seconds_key(unit, name, norm)] = np.array(
            time.perf_counter() - start)

    @staticmethod
    def _ibp(unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
             eps: float, clean: np.ndarray) -> None:
        """IBP certificates at ε, reusing what smaller or equal budgets already decided.

        Both norms propagate the same Linf box, and interval arithmetic is monotone in the
        box: a point IBP could not certify at ε' ≤ ε (under either norm) cannot be certified
        at ε, so only the points still certified at every smaller budget are propagated.
        """
        key = unit.akey("certify-ibp", norm, eps, "certified")
        if unit.get(key) is not None:
            return
        start = time.perf_counter()
        candidates = clean.copy()
        same = [(k, v) for k, v in {**unit.prior.arrays, **unit.arrays}.items()
                if (k.split, k.method, k.kind, k.n, k.seed, k.config)
                == (unit.split, "certify-ibp", "certified", unit.n, unit.seed, NO_OPTIONS)
                and k.eps is not None and k.eps <= eps]
        exact = [v for k, v in same if k.eps == eps]
        if exact:
            certified = exact[0] & clean
        else:
            for _, value in same:
                candidates &= value
            certified = np.zeros_like(clean)
            idx = np.flatnonzero(candidates)
            if len(idx):
                certified[idx] = ibp_certified(model, x[idx], y[idx], eps, norm)
            certified &= clean
        unit.arrays[key] = certified
        unit.arrays[unit.akey("certify-ibp", norm, eps, "seconds")] = np.array(
            time.perf_counter() - start)

    # ------------------------------------------------------------------ after the attacks
    def exact(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              threat: ThreatModel, clean: np.ndarray, upper: np.ndarray | None) -> None:
        """The exact certifier under ``threat`` (Linf only), its per-point time limit
        :data:`EXACT_TIME_LIMIT`; ``upper``: the attacks' per-point distances, if any."""
        if "exact" not in self.names or threat.norm != "Linf":
            return
        config = certifier_config("exact")
        pending = [eps for eps in threat.epsilons
                   if not unit.done(method("exact"), threat.norm, eps, config)]
        key = self._radius_key(unit, "exact", "Linf")
        if not pending and unit.get(key) is not None:
            return
        if unit.get(key) is None:
            reason = self.not_certifiable(model, tuple(x.shape[1:])) or self._left_out(
                "exact", model, tuple(x.shape[1:]), x.device)
            if reason is not None:
                self._skip(unit, [unit.rkey(method("exact"), "Linf", e, config)
                                  for e in pending], clean, reason)
                return
            self._exact(unit, model, x, y, clean, upper, threat.epsilons)
        for eps in pending:
            self._record(unit, "exact", "Linf", eps, clean)

    def _exact(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               clean: np.ndarray, upper: np.ndarray | None,
               epsilons: Sequence[float]) -> None:
        exact_module = _exact_module()
        assert exact_module is not None  # resolve_certifiers checked it
        start = time.perf_counter()
        lower = self.best_radius(unit, "Linf", clean, exclude="exact")
        res = exact_module.exact_linf_distances(model, x, y, "Linf", upper=upper, lower=lower,
                                                time_limit=EXACT_TIME_LIMIT)
        radius = np.where(clean, res.lower, 0.0)
        # A point the distance search left open around a budget ε (lower ≤ ε < upper) gets
        # a feasibility MILP at ε, far cheaper than the distance: proven robust at ε, its
        # distance exceeds ε, so its radius is raised to just above ε.
        for eps in sorted(epsilons):
            open_ = np.flatnonzero(clean & (radius <= eps) & (res.upper > eps))
            if len(open_):
                dec = exact_module.exact_robust(model, x[open_], y[open_], eps,
                                                time_limit=EXACT_TIME_LIMIT,
                                                lower=radius[open_], upper=res.upper[open_])
                won = open_[dec.robust]
                radius[won] = np.maximum(radius[won], np.nextafter(eps, np.inf))
        config = radius_config("exact")
        unit.arrays[self._radius_key(unit, "exact", "Linf")] = radius
        unit.arrays[unit.akey(method("exact"), "Linf", None, "upper", config)] = res.upper
        unit.arrays[unit.akey(method("exact"), "Linf", None, "optimal", config)] = \
            res.status == "optimal"
        unit.arrays[self._seconds_key(unit, "exact", "Linf")] = np.array(
            time.perf_counter() - start)

    # ------------------------------------------------------------------ records
    def _mask(self, unit: Unit, name: str, norm: str, eps: float,
              clean: np.ndarray) -> np.ndarray:
        """Points certifier ``name`` certifies at ε (IBP: its direct check)."""
        if name == "ibp":
            return unit.get(unit.akey("certify-ibp", norm, eps, "certified"))
        return certified_mask(unit.get(self._radius_key(unit, name, norm)), eps, clean)

    def _record(self, unit: Unit, name: str, norm: str, eps: float,
                clean: np.ndarray) -> None:
        if name == "ibp":
            seconds = float(unit.get(unit.akey("certify-ibp", norm, eps, "seconds")))
        else:
            by_norm = None if name == "lipschitz" else norm
            seconds = float(unit.get(self._seconds_key(unit, name, by_norm)))
        unit.record(method(name), norm, eps, certifier_config(name), clean,
                    self._mask(unit, name, norm, eps, clean), seconds,
                    unit.get(self._radius_key(unit, name, norm)))

    @staticmethod
    def _skip(unit: Unit, keys: Sequence[Any], clean: np.ndarray, reason: str) -> None:
        """Skipped records under ``keys``, saying why (unless stored with that reason)."""
        for key in keys:
            if unit.prior.skipped.get(key) != reason:
                unit.record(key.method, key.norm, key.eps, key.config, clean, None, 0.0,
                            skipped=reason)

    def best_radius(self, unit: Unit, norm: str, clean: np.ndarray,
                    exclude: str | None = None) -> np.ndarray | None:
        """Per point, the largest certified radius in ``norm`` over the certifiers (None
        if none has one)."""
        radii = [unit.get(self._radius_key(unit, n, norm))
                 for n in certifiers_for(self.names, norm) if n != exclude]
        radii = [r for r in radii if r is not None]
        return np.maximum.reduce(radii) * clean if radii else None

    def combined(self, unit: Unit, norm: str, eps: float,
                 clean: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The points certified at ε by any certifier that ran and the largest radius per
        point; records them as ``certified``. None where nothing was certified (no
        certifier for this norm, or a model that cannot be certified)."""
        ran = [n for n in certifiers_for(self.names, norm)
               if (unit.get(unit.akey("certify-ibp", norm, eps, "certified")) if n == "ibp"
                   else unit.get(self._radius_key(unit, n, norm))) is not None]
        if not ran:
            return None
        certified = np.logical_or.reduce([self._mask(unit, n, norm, eps, clean)
                                          for n in ran]) & clean
        # The certifiers that ran: CROWN left out of the default set for a costly model
        # leaves exactly the old pair, whose records keep config {}.
        config = combined_config(ran)
        if not unit.done(COMBINED, norm, eps, config):
            unit.record(COMBINED, norm, eps, config, clean, certified, 0.0)
        return certified, self.best_radius(unit, norm, clean)
