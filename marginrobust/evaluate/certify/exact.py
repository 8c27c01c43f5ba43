"""Exact verification of small ReLU nets: the minimal Linf distance to a misclassification.

Per point x with label y, :func:`exact_linf_distances` solves

    min eps  s.t.  ‖x' − x‖∞ ≤ eps,  x' ∈ [0, 1]^d,  f_j(x') ≥ f_y(x') for some j ≠ y

as mixed-integer linear programs (``scipy.optimize.milp``, HiGHS) over the big-M encoding
of :mod:`.milp`: one MILP per target class j, closest classes first, each capped at
the best distance found so far (``mode="per-class"``), or one MILP choosing the class with
a binary per class (``mode="disjunctive"``). The big-M constants come from pre-activation
bounds (a :data:`.milp.BoundSource`: interval bounds by default, CROWN's when
given) valid over the Linf ball of a radius R that caps eps, so they hold wherever the
MILP can go; R is an upper bound on the distance (an attack's distance when given, else
found by doubling R from the certified radius until the MILP finds a misclassification).
Units the bounds prove stable get no binary variable.

**What "exact" means.** The answer is exact up to HiGHS's tolerances: primal feasibility
1e-7 per row of the rescaled net, integrality 1e-6, and a MIP gap of 1e-6 (relative, and
HiGHS's 1e-6 absolute). Every returned distance is that of an adversarial point x' the MILP
produced, re-evaluated on the float64 network: ``verified`` says its logit margin
max_{j≠y} f_j − f_y is ≥ −``VERIFY_TOL`` × the clean margin (a flip, or a tie within that
tolerance). ``lower`` is a proven lower bound (the solvers' dual bounds and the certified
radius passed in), ``upper`` the distance of the best adversarial point (or the attack's).

L2 distances would need a mixed-integer quadratic solver, which scipy does not have; they
are absent (``norm="L2"`` raises :class:`UserError`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ...errors import UserError
from .milp import BoundSource, MilpNet, encode, interval_preactivation_bounds
from .ops import Chain
from .tracing import build_chain

__all__ = ["EXACT_MAX_UNITS", "ExactResult", "ExactRobustResult", "VERIFY_TOL",
           "exact_is_cheap", "exact_linf_distances", "exact_robust", "resolve_bounds"]

# A network is "cheap" for exact verification when it has at most this many ReLU units and
# max-pool outputs (each a potential binary variable). Measured: the digits MLP 64-64-32-10
# (96 units, trained 300 epochs) needs 20-30 s per target class near the boundary with
# CROWN bounds, so it is above the rule; nets of a few dozen units solve in well under a
# second.
EXACT_MAX_UNITS = 48
# Relative tolerance of the re-evaluated margin at an adversarial point (see module doc).
VERIFY_TOL = 1e-6
_MIP_GAP = 1e-6


@dataclass
class ExactResult:
    """Per-point outcome of :func:`exact_linf_distances`.

    Attributes:
        distance: Minimal Linf distance where ``status`` is ``optimal`` (inf when no input
            in [0, 1]^d is misclassified), 0 when misclassified, NaN on timeout.
        lower: Proven lower bound on the distance.
        upper: Distance of the best known adversarial point (inf if none).
        status: ``optimal``, ``timeout`` or ``misclassified`` per point.
        verified: The adversarial point behind ``upper`` flips (or ties) the float64
            prediction within ``VERIFY_TOL`` (True where there is no point to check).
        seconds: Wall time per point.
        adversarials: The adversarial point per point (NaN where none), input-shaped.
    """

    distance: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    status: np.ndarray
    verified: np.ndarray
    seconds: np.ndarray
    adversarials: np.ndarray


@dataclass
class ExactRobustResult:
    """Per-point outcome of :func:`exact_robust` at one eps.

    Attributes:
        robust: Proven robust at eps (False for not robust, timeout and misclassified).
        status: ``robust``, ``not robust``, ``timeout`` or ``misclassified``.
        seconds: Wall time per point.
    """

    robust: np.ndarray
    status: np.ndarray
    seconds: np.ndarray

    def accuracy(self) -> float:
        """Exact robust accuracy: the fraction proven robust (timeouts count as not)."""
        return float(self.robust.mean())


def exact_is_cheap(chain: Chain, max_units: int = EXACT_MAX_UNITS) -> bool:
    """Whether exact verification is cheap enough to run by default on ``chain``.

    Counts every ReLU / LeakyReLU unit and every max-pool output (each may need a binary
    variable) and compares with ``max_units``.
    """
    units = 0
    for op in chain.ops:
        if op.role in ("relu", "leaky") or (op.role == "pool" and op.kind == "MaxPool2d"):
            units += math.prod(op.out_shape)
    return units <= max_units


def resolve_bounds(bounds: str | BoundSource) -> BoundSource:
    """A bound source by name or as is: ``ibp`` (interval bounds), ``crown``
    (:func:`.crown.preactivation_bounds`) or ``auto`` (CROWN where available).

    Raises:
        UserError: For an unknown name or a missing CROWN module.
    """
    if callable(bounds):
        return bounds
    if bounds == "ibp":
        return interval_preactivation_bounds
    if bounds in ("crown", "auto"):
        try:
            from .crown import preactivation_bounds
        except ImportError as exc:
            if bounds == "auto":
                return interval_preactivation_bounds
            raise UserError("CROWN bounds are not available in this version") from exc
        return preactivation_bounds
    raise UserError(f"bounds must be 'ibp', 'crown', 'auto' or a callable, not {bounds!r}")


def _check_norm(norm: str) -> None:
    if norm.lower() == "l2":
        raise UserError("exact L2 distances need a mixed-integer quadratic solver, which "
                        "scipy's milp (HiGHS) does not provide; exact verification is Linf only")
    if norm.lower() != "linf":
        raise UserError(f"norm must be Linf, not {norm!r}")


def _per_point(values: np.ndarray | Sequence[float] | None, n: int, default: float,
               name: str) -> np.ndarray:
    if values is None:
        return np.full(n, default)
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.size != n:
        raise UserError(f"got {n} inputs but {out.size} {name} values")
    return out


class _Solver:
    """Per-point MILPs on one unrolled net."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray,
                 bounds: str | BoundSource, mode: str) -> None:
        if mode not in ("per-class", "disjunctive"):
            raise UserError(f"mode must be 'per-class' or 'disjunctive', not {mode!r}")
        self.mode = mode
        self.net = MilpNet(build_chain(model, x.shape[1:]))
        self.source = resolve_bounds(bounds)
        self.x = x.detach().to(torch.float64).reshape(len(x), -1).cpu().numpy()
        self.y = np.asarray(torch.as_tensor(y).reshape(-1).cpu(), dtype=np.int64)
        if self.y.size != len(self.x):
            raise UserError(f"got {len(self.x)} inputs but {self.y.size} labels")
        if len(self.x) and (self.x.min() < 0 or self.x.max() > 1):
            raise UserError("exact verification needs inputs in [0, 1]")

    def margin(self, x: np.ndarray, y: int) -> float:
        """max_{j≠y} f_j − f_y of the float64 network (≥ 0: misclassified or tied)."""
        f = self.net.logits(x)
        return float(np.delete(f, y).max() - f[y])

    def solve(self, x: np.ndarray, y: int, radius: float, classes: list[int],
              eps_cap: float, time_limit: float, feasibility: bool = False
              ) -> tuple[str, float, np.ndarray | None, float, list[int]]:
        """One MILP over the ball of ``radius``: some class of ``classes`` reached within
        ``eps_cap`` (≤ radius).

        Returns:
            (HiGHS outcome ``optimal`` / ``infeasible`` / ``timeout``, objective, x', dual
            bound, the classes that the bounds did not already exclude).
        """
        b = self.net.bounds(x, radius, self.source)
        flo, fhi = b[-1]
        # Interval bound on f_j − f_y: classes it proves unreachable need no MILP.
        w, bias = self.net.layers[-1].weight, self.net.layers[-1].bias
        assert w is not None and bias is not None
        hlo, hhi = b[-2]
        diff = w - w[y]
        reach = np.maximum(diff, 0) @ hhi + np.minimum(diff, 0) @ hlo + bias - bias[y]
        live = [j for j in classes if reach[j] >= 0]
        if not live:
            return "infeasible", eps_cap, None, eps_cap, live
        p, xin, eps, f = encode(self.net, x, min(radius, eps_cap), b)
        if self.mode == "per-class" or len(live) == 1:
            for j in live:  # one class per call in per-class mode
                p.constrain(np.array([[f[j], f[y]]]), np.array([[1.0, -1.0]]), 0.0, np.inf)
        else:
            beta = p.variables(np.zeros(len(live)), np.ones(len(live)), integer=True)
            p.constrain(beta[None, :], np.ones((1, len(live))), 1.0, 1.0)
            # f_j − f_y ≥ L_j (1 − β_j), L_j its (negative) interval lower bound
            low = np.minimum(diff, 0) @ hhi + np.maximum(diff, 0) @ hlo + bias - bias[y]
            for k, j in enumerate(live):
                lj = min(float(low[j]), 0.0) * (1 + 1e-9) - 1e-9
                p.constrain(np.array([[f[j], f[y], beta[k]]]), np.array([[1.0, -1.0, lj]]),
                            lj, np.inf)
        a, rlo, rhi, lb, ub, integ = p.matrices()
        c = np.zeros(p.n)
        if not feasibility:
            c[eps] = 1.0
        res = milp(c, integrality=integ, bounds=Bounds(lb, ub),
                   constraints=LinearConstraint(a, rlo, rhi),
                   options={"time_limit": max(time_limit, 1e-3), "mip_rel_gap": _MIP_GAP})
        dual = getattr(res, "mip_dual_bound", None)
        dual = 0.0 if dual is None or not math.isfinite(dual) else float(dual)
        if res.status == 2:
            return "infeasible", eps_cap, None, eps_cap, live
        xa = None if res.x is None else np.clip(res.x[xin], 0.0, 1.0)
        if res.status == 0:
            return "optimal", float(res.fun), xa, float(res.fun), live
        if res.status == 1:
            return "timeout", math.inf, xa, dual, live
        raise RuntimeError(f"HiGHS failed: {res.message}")


