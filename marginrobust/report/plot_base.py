"""What every figure of the report shares: saving, panel grids, titles, axes and bands.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg backend, no pyplot):
no global backend is switched and no figure outlives its function. PNGs are written
atomically with the umask's permissions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..io import atomic_write
from .columns import bounds

DPI = 110
# Duration axes: epochs, or gradient evaluations (log scale: they span decades).
X_LABELS = {"epoch": "epoch", "grad_evals": "gradient evaluations"}
BAND_ALPHA = 0.13


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


def epoch_text(value: object) -> str:
    return "?" if value is None or pd.isna(value) else f"{float(value):.0f}"


def colors_of(lines: Sequence[tuple[str, pd.DataFrame]]) -> dict[str, str]:
    # One colour per line, the same in every figure of a group.
    return {label: f"C{i % 10}" for i, (label, _) in enumerate(lines)}


def log_if_positive(ax: Axes, values: pd.Series, axis: str) -> bool:
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


def duration_axis(ax: Axes, x: str, values: pd.Series) -> pd.Series:
    """Label the duration axis; gradient evaluations on a log scale (0 then hidden)."""
    ax.set_xlabel(X_LABELS.get(x, x))
    if x == "grad_evals" and (values > 0).any():
        ax.set_xscale("log")
        return values > 0
    return pd.Series(True, index=values.index)


def band(ax: Axes, xs: pd.Series, rows: pd.DataFrame, col: str, color: str) -> None:
    """The interval of ``col`` as a shaded band, where the rows have one."""
    lo, hi = bounds(col)
    if lo in rows and hi in rows and rows[lo].notna().any():
        ax.fill_between(xs, rows[lo].astype("float64"), rows[hi].astype("float64"),
                        color=color, alpha=BAND_ALPHA, lw=0)
