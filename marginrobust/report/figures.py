"""What each robustness column of the leaderboard holds, as typed keys.

A leaderboard frame is wide: one column per (measure, split, norm, ε). Its names are made
here, once, from a :class:`Figure` key, and the :class:`FigureIndex` built alongside the
frame keeps every name's key. Code that needs to know which column is which (the plots,
the tables of seeds and links, the board's sections) asks the index; no code takes a
column name apart to recover its key.

Measures and their columns:

=============================  ===============================  =============================
measure                        column                           holds
=============================  ===============================  =============================
``clean``                      ``clean_{split}``                clean accuracy
``aa``                         ``aa_{split}_{norm}_{eps}``      AutoAttack robust accuracy
``cert``                       ``cert_{split}_{norm}_{eps}``    certified accuracy
``worst``                      ``worst_{split}_{norm}_{eps}``   worst case over every attack
``median_dist``                ``median_dist_{split}_{norm}``   median minimal distance
``median_certified_radius``    ``median_certified_radius_...``  median Lipschitz radius
``half_certified_eps``         ``half_certified_eps_...``       budget certifying half
``min_certified_radius``       ``min_certified_radius_train_L2``  smallest Lipschitz radius
=============================  ===============================  =============================

``eps`` is written by :func:`marginrobust.report.columns.eps_labels` over every budget of
a board, so two budgets never share a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .columns import pair_order

# Record method → measure of the accuracies taken from it.
ACCURACY_METHODS = {"autoattack": "aa", "certified": "cert", "worst": "worst"}
PER_BUDGET = ("aa", "cert", "worst")
ACCURACIES = ("clean", *PER_BUDGET)
MEDIAN = "median_dist"
RADIUS = "median_certified_radius"
HALF_EPS = "half_certified_eps"
MIN_RADIUS = "min_certified_radius"
# Figures of the Lipschitz certificate's per-point radii: γ̄ over a Lipschitz bound.
CERTIFIED_RADII = (RADIUS, HALF_EPS, MIN_RADIUS)
# The figures the link statistics correlate with γ̄.
LINKED = (*PER_BUDGET, MEDIAN, RADIUS, MIN_RADIUS)
# The figures averaged across seeds and matched between schedules.
AVERAGED = (*ACCURACIES, MEDIAN, RADIUS, HALF_EPS, MIN_RADIUS)


@dataclass(frozen=True)
class Figure:
    """The key of one robustness column: a measure on one split, under one norm and budget.

    Attributes:
        measure: One of the measures in the module docstring.
        split: ``test`` or ``train``.
        norm: ``L2`` or ``Linf`` (``None`` for clean accuracy).
        eps: The budget of a per-budget accuracy (``None`` otherwise).
    """

    measure: str
    split: str
    norm: str | None = None
    eps: float | None = None

    def column(self, labels: Mapping[float, str]) -> str:
        """The column's name.

        Args:
            labels: Names of the budgets (:func:`~marginrobust.report.columns.eps_labels`).
        """
        if self.measure == "clean":
            return f"clean_{self.split}"
        if self.eps is not None:
            return f"{self.measure}_{self.split}_{self.norm}_{labels[self.eps]}"
        return f"{self.measure}_{self.split}_{self.norm}"

    @property
    def is_accuracy(self) -> bool:
        """Whether the figure is a proportion of the row's ``n`` points."""
        return self.measure in ACCURACIES


MIN_RADIUS_FIGURE = Figure(MIN_RADIUS, "train", "L2")


class FigureIndex(Mapping[str, Figure]):
    """Every robustness column of a leaderboard frame, name → :class:`Figure`.

    Made with the frame (:func:`marginrobust.report.tables.build_tables`) and handed to
    whatever reads the frame. Its queries take the frame (or the columns at hand) and give
    the figure columns that are there, in the order the caller's columns have them;
    interval bounds (``_lo``, ``_hi``) are never figures.
    """

    def __init__(self, figures: Mapping[str, Figure] | None = None) -> None:
        self._figures = dict(figures or {})

    @classmethod
    def of(cls, figures: Iterable[Figure], labels: Mapping[float, str]) -> FigureIndex:
        """The index of some figures, named with ``labels``.

        Args:
            figures: The keys.
            labels: Names of the budgets (:func:`~marginrobust.report.columns.eps_labels`).
        """
        return cls({f.column(labels): f for f in figures})

    def __getitem__(self, column: str) -> Figure:
        return self._figures[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._figures)

    def __len__(self) -> int:
        return len(self._figures)

    def __repr__(self) -> str:
        return f"FigureIndex({len(self)} columns)"

    def measure(self, column: Any) -> str | None:
        """The measure of a column (``None``: not a figure column)."""
        figure = self._figures.get(column) if isinstance(column, str) else None
        return None if figure is None else figure.measure

    def is_accuracy(self, column: Any) -> bool:
        """Whether a column is an accuracy (a proportion of the row's ``n`` points)."""
        figure = self._figures.get(column) if isinstance(column, str) else None
        return figure is not None and figure.is_accuracy

    def select(self, columns: Iterable[Any], measures: Iterable[str] | None = None,
               split: str | None = None, norm: str | None = None) -> list[str]:
        """The figure columns among ``columns``, in their order, optionally filtered.

        Args:
            columns: Column names (a frame's, or values of a table's ``quantity``).
            measures: Keep these measures only.
            split: Keep this split only.
            norm: Keep this norm only.
        """
        wanted = None if measures is None else set(measures)
        out = []
        for col in columns:
            figure = self._figures.get(col) if isinstance(col, str) else None
            if figure is None or (wanted is not None and figure.measure not in wanted):
                continue
            if (split is None or figure.split == split) and (norm is None or figure.norm == norm):
                out.append(col)
        return out

    def eps_columns(self, frame: pd.DataFrame, measure: str, split: str,
                    norm: str) -> dict[float, str]:
        """The per-budget columns of one measure, split and norm holding a value, by ε.

        Args:
            frame: Leaderboard rows.
            measure: ``aa``, ``cert`` or ``worst``.
            split: ``test`` or ``train``.
            norm: ``L2`` or ``Linf``.
        """
        found = {self._figures[c].eps: c for c in self.select(frame.columns, [measure], split, norm)
                 if frame[c].notna().any()}
        return {float(e): c for e, c in sorted(found.items()) if e is not None}

    def split_norms(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        """The (split, norm) pairs with any attack figure in ``frame``, test split first.

        Args:
            frame: Leaderboard rows.
        """
        pairs = {(self._figures[c].split, str(self._figures[c].norm))
                 for c in self.select(frame.columns, [*PER_BUDGET, MEDIAN])
                 if frame[c].notna().any()}
        return sorted(pairs, key=pair_order)

    def headline(self, columns: Iterable[Any]) -> list[str]:
        """The AutoAttack columns of the smallest budget of each (split, norm), in order.

        Args:
            columns: Column names (or values of a table's ``quantity``).
        """
        first: dict[tuple[str, str | None], tuple[float, str]] = {}
        for col in self.select(columns, ["aa"]):
            figure = self._figures[col]
            key, eps = (figure.split, figure.norm), float(figure.eps or 0.0)
            if key not in first or eps < first[key][0]:
                first[key] = (eps, col)
        return [col for _, col in first.values()]