def exact_linf_distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray,
                         norm: str = "Linf", upper: np.ndarray | Sequence[float] | None = None,
                         lower: np.ndarray | Sequence[float] | None = None,
                         time_limit: float = 30.0, bounds: str | BoundSource = "auto",
                         mode: str = "per-class") -> ExactResult:
    """Exact minimal Linf distance of each point to a misclassification (module docstring).

    Args:
        model: A chain of supported operations (:mod:`.tracing`); small, since
            every weight layer is unrolled to a dense matrix.
        x: Inputs (N, *input_shape) in [0, 1].
        y: Integer labels (N,).
        norm: ``Linf`` (``L2`` raises: no MIQP solver).
        upper: Per-point distances of known adversarial points (an attack's; inf where
            it failed). They set the radius of the bounds and the final upper bounds.
        lower: Per-point certified radii; they floor the lower bound of a timed-out point.
        time_limit: Seconds per point, over all its MILPs.
        bounds: Source of the pre-activation bounds: ``ibp``, ``crown``, ``auto`` (CROWN
            where available) or a callable (:data:`.milp.BoundSource`).
        mode: ``per-class`` (one MILP per target class) or ``disjunctive`` (one MILP).

    Raises:
        UserError: For L2, inputs outside [0, 1], or mismatched sizes.
        NotCertifiable: If the model is not a chain of supported operations.
    """
    _check_norm(norm)
    s = _Solver(model, x, y, bounds, mode)
    n = len(s.x)
    up_in = _per_point(upper, n, math.inf, "upper")
    lo_in = _per_point(lower, n, 0.0, "lower")
    out = {k: np.full(n, np.nan) for k in ("distance", "lower", "upper", "seconds")}
    status = np.empty(n, dtype=object)
    verified = np.ones(n, dtype=bool)
    adv = np.full_like(s.x, np.nan)
    for i in range(n):
        t0 = time.perf_counter()
        xi, yi = s.x[i], int(s.y[i])
        if s.margin(xi, yi) >= 0:
            status[i] = "misclassified"
            out["distance"][i] = out["lower"][i] = out["upper"][i] = 0.0
            adv[i] = xi
        else:
            st, lo, up, xa = _distance(s, xi, yi, up_in[i], lo_in[i], t0 + time_limit)
            status[i] = st
            out["lower"][i], out["upper"][i] = lo, up
            out["distance"][i] = up if st == "optimal" else np.nan
            if xa is not None:
                adv[i] = xa
                verified[i] = s.margin(xa, yi) >= -VERIFY_TOL * abs(s.margin(xi, yi))
        out["seconds"][i] = time.perf_counter() - t0
    shape = (n, *x.shape[1:])
    return ExactResult(out["distance"], out["lower"], out["upper"], status.astype(str),
                       verified, out["seconds"], adv.reshape(shape))


