"""Several seeds of one configuration: mean and 95 % t-interval per checkpoint position.

Runs that are seeds of one configuration (:mod:`marginrobust.report.run_groups`) and were
evaluated with the same setting (``n``, ``seed``, ``settings``) are aggregated. Checkpoints
are aligned **by nearest gradient-evaluation count**: the seed with the most evaluated
checkpoints sets the positions, and each checkpoint of another seed joins the position
whose count is nearest (the nearer one wins where two checkpoints of a seed pick the same
position). Checkpoints every few decades of the loss fall at different epochs in different
seeds, so epochs would rarely line up. Where a run has no gradient-evaluation counts
(older metrics), the group is aligned by epoch instead (``aligned_by`` says which).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .columns import SETTINGS, bounds
from .figures import AVERAGED, FigureIndex
from .run_groups import RunConfig
from .stats import t_interval

TRAJECTORY_METRICS = ("log10_loss", "train_acc", "test_acc", "normalized_margin",
                      "smoothed_margin")
PROPORTIONS = ("train_acc", "test_acc")
KEYS = ("dataset", "model", "config", *SETTINGS)
SEED_COLUMNS = (*KEYS, "position", "n_seeds", "runs", "aligned_by", "epoch_mean",
                "grad_evals_mean", "grad_evals_min", "grad_evals_max")


def figure_columns(frame: pd.DataFrame, figures: FigureIndex) -> list[str]:
    """The point figures of a frame that seeds are averaged over (bounds left out).

    Args:
        frame: A leaderboard frame.
        figures: The key of each of its robustness columns.
    """
    return figures.select(frame.columns, AVERAGED)


def _positions(sub: pd.DataFrame, coordinate: str) -> dict[int, list[dict[str, Any]]]:
    """Per reference position, the rows of every seed aligned to it."""
    by_run = {run: rows.sort_values(coordinate) for run, rows in sub.groupby("run", sort=True)}
    reference = max(by_run, key=lambda r: (len(by_run[r]), -sorted(by_run).index(r)))
    ref = by_run[reference][coordinate].astype("float64").to_numpy()
    out: dict[int, list[dict[str, Any]]] = {k: [] for k in range(len(ref))}
    for rows in by_run.values():
        best: dict[int, tuple[float, dict[str, Any]]] = {}
        for row in rows.to_dict("records"):
            x = float(row[coordinate])
            k = int(np.argmin(np.abs(ref - x)))
            gap = abs(ref[k] - x)
            if k not in best or gap < best[k][0]:
                best[k] = (gap, row)
        for k, (_, row) in best.items():
            out[k].append(row)
    return out


def seed_table(frame: pd.DataFrame, figures: FigureIndex,
               configs: Mapping[str, RunConfig]) -> pd.DataFrame:
    """Mean and 95 % t-interval across the seeds of each configuration and position.

    Args:
        frame: A leaderboard frame.
        figures: The key of each of its robustness columns.
        configs: Per run label, its configuration (:func:`~.run_groups.run_configs`).

    Returns:
        One row per (dataset, model, configuration, setting, position): the identity
        (:data:`SEED_COLUMNS`), then for each trajectory metric and figure its mean over
        the seeds with ``_lo`` / ``_hi`` (empty with one seed: ``n_seeds`` is then 1;
        cut to [0, 1] for accuracies).
    """
    metrics = [*TRAJECTORY_METRICS, *figure_columns(frame, figures)]
    columns = [*SEED_COLUMNS, *[c for m in metrics for c in (m, *bounds(m))]]
    evaluated = frame[frame["settings"].notna()] if "settings" in frame else frame.iloc[:0]
    if evaluated.empty:
        return pd.DataFrame(columns=columns)
    evaluated = evaluated.assign(config=[configs[r].description for r in evaluated["run"]])
    out = []
    for key, sub in evaluated.groupby(list(KEYS), sort=False, dropna=False):
        coordinate = "grad_evals" if sub["grad_evals"].notna().all() else "epoch"
        for k, members in _positions(sub, coordinate).items():
            if not members:
                continue
            grad = pd.Series([m["grad_evals"] for m in members], dtype="float64")
            row: dict[str, Any] = {**dict(zip(KEYS, key)), "position": k + 1,
                                   "n_seeds": len(members),
                                   "runs": ", ".join(str(m["run"]) for m in members),
                                   "aligned_by": coordinate,
                                   "epoch_mean": pd.Series([m["epoch"] for m in members],
                                                           dtype="float64").mean(),
                                   "grad_evals_mean": grad.mean(), "grad_evals_min": grad.min(),
                                   "grad_evals_max": grad.max()}
            for metric in metrics:
                values = [float(m[metric]) if not pd.isna(m[metric]) else np.nan
                          for m in members]
                mean, lo, hi, _ = t_interval(values)
                if figures.is_accuracy(metric) or metric in PROPORTIONS:
                    # A mean of proportions lies in [0, 1]: so does its interval.
                    lo, hi = max(lo, 0.0), min(hi, 1.0)
                row.update({metric: mean, **dict(zip(bounds(metric), (lo, hi)))})
            out.append(row)
    table = pd.DataFrame(out, columns=columns)
    for col in ("n", "seed", "position", "n_seeds", "grad_evals_min", "grad_evals_max"):
        table[col] = pd.to_numeric(table[col]).astype("float64").astype("Int64")
    return table
