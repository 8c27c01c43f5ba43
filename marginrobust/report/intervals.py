"""95 % intervals of the leaderboard's figures, as ``{column}_lo`` / ``{column}_hi`` columns.

* accuracies (``clean_*``, ``aa_*``, ``worst_*``, ``cert_*``): Wilson score intervals from
  the row's ``n`` points (exact formula, no sampling);
* median distances (``median_dist_*``): percentile bootstrap over the evaluated points of
  the smallest median among the minimal-norm attacks (every attack's distances resampled
  with the same points), :data:`~marginrobust.report.stats.BOOTSTRAP_RESAMPLES` resamples
  from a generator seeded with :data:`~marginrobust.report.stats.BOOTSTRAP_SEED`; only
  where the stored arrays reproduce the column's value (else the bounds stay empty);
* Lipschitz certificates, from the per-point radii: ``median_certified_radius_{split}_{norm}``
  and ``half_certified_eps_{split}_{norm}`` (the budget below which at least half the
  points are certified), with bootstrap intervals drawn the same way. They say more than
  the certified accuracies at the evaluated budgets, which are 0 wherever those budgets
  exceed every radius.

The per-point arrays are received (:mod:`marginrobust.report.loader` reads them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .columns import SKIPPED, bounds, is_bound
from .figures import HALF_EPS, MEDIAN, RADIUS, Figure, FigureIndex
from .loader import DistanceKey, pick_distances
from .series import DistanceTable, known, row_distances
from .stats import bootstrap_interval, upper_median, wilson_interval

# {(run, checkpoint): {(split, norm, n, seed): radii}}, as loader.load_all_radii gives it.
RadiusTable = Mapping[tuple[str, str], Mapping[DistanceKey, np.ndarray]]
_MEDIAN_ROWS = functools.partial(np.median, axis=1)
_UPPER_MEDIAN_ROWS = functools.partial(upper_median, axis=1)


def _row_radii(radii: RadiusTable, row: Mapping[str, Any], split: str,
               norm: str) -> np.ndarray | None:
    found = radii.get((str(row["run"]), str(row["checkpoint"])), {})
    return pick_distances(found, split, norm, known(row.get("n")), known(row.get("seed")))


def _reproduces(arrays: list[np.ndarray], value: float) -> bool:
    """Whether the arrays give the column's value (the smallest of their medians).

    A bootstrap of other points than those behind the figure would be an interval of
    something else; such a figure keeps empty bounds.
    """
    statistic = min(float(np.median(np.asarray(a, float))) for a in arrays)
    return statistic == value or math.isclose(statistic, value, rel_tol=1e-6)


def _radius_columns(split: str, norm: str) -> tuple[str, str]:
    """The median certified radius and half-certified budget columns of (split, norm)."""
    return Figure(RADIUS, split, norm).column({}), Figure(HALF_EPS, split, norm).column({})


def _radius_figures(r: np.ndarray, split: str, norm: str) -> dict[str, float]:
    median, half = _radius_columns(split, norm)
    out = {median: float(np.median(r)), half: float(upper_median(r))}
    out.update(zip(bounds(median), bootstrap_interval([r], _MEDIAN_ROWS)))
    out.update(zip(bounds(half), bootstrap_interval([r], _UPPER_MEDIAN_ROWS)))
    return out


def _pairs(medians: list[tuple[str, str, str]], radii: RadiusTable) -> list[tuple[str, str]]:
    """(split, norm) of the median-distance columns and of every stored radius."""
    pairs = {(split, norm) for _, split, norm in medians}
    pairs |= {(k[0], k[1]) for found in radii.values() for k in found}
    return sorted(pairs)


def with_intervals(frame: pd.DataFrame, figures: FigureIndex, distances: DistanceTable,
                   radii: RadiusTable | None = None) -> pd.DataFrame:
    """The leaderboard frame with every figure's interval next to it (module docstring).

    Args:
        frame: A leaderboard frame (:func:`marginrobust.report.tables.build_tables`).
        figures: The key of each of its robustness columns (made with it).
        distances: Per (run, checkpoint), the per-point distances
            (:func:`marginrobust.report.loader.load_all_distances`).
        radii: Per (run, checkpoint), the per-point Lipschitz radii
            (:func:`marginrobust.report.loader.load_all_radii`).

    Returns:
        A new frame: ``{column}_lo`` and ``{column}_hi`` after each accuracy and median
        column, and the certified-radius columns (with theirs) after the median distance
        of their split and norm. A row without the points behind a figure (a checkpoint
        not evaluated, arrays not stored) has empty bounds.
    """
    radii = radii or {}
    rows = frame.to_dict("records")
    added: dict[str, list[float]] = {}

    def put(index: int, column: str, value: float) -> None:
        added.setdefault(column, [np.nan] * len(rows))[index] = value

    accuracy = [c for c in frame.columns if figures.is_accuracy(c)]
    medians = [(c, figures[c].split, str(figures[c].norm))
               for c in figures.select(frame.columns, [MEDIAN])]
    pairs = _pairs(medians, radii)
    for i, row in enumerate(rows):
        n = known(row.get("n"))
        for col in accuracy:
            value = row[col]
            for name, bound in zip(bounds(col), wilson_interval(
                    None if pd.isna(value) else float(value), n)):
                put(i, name, bound)
        for col, split, norm in medians:
            found = None if pd.isna(row[col]) else row_distances(
                distances, str(row["run"]), row, split, norm)
            arrays = list(found.per_attack or (found.values,)) if found is not None else []
            if arrays and _reproduces(arrays, float(row[col])):
                for name, bound in zip(bounds(col), bootstrap_interval(arrays)):
                    put(i, name, bound)
        for split, norm in pairs:
            r = _row_radii(radii, row, split, norm)
            if r is not None and r.size:
                for name, value in _radius_figures(r, split, norm).items():
                    put(i, name, value)
    return _placed(frame, added, pairs)


def _placed(frame: pd.DataFrame, added: dict[str, list[float]],
            pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """``frame`` with the new columns inserted where the module docstring says."""
    new = pd.DataFrame({c: pd.Series(v, index=frame.index, dtype="float64")
                        for c, v in added.items()})
    radius_cols = {}
    for split, norm in pairs:
        cols = []
        for name in _radius_columns(split, norm):
            cols += [c for c in (name, *bounds(name)) if c in new]
        radius_cols[Figure(MEDIAN, split, norm).column({})] = cols
    order: list[str] = []
    for col in frame.columns:
        if col == SKIPPED:
            continue
        order.append(col)
        if not is_bound(col):
            order += [b for b in bounds(col) if b in new and b not in frame]
        order += radius_cols.pop(col, [])
    order += [c for cols in radius_cols.values() for c in cols]
    order += [SKIPPED] if SKIPPED in frame else []
    merged = pd.concat([frame, new[[c for c in new if c not in frame]]], axis=1)
    return merged[order]
