"""Figures of a leaderboard (PNG): how margins and robustness move along training.

Every function here receives its data — leaderboard rows (usually those of one (dataset,
model) group), metric trajectories, per-point distances — and reads no run folder itself
(:mod:`marginrobust.report.loader` does). A plotting function writes one PNG and returns its
path, or returns None without writing anything when the data it needs is absent (a run not
yet evaluated, no minimal-norm attack run...).

A run evaluated with several settings (``n``, ``seed``, ``settings``) draws one line per
setting, labelled with it (:mod:`marginrobust.report.series`); lines never join figures of
two settings.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, which render with the Agg
backend, rather than through ``pyplot``: no global backend is switched, no display is needed,
and no figure outlives its function. PNGs are written atomically with the umask's
permissions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..io import atomic_write
from .columns import eps_columns, slug, split_norms
from .series import DistanceTable, row_distances, series

# (column prefix, legend label, line style, marker) of the accuracies drawn along training.
ACCURACY_MEASURES = (("aa", "AutoAttack", "-", "o"),
                     ("worst", "worst case over attacks", "--", "s"),
                     ("cert", "certified", ":", "^"))
MARGINS = (("normalized_margin", "normalized margin γ̄"), ("smoothed_margin", "smoothed margin γ̃"))
DPI = 110


def group_title(frame: pd.DataFrame) -> str:
    """``dataset · model`` of the rows (several of each are joined with commas).

    Args:
        frame: Leaderboard rows.
    """
    def names(col: str) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(frame[col].dropna()))

    return f"{names('dataset')} · {names('model')}"


def save(fig: Figure, out_png: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating the folder, atomically) and return the path.

    Args:
        fig: The figure.
        out_png: Destination.
    """
    path = Path(out_png)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
    return path


def _epoch_text(value: object) -> str:
    return "?" if value is None or pd.isna(value) else f"{float(value):.0f}"


def _colors(lines: Sequence[tuple[str, pd.DataFrame]]) -> dict[str, str]:
    # One colour per line, the same in every figure of a group.
    return {label: f"C{i % 10}" for i, (label, _) in enumerate(lines)}


def _log_if_positive(ax: Axes, values: pd.Series, axis: str) -> bool:
    """Log scale when any value is positive; True when non-positive values must be hidden."""
    if not (values > 0).any():
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    return bool((values <= 0).any())


