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

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .columns import bounds, fitted, slug
from .figures import FigureIndex
from .plot_base import (
    BAND_ALPHA,
    band,
    colors_of,
    duration_axis,
    epoch_text,
    group_title,
    log_if_positive,
    panel_grid,
    save,
)
from .seeds import seeds_plot
from .series import DistanceTable, row_distances, series
from .stats import wilson_bounds

# (column prefix, legend label, line style, marker) of the accuracies drawn along training.
ACCURACY_MEASURES = (("aa", "AutoAttack", "-", "o"),
                     ("worst", "worst case over attacks", "--", "s"),
                     ("cert", "certified", ":", "^"))
MARGINS = (("normalized_margin", "normalized margin γ̄"), ("smoothed_margin", "smoothed margin γ̃"))


def margin_plot(frame: pd.DataFrame, metrics: Mapping[str, pd.DataFrame],
                out_png: str | Path, x: str = "epoch", title: str | None = None,
                ) -> Path | None:
    """(a) Normalized and smoothed margin against duration, every epoch of ``metrics.jsonl``.

    One line per run, dots at its checkpoints; log scale where the margin is positive
    (epochs before the data is separated have γ ≤ 0 and are then left out, as the axis says).

    Args:
        frame: Leaderboard rows of the runs to draw.
        metrics: Per run name, its metric rows (one per epoch).
        out_png: Where to write the PNG.
        x: ``epoch`` or ``grad_evals`` (gradient evaluations, on a log axis).
        title: The group's title (default: :func:`group_title`).
    """
    curves = []
    for run, rows in frame.groupby("run", sort=False):
        table = metrics.get(str(run))
        if table is not None and {"epoch", x, *dict(MARGINS)} <= set(table.columns) and (
                table[x].notna().any()):
            curves.append((str(run), rows["epoch"].astype("float64"), table))
    if not curves:
        return None
    colors = {run: f"C{i % 10}" for i, run in enumerate(dict.fromkeys(frame["run"]))}
    fig = Figure(figsize=(12, 4.6))
    for ax, (col, name) in zip(fig.subplots(1, 2), MARGINS):
        hidden = log_if_positive(ax, pd.concat([m[col] for _, _, m in curves]), "y")
        for run, epochs, table in curves:
            y = table[col].where(table[col] > 0) if hidden else table[col]
            keep = duration_axis(ax, x, table[x].astype("float64"))
            xs, y = table[x].astype("float64")[keep], y[keep]
            ax.plot(xs, y, color=colors[run], lw=1.3, label=run)
            at = table["epoch"][keep].isin(epochs)
            ax.plot(xs[at], y[at], "o", color=colors[run], ms=4)
        ax.set_ylabel(name + (" (epochs with γ ≤ 0 not shown)" if hidden else ""))
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title or group_title(frame)}: margins along training (dots: checkpoints)")
    return save(fig, out_png)


def robust_vs_epoch_plot(frame: pd.DataFrame, figures: FigureIndex, split: str, norm: str,
                         out_png: str | Path, x: str = "epoch",
                         title: str | None = None) -> Path | None:
    """(b) AutoAttack, worst-case and certified accuracy against duration, one panel per ε.

    Colour = run (and setting), line style = measure; shaded bands are the 95 % Wilson
    intervals (where the frame has them); the faint line is clean accuracy on the same
    points.

    Args:
        frame: Leaderboard rows.
        figures: The key of each robustness column of the leaderboard frame.
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.
        out_png: Where to write the PNG.
        x: ``epoch`` or ``grad_evals`` (gradient evaluations, on a log axis).
        title: The group's title (default: :func:`group_title`).
    """
    columns = {prefix: figures.eps_columns(frame, prefix, split, norm)
               for prefix, *_ in ACCURACY_MEASURES}
    budgets = sorted({eps for by_eps in columns.values() for eps in by_eps})
    if not budgets or x not in frame or frame[x].isna().all():
        return None
    lines = series(frame)
    colors = colors_of(lines)
    fig, axes = panel_grid(len(budgets))
    for ax, eps in zip(axes, budgets):
        for label, rows in lines:
            rows = rows[duration_axis(ax, x, rows[x].astype("float64"))]
            xs = rows[x].astype("float64")
            if f"clean_{split}" in rows:
                ax.plot(xs, rows[f"clean_{split}"], color=colors[label], alpha=0.3, lw=1)
            for prefix, _, style, marker in ACCURACY_MEASURES:
                if eps in columns[prefix]:
                    col = columns[prefix][eps]
                    ax.plot(xs, rows[col], ls=style, marker=marker, color=colors[label], ms=4,
                            lw=1.4)
                    band(ax, xs, rows, col, colors[label])
        ax.set_title(f"ε = {eps:.4g}", fontsize=10)
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
               bbox_to_anchor=(0.5, -0.11))
    fig.suptitle(f"{title or group_title(frame)} — {split} points, {norm}: accuracy along "
                 "training (bands: 95 % Wilson intervals)")
    return save(fig, out_png)


