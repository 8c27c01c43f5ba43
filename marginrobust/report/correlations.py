"""The margin–robustness link: rank correlations across checkpoints, per run and setting.

It measures the link, it never assumes one. What the normalized margin is, and why only
fitted checkpoints speak to the theory, is in ``docs/science.md`` (section 2, Margins).
Each ρ comes with its number of checkpoints, a two-sided p-value and a 95 % interval
(:func:`marginrobust.report.stats.spearman_test`: exact permutation p up to 8 checkpoints,
Fisher z with the Bonett–Wright standard error). Along one run the margin usually rises
with training time, so ``margin_time_fitted`` (Spearman of γ̄ with the epoch over the
fitted checkpoints) says when a link with γ̄ is, rank for rank, a link with time. The
table (:func:`link_statistics`) and its board section (:func:`links_section`) live here.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .columns import SETTINGS, bounds, fitted
from .figures import CERTIFIED_RADII, LINKED, FigureIndex
from .pooled import NEAR_TAUTOLOGICAL
from .render import Section, Table, view
from .stats import spearman_test

LINK_COLUMNS = ("run", "dataset", "model", *SETTINGS, "column", "n_checkpoints", "spearman",
                *bounds("spearman"), "spearman_p", "n_fitted", "spearman_fitted",
                *bounds("spearman_fitted"), "spearman_fitted_p", "margin_time_fitted", "note")
# A rank correlation of fewer points says nothing.
MIN_LINK_POINTS = 3


def spearman(x: pd.Series, y: pd.Series) -> tuple[int, float]:
    """Spearman rank correlation of the pairs where both values are present.

    Args:
        x, y: Aligned series.

    Returns:
        (number of pairs, correlation); the correlation is NaN with fewer than 3 pairs or
        when either side is constant (no ranking to compare).
    """
    both = pd.concat([x.astype("float64"), y.astype("float64")], axis=1).dropna()
    if len(both) < MIN_LINK_POINTS or both.nunique().min() < 2:
        return len(both), math.nan
    return len(both), float(both.iloc[:, 0].corr(both.iloc[:, 1], method="spearman"))


def margin_link(rows: pd.DataFrame, fitted_rows: pd.DataFrame, column: str) -> dict[str, Any]:
    """Spearman's ρ of the normalized margin with ``column`` across ``rows`` and across
    ``fitted_rows`` (the fitted checkpoints among them): each with its n, 95 % interval
    and p-value, under the names of :data:`LINK_COLUMNS`."""
    every = spearman_test(rows["normalized_margin"], rows[column])
    late = spearman_test(fitted_rows["normalized_margin"], fitted_rows[column])
    return {"n_checkpoints": every.n, "spearman": every.rho, "spearman_lo": every.lo,
            "spearman_hi": every.hi, "spearman_p": every.p, "n_fitted": late.n,
            "spearman_fitted": late.rho, "spearman_fitted_lo": late.lo,
            "spearman_fitted_hi": late.hi, "spearman_fitted_p": late.p}


def link_statistics(frame: pd.DataFrame, figures: FigureIndex) -> pd.DataFrame:
    """Per run, setting and robustness column, Spearman's ρ with the normalized margin.

    ``spearman`` uses every checkpoint with both values; ``spearman_fitted`` only the fitted
    ones (training accuracy 1, or summed loss below log 2): Lyu & Li's results (the
    normalized margin rises once the data is fitted) say nothing before that, when margin
    and robustness both grow with plain accuracy. Figures of different settings (``n``,
    ``seed``, ``settings``) are never correlated together. A column a run never evaluated
    is left out for that run.

    Args:
        frame: A leaderboard frame.
        figures: The key of each of its robustness columns.

    Returns:
        Columns :data:`LINK_COLUMNS`: per ρ its interval (``_lo``, ``_hi``) and p-value
        (``_p``); ρ is NaN with fewer than 3 checkpoints or a constant side. ``note`` marks
        the certified-radius links as near-tautological.
    """
    rows = []
    columns = figures.select(frame.columns, LINKED)
    keys = ["run", *[c for c in SETTINGS if c in frame]]
    for key, sub in frame.groupby(keys, sort=False, dropna=False):
        setting = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        fit = sub[fitted(sub)]
        time = spearman_test(fit["normalized_margin"], fit["epoch"].astype("float64")).rho
        for col in columns:
            if sub[col].isna().all():
                continue
            rows.append({**setting, "dataset": sub["dataset"].iloc[0],
                         "model": sub["model"].iloc[0], "column": col,
                         **margin_link(sub, fit, col), "margin_time_fitted": time,
                         "note": (NEAR_TAUTOLOGICAL if figures.measure(col) in CERTIFIED_RADII
                                  else "")})
    out = pd.DataFrame(rows, columns=list(LINK_COLUMNS))
    for col in ("n", "seed", "n_checkpoints", "n_fitted"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out


def links_section(links: pd.DataFrame) -> Section:
    """The link table with its explanation.

    Args:
        links: :func:`link_statistics`.
    """
    shown = view(links.drop(columns=["dataset", "model"]), links.columns)
    return Section("Margin–robustness link", [Table("", shown, "links")], note=(
        "Spearman rank correlation, per run and evaluation setting, between the normalized "
        "margin and each robustness column across checkpoints (`spearman`, over "
        "`n_checkpoints`), and across the fitted checkpoints only (training accuracy 1 or "
        "summed loss below log 2: `spearman_fitted`, over `n_fitted`, where the margin "
        "theory applies), each with its 95 % interval in brackets and two-sided p-value "
        "(`_p`). Empty with fewer than 3 checkpoints or a constant column; with few "
        "checkpoints even ±1 is weak evidence. `margin_time_fitted` is the Spearman of γ̄ "
        "with the epoch over the fitted checkpoints: at 1 the margin only rose, so a link "
        "with γ̄ is rank for rank the same link with training time (the pooled fit below "
        "separates them where the data allow). Links of certified radii are marked "
        "near-tautological (`note`): for these homogeneous nets the Lipschitz radius is γ̄ "
        "over a Lipschitz bound, so it follows the margin by construction."))
