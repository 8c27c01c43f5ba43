"""Intervals, tests and fits of the report: exact where a formula exists, seeded otherwise.

Every function is deterministic (the bootstrap draws from a generator seeded with
:data:`BOOTSTRAP_SEED` afresh for each figure), so a board regenerates byte for byte.

* :func:`wilson_interval` — binomial proportions (accuracies), exact formula;
* :func:`bootstrap_interval` — percentile bootstrap of a statistic of per-point arrays
  (medians of distances and radii);
* :func:`spearman_test` — Spearman's ρ with a two-sided p-value and a Fisher-z interval;
* :func:`t_interval` — the mean of a few values (seeds) with Student's t;
* :func:`ols` — least squares with HC3 or cluster-robust (CR1) standard errors and t
  intervals.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
Z = float(sps.norm.ppf(0.5 + LEVEL / 2))
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 2020
# Up to this many pairs the Spearman p-value enumerates every pairing (8! = 40,320); above,
# scipy's t approximation, which is anti-conservative for the handful of checkpoints a run has.
EXACT_SPEARMAN_MAX_N = 8
NAN2 = (math.nan, math.nan)


def wilson_bounds(p: np.ndarray, n: int, z: float = Z) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of proportions of ``n`` points, elementwise.

    Args:
        p: Observed proportions (counts are ``round(p · n)``).
        n: The number of points (≥ 1).
        z: The normal quantile (95 %: 1.96).
    """
    phat = np.round(np.asarray(p, float) * n) / n
    z2 = z * z
    centre = (phat + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n))
    # At 0 and 1 the ends are exactly 0 and 1; computed, they miss by a rounding error.
    lo = np.where(phat <= 0, 0.0, np.maximum(0.0, centre - half))
    hi = np.where(phat >= 1, 1.0, np.minimum(1.0, centre + half))
    return lo, hi


