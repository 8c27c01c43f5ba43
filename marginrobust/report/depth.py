"""Deep trajectories: margins and robustness against the depth of the training loss.

A run trained far into the margin-maximising regime (log10 𝓛 ≤ :data:`DEEP_LOG10_LOSS`) is
read against its depth, the decades of summed training loss −log10 𝓛, rather than against
epochs: that is the scale on which the paper's theory moves. Per checkpoint the table gives
the normalized margin γ̄, the smoothed margin γ̃, their relative gap (γ̄ − γ̃) / γ̄ (γ̃ ≤ γ̄
once 𝓛 < log 2, and the gap closes as the margins converge), and how many accepted epochs
since the previous checkpoint lowered γ̃ (the theorem says γ̃ never falls under gradient
flow once 𝓛 < log 2; gradient descent only approximates it). The figure draws the same
along every logged epoch, with the robustness figures of the checkpoints and their
intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .columns import FITTED_LOG10_LOSS, fitted
from .figures import MEDIAN, FigureIndex
from .plot_base import band, save
from .render import Section, Table

DEEP_LOG10_LOSS = -100.0
GAMMA, SMOOTH = "normalized_margin", "smoothed_margin"
DEPTH_COLUMNS = ("run", "checkpoint", "epoch", "grad_evals", "train_wall_s", "log10_loss",
                 GAMMA, SMOOTH, "relative_gap", "fitted_epochs", "smoothed_decreases",
                 "largest_decrease")


def deep_runs(frame: pd.DataFrame) -> list[str]:
    """The runs whose deepest checkpoint has log10 𝓛 ≤ :data:`DEEP_LOG10_LOSS`."""
    if frame.empty or "log10_loss" not in frame:
        return []
    deepest = frame.groupby("run", sort=False)["log10_loss"].min()
    return [str(run) for run, value in deepest.items() if value <= DEEP_LOG10_LOSS]


def _fitted_epochs(table: pd.DataFrame) -> pd.DataFrame:
    need = {"epoch", "log10_loss", GAMMA, SMOOTH}
    if not need <= set(table.columns):
        return table.iloc[:0]
    rows = table.sort_values("epoch")
    return rows[rows["log10_loss"].astype("float64") < FITTED_LOG10_LOSS]


def depth_table(frame: pd.DataFrame, metrics: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per checkpoint of every deep run: depth, margins, their gap and γ̃'s decreases.

    Args:
        frame: A leaderboard frame.
        metrics: Per run name, its metric rows (one per accepted epoch).

    Returns:
        Rows of :data:`DEPTH_COLUMNS`, checkpoints in epoch order. ``fitted_epochs`` counts
        the accepted epochs after the previous checkpoint up to this one with 𝓛 < log 2, and
        ``smoothed_decreases`` those of them whose γ̃ is below the epoch before's,
        ``largest_decrease`` the largest such fall relative to the epoch before's γ̃.
    """
    rows = []
    for run in deep_runs(frame):
        table = metrics.get(run)
        if table is None:
            continue
        logged = _fitted_epochs(table)
        smooth = logged[SMOOTH].astype("float64").to_numpy()
        fell = np.concatenate([[False], np.diff(smooth) < 0])
        # A decrease relative to the epoch before's γ̃ (where that one is positive).
        before = np.concatenate([[np.nan], smooth[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(fell & (before > 0), (before - smooth) / before, 0.0)
        epochs = logged["epoch"].astype("float64").to_numpy()
        points = (frame[frame["run"] == run].drop_duplicates("checkpoint")
                  .sort_values("epoch"))
        previous = -np.inf
        for point in points.to_dict("records"):
            epoch = float(point["epoch"])
            inside = (epochs > previous) & (epochs <= epoch)
            g, s = float(point[GAMMA]), float(point[SMOOTH])
            rows.append({**{k: point.get(k) for k in DEPTH_COLUMNS[:6]}, GAMMA: g, SMOOTH: s,
                         "relative_gap": (g - s) / g if g > 0 else np.nan,
                         "fitted_epochs": int(inside.sum()),
                         "smoothed_decreases": int(fell[inside].sum()),
                         "largest_decrease": float(drop[inside].max()) if inside.any()
                         else np.nan})
            previous = epoch
    out = pd.DataFrame(rows, columns=list(DEPTH_COLUMNS))
    for col in ("epoch", "grad_evals", "fitted_epochs", "smoothed_decreases"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out


def _figure_lines(ax: Axes, points: pd.DataFrame, columns: list[str], first_color: int,
                  style: tuple[str, str] = ("-", "o"), run: str | None = None) -> None:
    # One line per figure through the checkpoints that have it, with its interval as a band;
    # ``style`` (line style, marker) and ``run`` (in the label) tell the runs of one axis apart.
    ls, marker = style
    for i, col in enumerate(columns):
        rows = points[points[col].notna()]
        at = -rows["log10_loss"].astype("float64")
        color = f"C{(i + first_color) % 10}"
        ax.plot(at, rows[col].astype("float64"), ls=ls, marker=marker, ms=4, color=color,
                label=col if run is None else f"{col} · {run}")
        band(ax, at, rows, col, color)


def depth_plot(frame: pd.DataFrame, figures: FigureIndex, table: pd.DataFrame,
               out_png: str | Path, title: str) -> Path | None:
    """Margins, their gap and robustness of one deep run against −log10 𝓛.

    Args:
        frame: Leaderboard rows of the run (every evaluation setting).
        figures: The key of each robustness column of the leaderboard frame.
        table: Its metric rows (one per accepted epoch).
        out_png: Where to write the PNG.
        title: The figure's title.

    Returns:
        The PNG, or None (nothing written) without fitted epochs.
    """
    logged = _fitted_epochs(table)
    if logged.empty:
        return None
    depth = -logged["log10_loss"].astype("float64")
    g = logged[GAMMA].astype("float64")
    s = logged[SMOOTH].astype("float64")
    # Rows of every setting: the splits of one evaluation can be separate rows (a split
    # with fewer points than asked has its own n); each figure is read where it is present.
    points = frame[fitted(frame)].sort_values("epoch", kind="stable")
    fig = Figure(figsize=(12, 8.4))
    (ax_m, ax_gap), (ax_acc, ax_dist) = fig.subplots(2, 2)
    ax_m.plot(depth, g, lw=1.3, label=r"normalized margin $\bar\gamma$")
    ax_m.plot(depth, s, lw=1.3, ls="--", label=r"smoothed margin $\tilde\gamma$")
    marks = points.drop_duplicates("checkpoint")
    ax_m.plot(-marks["log10_loss"].astype("float64"), marks[GAMMA].astype("float64"), "o",
              color="C0", ms=4)
    ax_m.set_ylabel("margin")
    ax_m.set_title(r"$\bar\gamma$ and $\tilde\gamma$ (dots: evaluated checkpoints)",
                   fontsize=10)
    ax_m.legend(fontsize=8)
    gap = ((g - s) / g).where(g > 0)
    keep = gap > 0
    ax_gap.plot(depth[keep], gap[keep], lw=1.3, color="C2")
    if keep.any():
        ax_gap.set_yscale("log")
    ax_gap.set_ylabel(r"$(\bar\gamma - \tilde\gamma) / \bar\gamma$")
    ax_gap.set_title("relative gap between the margins", fontsize=10)
    present = [c for c in points.columns if points[c].notna().any()]
    _figure_lines(ax_acc, points, figures.headline(present), 0)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("AutoAttack robust accuracy")
    ax_acc.set_title("robust accuracy (bands: 95 % Wilson)", fontsize=10)
    _figure_lines(ax_dist, points, figures.select(present, [MEDIAN]), 4)
    ax_dist.set_ylabel("median minimal adversarial distance")
    ax_dist.set_title("median distances (bands: 95 % bootstrap)", fontsize=10)
    for ax in (ax_acc, ax_dist):
        ax.set_xlim(ax_m.get_xlim())
    for ax in (ax_m, ax_gap, ax_acc, ax_dist):
        ax.set_xlabel(r"decades of training loss, $-\log_{10}\mathcal{L}$")
        ax.grid(alpha=0.3)
    for ax in (ax_acc, ax_dist):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{title}: along the trajectory, against the depth of the training loss")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save(fig, out_png)


def depth_seeds_plot(frame: pd.DataFrame, figures: FigureIndex,
                     metrics: Mapping[str, pd.DataFrame], runs: list[str], out_png: str | Path,
                     title: str) -> Path | None:
    """Several deep runs of one configuration (its seeds) drawn over each other.

    Three panels against −log10 𝓛: γ̄ along every logged epoch of each run; the
    AutoAttack headline accuracies at each run's checkpoints; the median distances. Colour
    is the figure (split and norm), the line style and marker the run, bands the intervals:
    where two seeds' bands overlap, the seed-to-seed spread is inside the evaluation's own.

    Args:
        frame: Leaderboard rows of the runs (every evaluation setting).
        figures: The key of each robustness column of the leaderboard frame.
        metrics: Per run, its metric rows (one per accepted epoch).
        runs: The runs to draw, in order (their labels).
        out_png: Where to write the PNG.
        title: The figure's title.

    Returns:
        The PNG, or None (nothing written) when fewer than two runs have fitted epochs.
    """
    logged = {run: _fitted_epochs(metrics[run]) for run in runs if run in metrics}
    logged = {run: rows for run, rows in logged.items() if not rows.empty}
    if len(logged) < 2:
        return None
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    fig = Figure(figsize=(15, 4.8))
    ax_m, ax_acc, ax_dist = fig.subplots(1, 3)
    for i, (run, rows) in enumerate(logged.items()):
        ls, marker = styles[i % len(styles)]
        ax_m.plot(-rows["log10_loss"].astype("float64"), rows[GAMMA].astype("float64"),
                  ls=ls, lw=1.3, color=f"C{i}", label=run)
        points = frame[(frame["run"] == run) & fitted(frame)].sort_values("epoch",
                                                                          kind="stable")
        present = [c for c in points.columns if points[c].notna().any()]
        _figure_lines(ax_acc, points, figures.headline(present), 0, (ls, marker), run)
        _figure_lines(ax_dist, points, figures.select(present, [MEDIAN]), 4, (ls, marker),
                      run)
    ax_m.set_ylabel(r"normalized margin $\bar\gamma$")
    ax_m.set_title(r"$\bar\gamma$ per seed", fontsize=10)
    # Not [0, 1] as on the one-run figure: the spread between seeds is the point here.
    ax_acc.set_ylabel("AutoAttack robust accuracy")
    ax_acc.set_title("robust accuracy (bands: 95 % Wilson)", fontsize=10)
    ax_dist.set_ylabel("median minimal adversarial distance")
    ax_dist.set_title("median distances (bands: 95 % bootstrap; log scale)", fontsize=10)
    if ax_dist.has_data():
        ax_dist.set_yscale("log")  # L2 and Linf distances differ by about a factor 5
    for ax in (ax_m, ax_acc, ax_dist):
        ax.set_xlabel(r"decades of training loss, $-\log_{10}\mathcal{L}$")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: {len(logged)} seeds against the depth of the training loss")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save(fig, out_png)


def depth_section(table: pd.DataFrame, plots: list[str]) -> Section | None:
    """The board's section on deep trajectories, or None when no run is deep.

    Args:
        table: :func:`depth_table`.
        plots: The depth figures, relative to the board.
    """
    if table.empty:
        return None
    falls = int(table["smoothed_decreases"].sum())
    epochs = int(table["fitted_epochs"].sum())
    note = ("Runs whose summed training loss reached 10^"
            f"{DEEP_LOG10_LOSS:g} or below, read against the depth −log10 𝓛. Per "
            "checkpoint: γ̄, γ̃, the relative gap (γ̄ − γ̃) / γ̄, and of the accepted epochs "
            "with 𝓛 < log 2 since the previous checkpoint (`fitted_epochs`), those that "
            f"lowered γ̃ (`smoothed_decreases`): {falls:,} of {epochs:,} here, the largest by "
            f"{table['largest_decrease'].max():.2g} of γ̃ (`largest_decrease`). Every column "
            "is in `depth.csv`; robustness at these checkpoints is in the tables above.")
    return Section("Deep trajectories", [Table("", table, "depth")], plots=plots, note=note)