def _distance(s: _Solver, x: np.ndarray, y: int, upper: float, lower: float,
              deadline: float) -> tuple[str, float, float, np.ndarray | None]:
    """(status, lower, upper, adversarial point) of one correctly classified point."""
    reach = float(max(x.max(), 1.0 - x.min()))  # this Linf ball covers all of [0, 1]^d
    f = s.net.logits(x)
    classes = [int(j) for j in np.argsort(f[y] - f) if j != y]  # closest class first
    if math.isfinite(upper):
        radius = min(upper * (1 + 1e-6) + 1e-9, reach)
    else:
        radius = min(max(2 * lower, 1 / 64), reach)
    while True:
        best, best_x, proven, timed_out = math.inf, None, math.inf, False
        todo = classes if s.mode == "per-class" else [classes]
        for group in todo:
            group = group if isinstance(group, list) else [group]
            cap = min(radius, best)
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out, proven = True, min(proven, 0.0)
                continue
            # Bounds over the smaller ball once a closer adversarial point is known.
            st, obj, xa, dual, _ = s.solve(x, y, cap, group, cap, left)
            if st == "timeout":
                timed_out = True
                proven = min(proven, dual)
            else:
                proven = min(proven, obj)
            if xa is not None:
                d = float(np.abs(xa - x).max())
                # Kept even if its float64 re-evaluation misses the tolerance: the result's
                # `verified` flag reports that.
                if d < best:
                    best, best_x = d, xa
        lo = max(min(proven, best), lower)
        if timed_out:
            up = min(best, upper)
            return "timeout", min(lo, up), up, best_x
        if math.isfinite(best) or radius >= reach:
            return "optimal", min(lo, best), best, best_x
        radius = min(2 * radius, reach)  # nothing within radius: every class is ≥ radius
        lower = max(lower, radius / 2)