def panel_grid(n: int, max_cols: int = 3, width: float = 4.6,
               height: float = 3.8) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels, at most ``max_cols`` per row.

    Args:
        n: Number of panels.
        max_cols: Panels per row.
        width, height: Size of one panel in inches.
    """
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def margin_plot(frame: pd.DataFrame, metrics: Mapping[str, pd.DataFrame],
                out_png: str | Path) -> Path | None:
    """(a) Normalized and smoothed margin against epoch, every epoch of ``metrics.jsonl``.

    One line per run, dots at its checkpoints; log scale where the margin is positive
    (epochs before the data is separated have γ ≤ 0 and are then left out, as the axis says).

    Args:
        frame: Leaderboard rows of the runs to draw.
        metrics: Per run name, its metric rows (one per epoch).
        out_png: Where to write the PNG.
    """
    curves = []
    for run, rows in frame.groupby("run", sort=False):
        table = metrics.get(str(run))
        if table is not None and {"epoch", *dict(MARGINS)} <= set(table.columns):
            curves.append((str(run), rows["epoch"].astype("float64"), table))
    if not curves:
        return None
    colors = {run: f"C{i % 10}" for i, run in enumerate(dict.fromkeys(frame["run"]))}
    fig = Figure(figsize=(12, 4.6))
    for ax, (col, name) in zip(fig.subplots(1, 2), MARGINS):
        hidden = _log_if_positive(ax, pd.concat([m[col] for _, _, m in curves]), "y")
        for run, epochs, table in curves:
            y = table[col].where(table[col] > 0) if hidden else table[col]
            ax.plot(table["epoch"], y, color=colors[run], lw=1.3, label=run)
            at = table["epoch"].isin(epochs)
            ax.plot(table["epoch"][at], y[at], "o", color=colors[run], ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name + (" (epochs with γ ≤ 0 not shown)" if hidden else ""))
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{group_title(frame)}: margins along training (dots: checkpoints)")
    return save(fig, out_png)


def robust_vs_epoch_plot(frame: pd.DataFrame, split: str, norm: str,
                         out_png: str | Path) -> Path | None:
    """(b) AutoAttack, worst-case and certified accuracy against epoch, one panel per ε.

    Colour = run (and setting), line style = measure; the faint line is clean accuracy on
    the same points.

    Args:
        frame: Leaderboard rows.
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.
        out_png: Where to write the PNG.
    """
    columns = {prefix: eps_columns(frame, prefix, split, norm) for prefix, *_ in ACCURACY_MEASURES}
    budgets = sorted({eps for by_eps in columns.values() for eps in by_eps})
    if not budgets:
        return None
    lines = series(frame)
    colors = _colors(lines)
    fig, axes = panel_grid(len(budgets))
    for ax, eps in zip(axes, budgets):
        for label, rows in lines:
            if f"clean_{split}" in rows:
                ax.plot(rows["epoch"], rows[f"clean_{split}"], color=colors[label], alpha=0.3,
                        lw=1)
            for prefix, _, style, marker in ACCURACY_MEASURES:
                if eps in columns[prefix]:
                    ax.plot(rows["epoch"], rows[columns[prefix][eps]], ls=style, marker=marker,
                            color=colors[label], ms=4, lw=1.4)
        ax.set_title(f"ε = {eps:.4g}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"accuracy on {split} points")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    shown = [c for by_eps in columns.values() for c in by_eps.values()]
    # A legend entry for a line not drawn misleads.
    handles = [Line2D([], [], color=colors[label], label=label) for label, rows in lines
               if rows[shown].notna().any().any()]
    handles += [Line2D([], [], color="k", ls=s, marker=m, label=label)
                for _, label, s, m in ACCURACY_MEASURES]
    handles.append(Line2D([], [], color="k", alpha=0.3, label="clean"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{group_title(frame)} — {split} points, {norm}: accuracy along training")
    return save(fig, out_png)


def _margin_line(ax: Axes, rows: pd.DataFrame, col: str, color: str, label: str) -> None:
    # A run's checkpoints in epoch order; labelling the ends shows which way training went.
    if rows.empty:
        return
    ax.plot(rows["normalized_margin"], rows[col], "-o", color=color, ms=4, label=label)
    for _, row in rows.iloc[[0, -1]].iterrows():
        ax.annotate(f"ep {_epoch_text(row['epoch'])}", (row["normalized_margin"], row[col]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")


def robust_vs_margin_plot(frame: pd.DataFrame, split: str, norm: str,
                          out_png: str | Path) -> Path | None:
    """(c) Robust accuracy against normalized margin across checkpoints, one panel per ε.

    AutoAttack accuracy where it was run, else the worst case over the attacks. Each run
    (and setting) is a line through its checkpoints in epoch order; the ends are labelled.

    Args:
        frame: Leaderboard rows.
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.
        out_png: Where to write the PNG.
    """
    measure, by_eps = "AutoAttack", eps_columns(frame, "aa", split, norm)
    if not by_eps:
        measure, by_eps = "worst-case", eps_columns(frame, "worst", split, norm)
    if not by_eps or frame["normalized_margin"].isna().all():
        return None
    lines = series(frame)
    colors = _colors(lines)
    fig, axes = panel_grid(len(by_eps))
    for ax, (eps, col) in zip(axes, by_eps.items()):
        hidden = _log_if_positive(ax, frame["normalized_margin"], "x")
        for label, rows in lines:
            shown = rows[col].notna() & (rows["normalized_margin"] > 0 if hidden else True)
            _margin_line(ax, rows[shown], col, colors[label], label)
        ax.set_title(f"ε = {eps:.4g}", fontsize=10)
        ax.set_xlabel("normalized margin γ̄" + (" (γ̄ ≤ 0 not shown)" if hidden else ""))
        # Log-axis tick labels within one decade are wide; slanted they do not overlap.
        ax.tick_params(axis="x", which="both", labelrotation=30, labelsize=8)
        ax.margins(x=0.12)
        ax.set_ylabel(f"{measure} accuracy ({split} points)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{group_title(frame)} — {split} points, {norm}: robust accuracy vs "
                 "normalized margin across checkpoints")
    return save(fig, out_png)


def draw_robust_vs_eps(ax: Axes, curves: Sequence[tuple[str, np.ndarray]],
                       marks: Sequence[float] = ()) -> None:
    """Robust accuracy ``mean(distance > ε)`` against ε on ``ax``, one line per curve.

    Args:
        ax: Axes to draw on.
        curves: ``(label, per-point distances)`` pairs.
        marks: Evaluated budgets, drawn as faint vertical lines.
    """
    finite = [d[np.isfinite(d)] for _, d in curves]
    top = max([float(f.max()) for f in finite if f.size] + list(marks) + [0.0])
    grid = np.linspace(0.0, 1.05 * top if top > 0 else 1.0, 400)
    for label, d in curves:
        ax.plot(grid, (d[None, :] > grid[:, None]).mean(axis=1), label=label, lw=1.6)
    for eps in marks:
        ax.axvline(eps, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("ε")
    ax.set_ylabel("robust accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def robust_vs_eps_plot(curves: Sequence[tuple[str, np.ndarray]], title: str,
                       out_png: str | Path, marks: Sequence[float] = ()) -> Path | None:
    """(d) One figure of robust-accuracy-vs-ε curves.

    Args:
        curves: ``(label, per-point distances)`` pairs.
        title: Figure title (say which dataset, model, split and norm).
        out_png: Where to write the PNG.
        marks: Evaluated budgets, drawn as faint vertical lines.
    """
    if not curves:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    draw_robust_vs_eps(ax, curves, marks)
    ax.set_title(title, fontsize=10)
    return save(fig, out_png)


def first_last_curves(frame: pd.DataFrame, distances: DistanceTable, split: str, norm: str,
                      ) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Distance curves of the first and last checkpoint of each line that have them.

    A line is a run, or a run and setting where it has several (:func:`series`).

    Args:
        frame: Leaderboard rows.
        distances: Per (run, checkpoint), the per-point distances per (split, norm, n, seed).
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.

    Returns:
        (``(label, distances)`` pairs, names of the attacks the distances come from).
    """
    curves, attacks = [], set()
    for label, rows in series(frame):
        have = [(row, found) for row in rows.to_dict("records")
                if (found := row_distances(distances, str(row["run"]), row, split, norm))]
        for row, found in have[:1] + have[1:][-1:]:
            curves.append((f"{label} @ epoch {_epoch_text(row['epoch'])}", found.values))
            attacks.update(found.attacks)
    return curves, sorted(attacks)