def _margin_line(ax: Axes, rows: pd.DataFrame, col: str, color: str, label: str) -> None:
    # A run's checkpoints in epoch order; labelling the ends shows which way training went.
    if rows.empty:
        return
    ax.plot(rows["normalized_margin"], rows[col], "-o", color=color, ms=4, label=label)
    lo, hi = bounds(col)
    if lo in rows and hi in rows and rows[lo].notna().any():
        y = rows[col].astype("float64")
        ax.errorbar(rows["normalized_margin"], y, yerr=[y - rows[lo].astype("float64"),
                                                         rows[hi].astype("float64") - y],
                    fmt="none", ecolor=color, alpha=0.5, lw=1, capsize=2)
    for _, row in rows.iloc[[0, -1]].iterrows():
        ax.annotate(f"ep {epoch_text(row['epoch'])}", (row["normalized_margin"], row[col]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")


def robust_vs_margin_plot(frame: pd.DataFrame, figures: FigureIndex, split: str, norm: str,
                          out_png: str | Path, title: str | None = None) -> Path | None:
    """(c) Robust accuracy against normalized margin across checkpoints, one panel per ε.

    AutoAttack accuracy where it was run, else the worst case over the attacks. Each run
    (and setting) is a line through its checkpoints in epoch order; the ends are labelled.

    Args:
        frame: Leaderboard rows.
        figures: The key of each robustness column of the leaderboard frame.
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.
        out_png: Where to write the PNG.
        title: The group's title (default: :func:`group_title`).
    """
    measure, by_eps = "AutoAttack", figures.eps_columns(frame, "aa", split, norm)
    if not by_eps:
        measure, by_eps = "worst-case", figures.eps_columns(frame, "worst", split, norm)
    if not by_eps or frame["normalized_margin"].isna().all():
        return None
    lines = series(frame)
    colors = colors_of(lines)
    fig, axes = panel_grid(len(by_eps))
    for ax, (eps, col) in zip(axes, by_eps.items()):
        hidden = log_if_positive(ax, frame["normalized_margin"], "x")
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
    fig.suptitle(f"{title or group_title(frame)} — {split} points, {norm}: robust accuracy vs "
                 "normalized margin across checkpoints (bars: 95 % Wilson intervals)")
    return save(fig, out_png)


def draw_robust_vs_eps(ax: Axes, curves: Sequence[tuple[str, np.ndarray]],
                       marks: Sequence[float] = ()) -> None:
    """Robust accuracy ``mean(distance > ε)`` against ε on ``ax``, one line per curve,
    each with its 95 % Wilson band over the curve's points.

    Args:
        ax: Axes to draw on.
        curves: ``(label, per-point distances)`` pairs.
        marks: Evaluated budgets, drawn as faint vertical lines.
    """
    finite = [d[np.isfinite(d)] for _, d in curves]
    top = max([float(f.max()) for f in finite if f.size] + list(marks) + [0.0])
    grid = np.linspace(0.0, 1.05 * top if top > 0 else 1.0, 400)
    for label, d in curves:
        acc = (d[None, :] > grid[:, None]).mean(axis=1)
        (line,) = ax.plot(grid, acc, label=label, lw=1.6)
        if d.size:
            ax.fill_between(grid, *wilson_bounds(acc, d.size), color=line.get_color(),
                            alpha=BAND_ALPHA, lw=0)
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
                      fitted_only: bool = False,
                      ) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Distance curves of the first and last checkpoint of each line that have them.

    A line is a run, or a run and setting where it has several (:func:`series`).

    Args:
        frame: Leaderboard rows.
        distances: Per (run, checkpoint), the per-point distances per (split, norm, n, seed).
        split: ``test`` or ``train`` points.
        norm: ``L2`` or ``Linf``.
        fitted_only: Start from the first fitted checkpoint (training accuracy 1 or summed
            loss below log 2; labelled so) rather than the first, which may be the random
            initialisation; a line without a fitted checkpoint keeps its first.

    Returns:
        (``(label, distances)`` pairs, names of the attacks the distances come from).
    """
    curves, attacks = [], set()
    for label, rows in series(frame):
        rows = rows.assign(_fitted=fitted(rows))
        have = [(row, found) for row in rows.to_dict("records")
                if (found := row_distances(distances, str(row["run"]), row, split, norm))]
        start = next((k for k, (row, _) in enumerate(have) if row["_fitted"]), 0) \
            if fitted_only else 0
        for k, (row, found) in [*list(enumerate(have))[start:start + 1],
                                *list(enumerate(have))[start + 1:][-1:]]:
            note = " (first fitted)" if fitted_only and k == start and row["_fitted"] else ""
            curves.append((f"{label} @ epoch {epoch_text(row['epoch'])}{note}", found.values))
            attacks.update(found.attacks)
    return curves, sorted(attacks)


def eps_marks(frame: pd.DataFrame, figures: FigureIndex, split: str, norm: str) -> list[float]:
    """The budgets evaluated for (split, norm) in ``frame``.

    Args:
        frame: Leaderboard rows.
        figures: The key of each robustness column of the leaderboard frame.
        split: ``test`` or ``train``.
        norm: ``L2`` or ``Linf``.
    """
    return sorted({eps for prefix, *_ in ACCURACY_MEASURES
                   for eps in figures.eps_columns(frame, prefix, split, norm)})


def write_plots(frame: pd.DataFrame, figures: FigureIndex, metrics: Mapping[str, pd.DataFrame],
                distances: DistanceTable, out_dir: str | Path,
                titles: Mapping[tuple[str, str], str] | None = None,
                seeds: pd.DataFrame | None = None) -> dict[tuple[str, str], list[Path]]:
    """Every figure of every (dataset, model) group of a leaderboard.

    Durations are drawn against epochs and, where the runs logged them, against gradient
    evaluations (``*_vs_grad_evals*``). Robust-vs-ε curves compare each line's first
    fitted checkpoint with its last.

    Args:
        frame: A leaderboard frame.
        figures: The key of each robustness column of the leaderboard frame.
        metrics: Per run name, its metric rows.
        distances: Per (run, checkpoint), the per-point distances per (split, norm).
        out_dir: Folder for the PNGs (named ``{dataset}_{model}_{figure}[_{split}_{norm}].png``).
        titles: Per (dataset, model), the title the figures carry (default ``dataset ·
            model``; see :func:`marginrobust.report.labels.group_titles`).
        seeds: The seeds table (:func:`marginrobust.report.seeds.seed_table`): a figure of
            the means across seeds where a configuration has several.

    Returns:
        The written PNGs per (dataset, model), in the order they should be shown.
    """
    out_dir = Path(out_dir)
    written: dict[tuple[str, str], list[Path]] = {}
    for (dataset, model), rows in frame.groupby(["dataset", "model"], sort=False):
        title = (titles or {}).get((str(dataset), str(model))) or group_title(rows)
        stem = out_dir / f"{slug(dataset)}_{slug(model)}"
        paths = [margin_plot(rows, metrics, f"{stem}_margins.png", title=title),
                 margin_plot(rows, metrics, f"{stem}_margins_vs_grad_evals.png", "grad_evals",
                             title)]
        for split, norm in figures.split_norms(rows):
            tag = f"{split}_{norm}"
            curves, attacks = first_last_curves(rows, distances, split, norm, fitted_only=True)
            which = ("first fitted and last checkpoints"
                     if any("(first fitted)" in label for label, _ in curves)
                     else "first and last checkpoints; none fitted")
            paths += [
                robust_vs_epoch_plot(rows, figures, split, norm,
                                     f"{stem}_robust_vs_epoch_{tag}.png", title=title),
                robust_vs_epoch_plot(rows, figures, split, norm,
                                     f"{stem}_robust_vs_grad_evals_{tag}.png", "grad_evals",
                                     title),
                robust_vs_margin_plot(rows, figures, split, norm,
                                      f"{stem}_robust_vs_margin_{tag}.png", title),
                robust_vs_eps_plot(
                    curves, f"{title} — {split} points, {norm}: robust accuracy vs ε"
                    f"\n({which}; distances from {', '.join(attacks)}; bands: 95 % Wilson)",
                    f"{stem}_robust_vs_eps_{tag}.png", eps_marks(rows, figures, split, norm))]
        if seeds is not None and not seeds.empty:
            mine = seeds[(seeds["dataset"] == dataset) & (seeds["model"] == model)]
            paths.append(seeds_plot(mine, figures, f"{stem}_seeds.png", title))
        written[(str(dataset), str(model))] = [p for p in paths if p is not None]
    return written
