"""Margin or training time? A pooled fit over every fitted checkpoint of every run.

Along one loss-based run the normalized margin rises with training time, so a link with γ̄
is also a link with time. Runs with different schedules and seeds reach different margins
at the same compute; pooling their fitted checkpoints (training accuracy 1 or summed loss
below log 2), per dataset, model and evaluation setting, and fitting

    robustness = a + b · log10 γ̄ + c · log10(gradient evaluations)

by least squares separates the two where the data allow it: ``b`` is the change per decade
of margin at equal compute, ``c`` per decade of compute at equal margin. Checkpoints of one
run are not independent (they share a trajectory), so the 95 % intervals use standard
errors clustered by run (CR1) and t(runs − 1) quantiles
(:func:`marginrobust.report.stats.ols`): the runs, not the checkpoints, are the independent
units, and a fit of one run has no interval.
Where log γ̄ and log gradient evaluations are collinear (|r| > 0.95) the fit is not
attempted: the data cannot separate them. The table (:func:`pooled_table`) and its board
section with the sentences generated from each fit (:func:`pooled_section`) live here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .columns import SETTINGS, fitted
from .figures import CERTIFIED_RADII, FigureIndex
from .render import Section, Table, view
from .seeds import figure_columns
from .stats import ols

COLLINEAR = 0.95
MIN_POINTS = 6  # three coefficients and at least three residual degrees of freedom
NEAR_TAUTOLOGICAL = ("near-tautological: the Lipschitz radius is γ̄ over a Lipschitz bound "
                     "of the network")
KEYS = ("dataset", "model", *SETTINGS)
POOLED_COLUMNS = (*KEYS, "column", "n_obs", "n_runs", "r_regressors", "a", "b", "b_lo", "b_hi",
                  "c", "c_lo", "c_hi", "conclusion", "note")


def _sign(value: float, what: str) -> str:
    return f"{'higher' if value > 0 else 'lower'} {what}"


def conclusion(b: tuple[float, float, float], c: tuple[float, float, float], r: float,
               n: int) -> str:
    """The plain sentence of one fit, generated from its numbers.

    Args:
        b: (estimate, low, high) of the margin coefficient.
        c: (estimate, low, high) of the compute coefficient.
        r: Correlation of log γ̄ with log gradient evaluations.
        n: Checkpoints in the fit.
    """
    if n < MIN_POINTS:
        return f"only {n} fitted checkpoints: too few to fit"
    if not math.isfinite(r) or abs(r) > COLLINEAR:
        shown = "undefined" if not math.isfinite(r) else f"{r:.3f}"
        return (f"log γ̄ and log grad_evals are collinear (r = {shown}): the data cannot "
                "separate margin from training time")
    if not all(math.isfinite(v) for v in (*b[1:], *c[1:])):
        return "the standard errors are undefined: the data cannot separate them"
    b_out, c_out = not b[1] <= 0 <= b[2], not c[1] <= 0 <= c[2]
    if b_out and c_out:
        return (f"both intervals exclude 0: at equal compute a larger margin goes with "
                f"{_sign(b[0], 'robustness')}, and at equal margin more compute with "
                f"{_sign(c[0], 'robustness')}")
    if b_out:
        return (f"b's interval excludes 0 while c's includes it: at equal compute a larger "
                f"margin goes with {_sign(b[0], 'robustness')}; no effect of training time "
                "is detected")
    if c_out:
        return (f"c's interval excludes 0 while b's includes it: robustness follows training "
                f"time ({_sign(c[0], 'robustness')} with more compute), not the margin")
    return "the intervals overlap 0 for both: the data cannot separate margin from training time"


def _fit(sub: pd.DataFrame, column: str, certified_radius: bool) -> dict[str, Any]:
    y = sub[column].astype("float64").to_numpy()
    g = np.log10(sub["normalized_margin"].astype("float64").to_numpy())
    t = np.log10(sub["grad_evals"].astype("float64").to_numpy())
    n = len(y)
    r = float(np.corrcoef(g, t)[0, 1]) if n > 2 and g.std() > 0 and t.std() > 0 else math.nan
    row: dict[str, Any] = {"column": column, "n_obs": n, "n_runs": sub["run"].nunique(),
                           "r_regressors": r}
    nan3 = (math.nan,) * 3
    b = c = nan3
    if n >= MIN_POINTS and math.isfinite(r) and abs(r) <= COLLINEAR:
        fit = ols(y, np.column_stack([np.ones(n), g, t]), clusters=sub["run"].tolist())
        row["a"] = float(fit.coef[0])
        b = (float(fit.coef[1]), float(fit.lo[1]), float(fit.hi[1]))
        c = (float(fit.coef[2]), float(fit.lo[2]), float(fit.hi[2]))
    row.update({"b": b[0], "b_lo": b[1], "b_hi": b[2], "c": c[0], "c_lo": c[1], "c_hi": c[2],
                "conclusion": conclusion(b, c, r, n),
                "note": NEAR_TAUTOLOGICAL if certified_radius else ""})
    return row


def pooled_table(frame: pd.DataFrame, figures: FigureIndex) -> pd.DataFrame:
    """The pooled fit (module docstring) per dataset, model, setting and figure.

    Args:
        frame: A leaderboard frame.
        figures: The key of each of its robustness columns.

    Returns:
        Rows of :data:`POOLED_COLUMNS`; a figure constant over the checkpoints, or present
        on none, is left out.
    """
    usable = frame[frame["settings"].notna()] if "settings" in frame else frame.iloc[:0]
    usable = usable[fitted(usable)]
    usable = usable[(usable["normalized_margin"].astype("float64") > 0)
                    & (usable["grad_evals"].astype("float64") > 0)]
    rows = []
    for key, sub in usable.groupby(list(KEYS), sort=False, dropna=False):
        for column in figure_columns(frame, figures):
            have = sub[np.isfinite(sub[column].astype("float64"))]
            if have.empty or have[column].nunique() < 2:
                continue
            rows.append({**dict(zip(KEYS, key)),
                         **_fit(have, column, figures.measure(column) in CERTIFIED_RADII)})
    out = pd.DataFrame(rows, columns=list(POOLED_COLUMNS))
    for col in ("n", "seed", "n_obs", "n_runs"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out


def _sentences(pooled: pd.DataFrame, figures: FigureIndex) -> str:
    rows = pooled[pooled["column"].isin(figures.select(pooled["column"], ["aa"]))]
    out = []
    for row in rows.to_dict("records"):
        setting = ", ".join(f"{k}={row[k]}" for k in SETTINGS if not pd.isna(row[k]))
        out.append(f"{row['dataset']} · {row['model']} `{row['column']}` ({setting}; "
                   f"{row['n_obs']} fitted checkpoints of {row['n_runs']} run(s)): "
                   f"{row['conclusion']}.")
    return " ".join(out)


def pooled_section(pooled: pd.DataFrame, figures: FigureIndex) -> Section:
    """The pooled fit robustness ~ a + b·log10 γ̄ + c·log10(grad_evals), with its words.

    Args:
        pooled: :func:`pooled_table`.
        figures: The key of each robustness column of the leaderboard frame.
    """
    shown = view(pooled.drop(columns=["a"]), [c for c in pooled.columns if c != "a"])
    note = ("Per dataset, model and evaluation setting, over every fitted checkpoint (training "
            "accuracy 1 or summed loss below log 2) of every run: robustness = a + b · "
            "log10 γ̄ + c · log10(grad_evals), ordinary least squares. `b` is the change per "
            "decade of margin at equal compute, `c` per decade of gradient evaluations at "
            "equal margin; brackets are 95 % intervals from standard errors clustered by run "
            "(CR1) and t(`n_runs` − 1): checkpoints of one run share a trajectory, so the "
            "runs are the independent units (with a dozen runs such intervals still cover a "
            "little under 95 %, about 89 % in a simulation in the tests). `r_regressors` is "
            "the "
            "correlation of log10 γ̄ with log10 grad_evals: above "
            f"{COLLINEAR} in absolute value the two are collinear and no fit is reported; "
            f"fewer than {MIN_POINTS} checkpoints are not fitted. The certified-radius rows "
            "are near-tautological (the Lipschitz radius is γ̄ over a Lipschitz bound).")
    sentences = _sentences(pooled, figures)
    if sentences:
        note += " " + sentences
    elif pooled.empty:
        note += " No fitted checkpoint with a positive margin and gradient-evaluation count."
    return Section("Margin or training time: the pooled fit", [Table("", shown, "pooled")],
                   note=note)
