"""Schedules compared at equal compute: matched gradient evaluations, and matched epochs.

A loss-based epoch can cost several times the gradient evaluations of a constant-rate one
(rolled-back epochs count), so comparing runs at equal epochs compares unequal compute.
For each **schedule pair** (:mod:`marginrobust.report.run_groups`: same dataset, model,
options, data and seed, different schedule), each run in turn is the anchor: at each of its
evaluated checkpoints, the other run's values are interpolated at the same gradient
evaluation count (``match = grad_evals``) and at the same epoch (``match = epoch``):

* the normalized margin γ̄ linearly in log γ̄, from the other run's per-epoch
  ``metrics.jsonl`` (dense, so the interpolation is short), NaN where either bracketing
  epoch has γ̄ ≤ 0;
* each robustness figure linearly between the other run's evaluated checkpoints of the
  same setting (``n``, ``seed``, ``settings``).

Nothing is extrapolated: anchors outside the other run's range are left out. The table
(:func:`matched_table`), its summary and its board section (:func:`matched_section`) live
here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .columns import SETTINGS
from .figures import FigureIndex
from .render import Section, Table
from .run_groups import RunConfig
from .seeds import figure_columns

MATCHES = ("grad_evals", "epoch")
MARGIN = "normalized_margin"
MATCH_COLUMNS = ("dataset", "model", "train_seed", "run_a", "schedule_a", "run_b",
                 "schedule_b", *SETTINGS, "match", "at", "checkpoint_a", "epoch_a",
                 "grad_evals_a", "quantity", "value_a", "value_b", "ratio", "difference")


def interpolate(xs: Sequence[float], ys: Sequence[float], x: float, log: bool = False) -> float:
    """``y`` at ``x`` by linear interpolation between the bracketing known points.

    Args:
        xs, ys: Known points (any order; NaN ones are dropped).
        x: Where to read.
        log: Interpolate ``log y`` (NaN when a bracketing ``y``, or the known ``y`` at
            ``x``, is not positive).

    Returns:
        The value, or NaN outside the known range (never extrapolated).
    """
    a, b = np.asarray(xs, float), np.asarray(ys, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0 or math.isnan(x) or x < a.min() or x > a.max():
        return math.nan
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    j = int(np.searchsorted(a, x, side="left"))
    if a[j] == x:
        return float(b[j]) if b[j] > 0 or not log else math.nan
    lo, hi = j - 1, j
    t = (x - a[lo]) / (a[hi] - a[lo])
    if log:
        if b[lo] <= 0 or b[hi] <= 0:
            return math.nan
        return float(math.exp((1 - t) * math.log(b[lo]) + t * math.log(b[hi])))
    if b[lo] == b[hi]:  # also keeps an infinite figure infinite
        return float(b[lo])
    return float((1 - t) * b[lo] + t * b[hi])


def schedule_pairs(configs: Mapping[str, RunConfig]) -> list[tuple[str, str]]:
    """Ordered (anchor, other) pairs of runs that differ only in their schedule.

    Args:
        configs: Per run label, its configuration.
    """
    labels = list(configs)
    return [(a, b) for a in labels for b in labels if a != b
            and configs[a].pair == configs[b].pair and configs[a].config != configs[b].config]


def _ratio(a: float, b: float) -> float:
    # Only between positive values: a margin ≤ 0 (data not yet separated) has no ratio.
    return a / b if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _margin_curve(metrics: pd.DataFrame | None, rows: pd.DataFrame,
                  match: str) -> tuple[list[float], list[float]]:
    """(coordinate, γ̄) of every epoch the other run logged, else of its checkpoints."""
    if metrics is not None and {match, MARGIN} <= set(metrics.columns):
        return (metrics[match].astype("float64").tolist(),
                metrics[MARGIN].astype("float64").tolist())
    return rows[match].astype("float64").tolist(), rows[MARGIN].astype("float64").tolist()


def matched_table(frame: pd.DataFrame, figures: FigureIndex,
                  metrics: Mapping[str, pd.DataFrame],
                  configs: Mapping[str, RunConfig]) -> pd.DataFrame:
    """Every schedule pair compared at matched gradient evaluations and epochs.

    Args:
        frame: A leaderboard frame (with its evaluated rows).
        figures: The key of each of its robustness columns.
        metrics: Per run label, its per-epoch metrics.
        configs: Per run label, its configuration.

    Returns:
        Long rows (:data:`MATCH_COLUMNS`): per (anchor, other, setting, match, anchor
        checkpoint, quantity) the anchor's value, the other's interpolated one, their ratio
        (anchor / other, only where both are positive) and difference (anchor − other).
    """
    quantities = [MARGIN, *figure_columns(frame, figures)]
    evaluated = frame[frame["settings"].notna()] if "settings" in frame else frame.iloc[:0]
    runs = {run: rows for run, rows in evaluated.groupby("run", sort=False)}
    out: list[dict[str, Any]] = []
    for a, b in schedule_pairs(configs):
        if a not in runs or b not in runs:
            continue
        for setting, rows_a in runs[a].groupby(list(SETTINGS), sort=False, dropna=False):
            rows_b = runs[b]
            for col, value in zip(SETTINGS, setting):
                rows_b = rows_b[rows_b[col].isna()] if pd.isna(value) else rows_b[
                    rows_b[col] == value]
            if rows_b.empty:
                continue
            out += _pair_rows(a, b, rows_a, rows_b, metrics.get(b), configs, quantities)
    table = pd.DataFrame(out, columns=list(MATCH_COLUMNS))
    for col in ("train_seed", "n", "seed", "epoch_a", "grad_evals_a"):
        table[col] = pd.to_numeric(table[col]).astype("float64").astype("Int64")
    return table


def _pair_rows(a: str, b: str, rows_a: pd.DataFrame, rows_b: pd.DataFrame,
               metrics_b: pd.DataFrame | None, configs: Mapping[str, RunConfig],
               quantities: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    first = rows_a.iloc[0]
    head = {"dataset": first["dataset"], "model": first["model"], "train_seed": configs[a].seed,
            "run_a": a, "schedule_a": configs[a].schedule, "run_b": b,
            "schedule_b": configs[b].schedule, **{c: first[c] for c in SETTINGS}}
    for match in MATCHES:
        if rows_a[match].isna().all() or rows_b[match].isna().all():
            continue
        curve = _margin_curve(metrics_b, rows_b, match)
        xs_b = rows_b[match].astype("float64").tolist()
        for row in rows_a.sort_values("epoch").to_dict("records"):
            if pd.isna(row[match]):
                continue
            x = float(row[match])
            if not min(xs_b) <= x <= max(xs_b) and not min(curve[0]) <= x <= max(curve[0]):
                continue
            base = {**head, "match": match, "at": x, "checkpoint_a": row["checkpoint"],
                    "epoch_a": row["epoch"], "grad_evals_a": row["grad_evals"]}
            for q in quantities:
                if q not in rows_b or pd.isna(row.get(q)):
                    continue
                other = (interpolate(*curve, x, log=True) if q == MARGIN
                         else interpolate(xs_b, rows_b[q].astype("float64").tolist(), x))
                if math.isnan(other):
                    continue
                mine = float(row[q])
                out.append({**base, "quantity": q, "value_a": mine, "value_b": other,
                            "ratio": _ratio(mine, other), "difference": mine - other})
    return out


def matched_summary(matched: pd.DataFrame, headline: Sequence[str]) -> pd.DataFrame:
    """Per pair, setting and match, at the anchor's last matched checkpoint: γ̄'s ratio
    and the differences of the ``headline`` figures.

    Args:
        matched: :func:`matched_table`.
        headline: Figures whose differences to show (e.g. one AutoAttack column per split).
    """
    keys = ["dataset", "model", "train_seed", "run_a", "run_b", *SETTINGS, "match"]
    columns = [*keys, "at", "gamma_ratio", *[f"Δ {h}" for h in headline]]
    rows = []
    for key, sub in matched.groupby(keys, sort=False, dropna=False):
        last = sub[sub["at"] == sub["at"].max()].set_index("quantity")
        row = {**dict(zip(keys, key)), "at": last["at"].iloc[0],
               "gamma_ratio": last["ratio"].get(MARGIN, math.nan)}
        row.update({f"Δ {h}": last["difference"].get(h, math.nan) for h in headline})
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    for col in ("train_seed", "n", "seed"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out


def matched_section(matched: pd.DataFrame, figures: FigureIndex) -> Section:
    """Schedules compared at equal gradient evaluations and at equal epochs.

    Args:
        matched: :func:`matched_table`.
        figures: The key of each robustness column of the leaderboard frame.
    """
    summary = matched_summary(matched, figures.headline(matched["quantity"].unique()))
    note = ("For each pair of runs that differ only in their schedule (same dataset, model, "
            "options and seed), each run in turn is the anchor `run_a`: at its evaluated "
            "checkpoints the other run's γ̄ (interpolated in log γ̄ between its logged "
            "epochs) and robustness (interpolated linearly between its evaluated "
            "checkpoints) are read at the same gradient-evaluation count (`match` = "
            "`grad_evals`) and at the same epoch (`match` = `epoch`); nothing is "
            "extrapolated. Shown: the anchor's last matched checkpoint (`at`), the margin "
            "ratio `gamma_ratio` = γ̄(a) / γ̄(b) and the differences a − b of the AutoAttack "
            "accuracies; every checkpoint and figure is in `matched.csv`.")
    if summary.empty:
        note += " No two runs here differ only in their schedule."
    return Section("Schedules at equal compute", [Table("", summary, "matched")], note=note)