def exact_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray, eps: float,
                 norm: str = "Linf", time_limit: float = 30.0,
                 bounds: str | BoundSource = "auto",
                 lower: np.ndarray | Sequence[float] | None = None,
                 upper: np.ndarray | Sequence[float] | None = None) -> ExactRobustResult:
    """Whether each point is robust at Linf radius ``eps``: a feasibility MILP per class.

    A point is ``robust`` when no input within eps (in [0, 1]^d) makes some f_j ≥ f_y,
    proven by every class's MILP being infeasible (or excluded by the bounds); ``not
    robust`` when one finds such an input (re-evaluated on the float64 net, within
    ``VERIFY_TOL``). Certified radii ``lower`` > eps and attack distances ``upper`` ≤ eps
    decide a point without a MILP.

    Args:
        model: A chain of supported operations.
        x: Inputs (N, *input_shape) in [0, 1].
        y: Integer labels (N,).
        eps: The Linf radius.
        norm: ``Linf`` only.
        time_limit: Seconds per point.
        bounds: Source of the pre-activation bounds: ``ibp``, ``crown``, ``auto`` (CROWN
            where available) or a callable (:data:`.milp.BoundSource`).
        lower: Optional certified radii.
        upper: Optional attack distances.
    """
    _check_norm(norm)
    if not eps >= 0:
        raise UserError(f"eps must be a nonnegative number, not {eps}")
    s = _Solver(model, x, y, bounds, "per-class")
    n = len(s.x)
    lo_in = _per_point(lower, n, 0.0, "lower")
    up_in = _per_point(upper, n, math.inf, "upper")
    status = np.empty(n, dtype=object)
    seconds = np.zeros(n)
    for i in range(n):
        t0 = time.perf_counter()
        xi, yi = s.x[i], int(s.y[i])
        m0 = s.margin(xi, yi)
        if m0 >= 0:
            status[i] = "misclassified"
        elif lo_in[i] > eps:
            status[i] = "robust"
        elif up_in[i] <= eps:
            status[i] = "not robust"
        else:
            status[i] = "robust"
            f = s.net.logits(xi)
            for j in (int(j) for j in np.argsort(f[yi] - f) if j != yi):
                left = t0 + time_limit - time.perf_counter()
                if left <= 0:
                    status[i] = "timeout"
                    break
                st, _, xa, _, _ = s.solve(xi, yi, eps, [j], eps, left, feasibility=True)
                if st == "timeout":
                    status[i] = "timeout"
                elif xa is not None:
                    # Feasible within HiGHS's tolerances: not claimed robust.
                    status[i] = "not robust"
                    break
        seconds[i] = time.perf_counter() - t0
    status = status.astype(str)
    return ExactRobustResult(status == "robust", status, seconds)
