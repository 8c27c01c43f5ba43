"""Several seeds of one configuration: mean and 95 % t-interval per checkpoint position.

Runs that are seeds of one configuration (:mod:`marginrobust.report.run_groups`) and were
evaluated with the same setting (``n``, ``seed``, ``settings``) are aggregated. Checkpoints
are aligned **by nearest gradient-evaluation count**: the seed with the most evaluated
checkpoints sets the positions, and each checkpoint of another seed joins the position
whose count is nearest (the nearer one wins where two checkpoints of a seed pick the same
position). Checkpoints every few decades of the loss fall at different epochs in different
seeds, so epochs would rarely line up. Where a run has no gradient-evaluation counts
(older metrics), the group is aligned by epoch instead (``aligned_by`` says which).

The topic's three outputs live here: the table (:func:`seed_table`), its board section
(:func:`seeds_section`) and its figure (:func:`seeds_plot`: one line per configuration and
evaluation setting through its checkpoint positions, against the mean gradient-evaluation
count, with the t interval of each mean as a band; panels for the normalized margin and
the AutoAttack accuracy at the smallest budget of each split and norm; only drawn where
some configuration has two seeds or more).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .attack_sets import column_notes
from .columns import SETTINGS, bounds
from .figures import AVERAGED, MEDIAN, FigureIndex
from .plot_base import band, duration_axis, log_if_positive, panel_grid, save
from .render import Section, Table, view
from .run_groups import RunConfig
from .stats import t_interval

TRAJECTORY_METRICS = ("log10_loss", "train_acc", "test_acc", "normalized_margin",
                      "smoothed_margin")
PROPORTIONS = ("train_acc", "test_acc")
MARGIN = "normalized_margin"
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


def seeds_section(seeds: pd.DataFrame, figures: FigureIndex,
                  texts: Mapping[str, Mapping[str, str]] | None = None) -> Section:
    """Mean and t-interval across seeds per configuration and checkpoint position.

    Args:
        seeds: :func:`seed_table`.
        figures: The key of each robustness column of the leaderboard frame.
        texts: Per settings id, what produced each measure (column notes on the page).
    """
    shown = view(seeds, [*KEYS, "position", "n_seeds", "aligned_by", "grad_evals_mean",
                         "epoch_mean", "normalized_margin",
                         *figures.select(seeds.columns, ["aa", MEDIAN])])
    most = int(seeds["n_seeds"].max()) if len(seeds) else 0
    notes = column_notes(shown.columns, seeds["settings"], dict(texts or {}), figures)
    return Section("Across seeds", [Table("", shown, "seeds", notes)], note=(
        "Runs that differ only in their seed (same dataset, model and options, schedule, "
        "rate, data subsets and precision) form a configuration (`config`). Per "
        "configuration, evaluation setting and checkpoint position: the mean over the seeds "
        "and its 95 % Student-t interval, with `n_seeds` (no interval with one seed). "
        "Checkpoints are aligned by nearest gradient-evaluation count to those of the seed "
        "with the most checkpoints (`aligned_by` says `epoch` where a run has no counts); "
        "`grad_evals_mean` is the mean count of the aligned checkpoints (the spread is in "
        f"`seeds.csv`). The most seeds of any configuration here: {most}. Every metric "
        "and figure is in `seeds.csv`."))


def seeds_plot(seeds: pd.DataFrame, figures: FigureIndex, out_png: str | Path,
               title: str) -> Path | None:
    """Means across seeds against gradient evaluations (module docstring).

    Args:
        seeds: Rows of the seeds table (usually those of one (dataset, model) group).
        figures: The key of each robustness column of the leaderboard frame.
        out_png: Where to write the PNG.
        title: The group's title.

    Returns:
        The PNG, or None (nothing written) without a configuration of two seeds or more.
    """
    if seeds.empty or seeds["n_seeds"].max() < 2:
        return None
    present = [c for c in seeds.columns if seeds[c].notna().any()]
    panels = [c for c in [MARGIN, *figures.headline(present)] if c in present]
    by_grad = (seeds["aligned_by"] == "grad_evals").all() and seeds["grad_evals_mean"].notna(
        ).all()
    x, xname = ("grad_evals_mean", "grad_evals") if by_grad else ("epoch_mean", "epoch")
    lines = list(seeds.groupby(["config", *SETTINGS], sort=False, dropna=False))
    fig, axes = panel_grid(len(panels), width=5.2)
    for ax, col in zip(axes, panels):
        hidden = col == MARGIN and log_if_positive(ax, seeds[col], "y")
        for i, (key, rows) in enumerate(lines):
            rows = rows.sort_values("position")
            rows = rows[duration_axis(ax, xname, rows[x].astype("float64"))]
            if hidden:
                rows = rows[rows[col] > 0]
            color = f"C{i % 10}"
            label = f"{key[0]} (up to {int(rows['n_seeds'].max()) if len(rows) else 0} seeds)"
            ax.plot(rows[x], rows[col], "-o", color=color, ms=4, label=label)
            band(ax, rows[x].astype("float64"), rows, col, color)
        ax.set_ylabel(f"{col}, mean over seeds" + (" (γ̄ ≤ 0 not shown)" if hidden else ""))
        ax.set_title(col, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 2), fontsize=8,
               bbox_to_anchor=(0.5, -0.04 - 0.03 * ((len(labels) + 1) // 2)))
    fig.suptitle(f"{title}: means across seeds (bands: 95 % t intervals; x: mean of the "
                 "aligned checkpoints)")
    return save(fig, out_png)