def wilson_interval(p: float | None, n: int | None, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    The count is ``round(p · n)`` (the records store the proportion, the points are whole).

    Args:
        p: The observed proportion (an accuracy).
        n: The number of points.
        z: The normal quantile (95 %: 1.96).

    Returns:
        (low, high), NaN where ``p`` or ``n`` is missing or ``n`` < 1.
    """
    if p is None or n is None or not math.isfinite(float(p)) or not n or n < 1:
        return NAN2
    lo, hi = wilson_bounds(np.array([float(p)]), int(n), z)
    return float(lo[0]), float(hi[0])


def order_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap statistics, read as order statistics.

    Order statistics rather than interpolated percentiles: infinite statistics (a median
    distance where the attack failed on most points) stay infinite instead of becoming NaN.

    Args:
        values: The bootstrap statistics (NaN ones are dropped).
        level: Coverage.
    """
    v = np.sort(np.asarray(values, float)[~np.isnan(values)])
    if v.size == 0:
        return NAN2
    tail = (1 - level) / 2
    lo = int(math.floor(tail * v.size))
    hi = int(math.ceil((1 - tail) * v.size)) - 1
    return float(v[lo]), float(v[min(max(hi, lo), v.size - 1)])


@functools.lru_cache(maxsize=8)
def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    # A fresh generator per figure draws the same indices for every figure of n points:
    # drawn once, kept read-only.
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    idx.flags.writeable = False
    return idx


def median_rows(values: np.ndarray) -> np.ndarray:
    """The median of each row of a (resamples, points) matrix."""
    return np.median(values, axis=1)


def bootstrap_interval(arrays: Sequence[np.ndarray],
                       statistic: Callable[[np.ndarray], np.ndarray] = median_rows,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of ``min`` over arrays of a per-row statistic.

    The arrays hold per-point values of the same points (one per attack); each resample
    draws point indices once and applies them to every array, so the statistic of a
    resample is the smallest of the arrays' statistics, as the column it bounds is.

    Args:
        arrays: Per-point values, all of one length.
        statistic: Maps a (resamples, points) matrix to one value per row.
        resamples: Number of resamples.
        seed: Seed of the generator (fresh for each call: the interval of a figure does
            not depend on which figures were computed before it).
        level: Coverage.

    Returns:
        (low, high); NaN without points.
    """
    if not arrays or len(arrays[0]) == 0:
        return NAN2
    idx = _indices(len(arrays[0]), resamples, seed)
    values = np.min(np.stack([statistic(np.asarray(a, float)[idx]) for a in arrays]), axis=0)
    return order_interval(values, level)


def upper_median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """The ⌈n/2⌉-th largest value: the largest ε with at least half the values above
    every smaller budget (radius > ε certifies), i.e. where half the points stop being
    certified.

    Args:
        values: Per-point radii (0 on misclassified points).
        axis: The points' axis.
    """
    v = np.sort(np.asarray(values, float), axis=axis)
    n = v.shape[axis]
    return np.take(v, n - math.ceil(n / 2), axis=axis)


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman's ρ of some pairs.

    Attributes:
        n: Pairs with both values.
        rho: The correlation (NaN with fewer than 3 pairs or a constant side).
        p: Two-sided p-value of ρ = 0: exact (every pairing) for n ≤ 8, else the t
            approximation of :func:`scipy.stats.spearmanr`.
        lo, hi: 95 % interval: Fisher's z with the Bonett–Wright standard error
            ``sqrt((1 + ρ²/2) / (n − 3))`` (NaN for n ≤ 3). At |ρ| = 1, where z is
            infinite, the far end is that of the closest attainable ρ below 1
            (one adjacent swap: 1 − 12 / (n(n² − 1))) and the near end is ±1.
    """

    n: int
    rho: float
    p: float
    lo: float
    hi: float


@functools.cache
def _pairings(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def exact_spearman_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided permutation p of Spearman's ρ over every pairing of ``y`` with ``x``.

    As :func:`scipy.stats.permutation_test` with ``permutation_type="pairings"`` computes
    it when it enumerates: twice the smaller tail, at most 1 (ties keep their mid-ranks).

    Args:
        x, y: Paired values (at most :data:`EXACT_SPEARMAN_MAX_N`).
    """
    cx = sps.rankdata(x) - (len(x) + 1) / 2
    cy = sps.rankdata(y) - (len(y) + 1) / 2
    scores = cy[_pairings(len(x))] @ cx  # ρ up to a positive factor shared by every pairing
    observed = float(cy @ cx)
    tol = 1e-9 * max(1.0, abs(observed))  # the same pairing recomputed must count as ≥
    greater = np.mean(scores >= observed - tol)
    less = np.mean(scores <= observed + tol)
    return float(min(1.0, 2 * min(greater, less)))


def fisher_interval(rho: float, n: int, z: float = Z) -> tuple[float, float]:
    """The Fisher-z interval of Spearman's ρ with the Bonett–Wright standard error.

    Args:
        rho: The correlation.
        n: Number of pairs.
        z: Normal quantile.

    Returns:
        (low, high); NaN for n ≤ 3 or a NaN ρ (see :class:`SpearmanResult` for |ρ| = 1).
    """
    if n <= 3 or not math.isfinite(rho):
        return NAN2
    if abs(rho) >= 1:
        nearest = math.copysign(1 - 12 / (n * (n * n - 1)), rho)
        lo, hi = fisher_interval(nearest, n, z)
        return (lo, 1.0) if rho > 0 else (-1.0, hi)
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    centre = math.atanh(rho)
    return math.tanh(centre - z * se), math.tanh(centre + z * se)


def spearman_test(x: Sequence[float], y: Sequence[float], min_pairs: int = 3) -> SpearmanResult:
    """Spearman's ρ of the pairs where both values are present, with p and interval.

    Args:
        x, y: Aligned values (NaN: missing; ±inf rank as the largest and smallest).
        min_pairs: Fewer pairs give a NaN ρ.
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < min_pairs or np.unique(a).size < 2 or np.unique(b).size < 2:
        return SpearmanResult(n, math.nan, math.nan, math.nan, math.nan)
    rho, p = sps.spearmanr(a, b)
    rho = float(np.clip(rho, -1.0, 1.0))
    if abs(rho) > 1 - 1e-9:  # a perfect ranking computed in floating point
        rho = math.copysign(1.0, rho)
    if n <= EXACT_SPEARMAN_MAX_N:
        p = exact_spearman_p(a, b)
    return SpearmanResult(n, rho, float(p), *fisher_interval(rho, n))


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, int]:
    """Mean and Student-t interval of some values (one per seed).

    Args:
        values: The values (NaN ones are dropped).
        level: Coverage.

    Returns:
        (mean, low, high, count); low and high are NaN with fewer than 2 values.
    """
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2 or not np.isfinite(v).all():
        return mean, math.nan, math.nan, int(v.size)
    half = float(sps.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half, int(v.size)


@dataclass(frozen=True)
class OlsFit:
    """An ordinary least-squares fit.

    Attributes:
        coef: Coefficients, in the order of the design's columns.
        se: Standard errors: HC3 heteroskedasticity-robust, or CR1 cluster-robust when
            clusters were given (NaN where a point has leverage 1, or without residual
            degrees of freedom or two clusters).
        lo, hi: ``coef ∓ t(df) · se`` at the level asked.
        n: Observations.
        df: Degrees of freedom of the t quantile: n − k, or clusters − 1.
        clusters: Number of clusters (None: observations taken as independent).
    """

    coef: np.ndarray
    se: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int
    df: int
    clusters: int | None = None


def ols(y: np.ndarray, design: np.ndarray, level: float = LEVEL,
        clusters: Sequence[object] | None = None) -> OlsFit:
    """Least squares of ``y`` on the columns of ``design`` (include the constant yourself).

    Without ``clusters``, standard errors are HC3 (MacKinnon & White 1985): ``(XᵀX)⁻¹ Xᵀ
    diag(eᵢ² / (1 − hᵢ)²) X (XᵀX)⁻¹``, the heteroskedasticity-robust choice for small
    samples, which treats the observations as independent. With ``clusters`` (one label per
    observation: observations of one cluster may be correlated, clusters are independent),
    they are CR1 (Liang & Zeger 1986, with Stata's small-sample factor): ``c · (XᵀX)⁻¹ (Σ_g
    X_gᵀ e_g e_gᵀ X_g) (XᵀX)⁻¹``, ``c = G/(G − 1) · (n − 1)/(n − k)``, and the intervals use
    t(G − 1).

    Args:
        y: Responses (n,).
        design: Regressors (n, k).
        level: Coverage of the intervals.
        clusters: Cluster label of each observation, or None.
    """
    x = np.asarray(design, float)
    y = np.asarray(y, float)
    n, k = x.shape
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = n - k
    nan = np.full(k, math.nan)
    groups = None if clusters is None else len(set(clusters))
    if df < 1 or np.linalg.matrix_rank(x) < k or (groups is not None and groups < 2):
        return OlsFit(coef, nan, nan, nan, n, df, groups)
    bread = np.linalg.inv(x.T @ x)
    resid = y - x @ coef
    if clusters is not None and groups is not None:
        labels = np.asarray([str(c) for c in clusters])
        scores = np.array([x[labels == g].T @ resid[labels == g] for g in np.unique(labels)])
        meat = scores.T @ scores * (groups / (groups - 1)) * ((n - 1) / (n - k))
        df = groups - 1
    else:
        leverage = np.einsum("ij,jk,ik->i", x, bread, x)
        if (leverage > 1 - 1e-10).any():
            return OlsFit(coef, nan, nan, nan, n, df)
        meat = x.T @ (x * (resid / (1 - leverage))[:, None] ** 2)
    se = np.sqrt(np.clip(np.diag(bread @ meat @ bread), 0, None))
    half = sps.t.ppf(0.5 + level / 2, df) * se
    return OlsFit(coef, se, coef - half, coef + half, n, df, groups)
