"""The figure of several seeds: means across seeds with their 95 % t bands.

Drawn from :func:`marginrobust.report.seeds.seed_table` (it reads nothing): one line per
configuration and evaluation setting through its checkpoint positions, against the mean
gradient-evaluation count of the aligned checkpoints, with the t interval of each mean as a
band; panels for the normalized margin and the AutoAttack accuracy at the smallest budget
of each split and norm. Only drawn where some configuration has two seeds or more.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .columns import SETTINGS
from .figures import FigureIndex
from .plot_base import band, duration_axis, log_if_positive, panel_grid, save

MARGIN = "normalized_margin"


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