def eps_marks(frame: pd.DataFrame, split: str, norm: str) -> list[float]:
    """The budgets evaluated for (split, norm) in ``frame``.

    Args:
        frame: Leaderboard rows.
        split: ``test`` or ``train``.
        norm: ``L2`` or ``Linf``.
    """
    return sorted({eps for prefix, *_ in ACCURACY_MEASURES
                   for eps in eps_columns(frame, prefix, split, norm)})


def write_plots(frame: pd.DataFrame, metrics: Mapping[str, pd.DataFrame],
                distances: DistanceTable, out_dir: str | Path,
                ) -> dict[tuple[str, str], list[Path]]:
    """Every figure of every (dataset, model) group of a leaderboard.

    Args:
        frame: A leaderboard frame.
        metrics: Per run name, its metric rows.
        distances: Per (run, checkpoint), the per-point distances per (split, norm).
        out_dir: Folder for the PNGs (named ``{dataset}_{model}_{figure}[_{split}_{norm}].png``).

    Returns:
        The written PNGs per (dataset, model), in the order they should be shown.
    """
    out_dir = Path(out_dir)
    written: dict[tuple[str, str], list[Path]] = {}
    for (dataset, model), rows in frame.groupby(["dataset", "model"], sort=False):
        stem = out_dir / f"{slug(dataset)}_{slug(model)}"
        paths = [margin_plot(rows, metrics, f"{stem}_margins.png")]
        for split, norm in split_norms(rows):
            tag = f"{split}_{norm}"
            curves, attacks = first_last_curves(rows, distances, split, norm)
            paths += [
                robust_vs_epoch_plot(rows, split, norm, f"{stem}_robust_vs_epoch_{tag}.png"),
                robust_vs_margin_plot(rows, split, norm, f"{stem}_robust_vs_margin_{tag}.png"),
                robust_vs_eps_plot(
                    curves, f"{group_title(rows)} — {split} points, {norm}: robust accuracy vs ε"
                    f"\n(first and last checkpoints; distances from {', '.join(attacks)})",
                    f"{stem}_robust_vs_eps_{tag}.png", eps_marks(rows, split, norm))]
        written[(str(dataset), str(model))] = [p for p in paths if p is not None]
    return written
