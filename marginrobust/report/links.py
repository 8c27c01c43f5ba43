"""The margin–robustness link: rank correlations across checkpoints, per run and setting.

It measures the link, it never assumes one. What the normalized margin is, and why only
fitted checkpoints speak to the theory, is in ``docs/science.md`` (section 2, Margins).
"""

from __future__ import annotations

import math

import pandas as pd

from .columns import SETTINGS, robustness_columns

LINK_COLUMNS = ("run", "dataset", "model", *SETTINGS, "column", "n_checkpoints", "spearman",
                "n_fitted", "spearman_fitted")
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


def link_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run, setting and robustness column, Spearman's ρ with the normalized margin.

    ``spearman`` uses every checkpoint with both values; ``spearman_fitted`` only those with
    training accuracy 1: Lyu & Li's results (the normalized margin rises once the data is
    fitted) say nothing before that, when margin and robustness both grow with plain
    accuracy. Figures of different settings (``n``, ``seed``, ``settings``) are never
    correlated together. A column a run never evaluated is left out for that run.

    Args:
        frame: A leaderboard frame.

    Returns:
        Columns ``run, dataset, model, n, seed, settings, column, n_checkpoints, spearman,
        n_fitted, spearman_fitted`` (ρ is NaN with fewer than 3 checkpoints or a constant
        side).
    """
    rows = []
    columns = robustness_columns(frame)
    keys = ["run", *[c for c in SETTINGS if c in frame]]
    for key, sub in frame.groupby(keys, sort=False, dropna=False):
        setting = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        fitted = sub[sub["train_acc"] == 1.0]
        for col in columns:
            if sub[col].isna().all():
                continue
            n, rho = spearman(sub["normalized_margin"], sub[col])
            n_fit, rho_fit = spearman(fitted["normalized_margin"], fitted[col])
            rows.append({**setting, "dataset": sub["dataset"].iloc[0],
                         "model": sub["model"].iloc[0], "column": col, "n_checkpoints": n,
                         "spearman": rho, "n_fitted": n_fit, "spearman_fitted": rho_fit})
    out = pd.DataFrame(rows, columns=list(LINK_COLUMNS))
    for col in ("n", "seed", "n_checkpoints", "n_fitted"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out
