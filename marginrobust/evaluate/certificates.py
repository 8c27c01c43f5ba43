"""Certificates inside the engine: Lipschitz-margin radii and IBP per evaluation, and
certificate records marked as skipped, with the reason, for a model that cannot be
certified (its attack figures are computed all the same).

The certificate mathematics is :mod:`.certify`'s; this module decides what to compute,
what to reuse from an interrupted evaluation, and what to record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..margins import param_norm
from . import certify as _certify
from .certify import NotCertifiable, certify_reason
from .consistency import certified_mask
from .store import NO_OPTIONS, ArrayKey
from .threats import NORMS, ThreatModel
from .unit import Unit

CERTIFICATES = ("certify-lipschitz", "certify-ibp", "certified")


class Certifier:
    """Computes and records the certificates of evaluations, sharing the operator-norm
    bounds of one model state between its splits."""

    def __init__(self) -> None:
        self._bounds_key: tuple[Any, ...] | None = None
        self._bounds_cache: list[Any] = []

    def bounds(self, model: nn.Module, shape: tuple[int, ...]) -> list[Any]:
        """Operator-norm bounds, computed once per model state and shared by the splits."""
        # ρ in the key: the same module object trained further must get new bounds.
        key = (id(model), shape, param_norm(model))
        if self._bounds_key != key:
            self._bounds_cache = _certify.operator_norm_bounds(model, shape)
            self._bounds_key = key
        return self._bounds_cache

    def not_certifiable(self, model: nn.Module, shape: tuple[int, ...]) -> str | None:
        """Why ``model`` cannot be certified, in one sentence (None if it can)."""
        return certify_reason(model, shape)

    def certificates(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     threats: Sequence[ThreatModel], clean: np.ndarray,
                     ) -> dict[str, np.ndarray] | None:
        """Lipschitz radii per norm (None where skipped); records the certificates."""
        grid = [(t.norm, e) for t in threats for e in t.epsilons]
        pending = [(norm, eps, m) for norm, eps in grid for m in CERTIFICATES
                   if not unit.done(m, norm, eps, NO_OPTIONS)]
        radius_keys = {norm: unit.akey("certify-lipschitz", norm, None, "radius")
                       for norm in NORMS}
        stored = {norm: unit.get(k) for norm, k in radius_keys.items()}
        if not pending and all(v is not None for v in stored.values()):
            return stored                           # nothing to do, nothing to check
        reason = self.not_certifiable(model, tuple(x.shape[1:]))
        if reason is None:
            try:
                radii = self._radii(unit, model, x, y, radius_keys)
                for norm, eps in grid:
                    self._ibp(unit, model, x, y, norm, eps, clean)
            except NotCertifiable as exc:
                reason = str(exc)
        if reason is not None:
            for norm, eps, method in pending:
                if unit.prior.skipped.get(unit.rkey(method, norm, eps, NO_OPTIONS)) != reason:
                    unit.record(method, norm, eps, NO_OPTIONS, clean, None, 0.0,
                                skipped=reason)
            return None
        lip_seconds = float(unit.get(unit.akey("certify-lipschitz", None, None, "seconds")))
        for norm, eps, method in pending:
            ibp = unit.get(unit.akey("certify-ibp", norm, eps, "certified"))
            if method == "certify-lipschitz":
                unit.record(method, norm, eps, NO_OPTIONS, clean,
                            certified_mask(radii[norm], eps, clean), lip_seconds, radii[norm])
            elif method == "certify-ibp":
                seconds = float(unit.get(unit.akey("certify-ibp", norm, eps, "seconds")))
                unit.record(method, norm, eps, NO_OPTIONS, clean, ibp, seconds)
            else:
                unit.record(method, norm, eps, NO_OPTIONS, clean,
                            certified_mask(radii[norm], eps, clean, ibp), 0.0)
        return radii

    def _radii(self, unit: Unit, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               keys: dict[str, ArrayKey]) -> dict[str, np.ndarray]:
        if any(unit.get(k) is None for k in keys.values()):
            start = time.perf_counter()
            res = _certify.lipschitz_radii(model, x, y,
                                           bounds=self.bounds(model, tuple(x.shape[1:])))
            unit.arrays[keys["L2"]], unit.arrays[keys["Linf"]] = res.l2, res.linf
            unit.arrays[unit.akey("certify-lipschitz", None, None, "seconds")] = np.array(
                time.perf_counter() - start)
        return {norm: unit.arrays[k] for norm, k in keys.items()}

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
                certified[idx] = _certify.ibp_certified(model, x[idx], y[idx], eps, norm)
            certified &= clean
        unit.arrays[key] = certified
        unit.arrays[unit.akey("certify-ibp", norm, eps, "seconds")] = np.array(
            time.perf_counter() - start)
