"""The leaderboard's column groups: identity, settings, trajectory, counts, intervals.

The lowest layer of :mod:`marginrobust.report`: plain constants and functions shared by the
tables, the plots, the rendering and ``compare``. The robustness columns are named, and
known by their keys, in :mod:`marginrobust.report.figures`; budgets are written by
:func:`eps_labels`. A figure with a 95 % interval has it in ``{column}_lo`` and
``{column}_hi`` right after it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import pandas as pd

from ..io import SPLITS

IDENTITY = ("run", "run_dir", "dataset", "model", "bias", "width", "schedule", "precision",
            "checkpoint")
# The settings that decided a row's figures: points per split, point seed, and the id of the
# attack options (see the settings table). A row never holds figures of two settings.
SETTINGS = ("n", "seed", "settings")
TRAJECTORY = ("epoch", "step", "grad_evals", "train_wall_s", "log10_loss", "train_acc",
              "test_acc", "rho", "homogeneity_order", "normalized_margin", "product_margin",
              "smoothed_margin")
# metrics.jsonl names the trajectory's wall time differently from the records.
METRIC_NAMES = {"train_wall_s": "wall_s"}
SKIPPED = "skipped"
STRING_COLUMNS = frozenset(IDENTITY) - {"width"} | {"settings", SKIPPED}
# Counts: written as integers (pandas "Int64": missing values stay empty, never 7.0).
INTEGER_COLUMNS = frozenset({"epoch", "step", "grad_evals", "homogeneity_order", "n_flags", "n",
                             "seed", "n_checkpoints", "n_fitted", "n_seeds", "n_obs", "n_runs",
                             "position", "train_seed", "grad_evals_min", "grad_evals_max"})
LO, HI = "_lo", "_hi"
# A checkpoint has fitted its training data when every point is classified correctly, or
# when the summed loss is below log 2 (then every point's loss is, so every point is).
FITTED_LOG10_LOSS = math.log10(math.log(2))
SPLIT_ORDER = SPLITS


def eps_labels(values: Iterable[float]) -> dict[float, str]:
    """Compact, distinct names of budgets: 4 significant digits, more only where needed.

    Args:
        values: The budgets.

    Returns:
        ``{eps: name}``, e.g. ``{0.5: "0.5", 1.0: "1", 8/255: "0.03137"}``.
    """
    unique = sorted({float(v) for v in values})
    # 17 significant digits tell every pair of doubles apart, so a precision is always found.
    digits = next(d for d in range(4, 18) if len({f"{v:.{d}g}" for v in unique}) == len(unique))
    return {v: f"{v:.{digits}g}" for v in unique}


def is_bound(column: str) -> bool:
    """Whether a column is the low or high end of another column's interval."""
    return column.endswith((LO, HI))


def bounds(column: str) -> tuple[str, str]:
    """The names of a column's interval ends: ``(column_lo, column_hi)``."""
    return f"{column}{LO}", f"{column}{HI}"


def fitted(frame: pd.DataFrame) -> pd.Series:
    """Which rows are fitted checkpoints: training accuracy 1, or summed loss below log 2.

    Args:
        frame: Rows with ``train_acc`` and ``log10_loss`` (either may be missing).
    """
    acc = frame["train_acc"].astype("float64") if "train_acc" in frame else None
    loss = frame["log10_loss"].astype("float64") if "log10_loss" in frame else None
    out = pd.Series(False, index=frame.index)
    if acc is not None:
        out |= (acc == 1.0).fillna(False)
    if loss is not None:
        out |= (loss < FITTED_LOG10_LOSS).fillna(False)
    return out


def split_rank(split: str) -> tuple[int, str]:
    """Sort key of a split name: test points first, then train, then any other by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def pair_order(pair: tuple[str, str]) -> tuple[int, str, str]:
    """Sort key of (split, norm): test points first.

    Args:
        pair: (split, norm).
    """
    split, norm = pair
    return (*split_rank(split), norm)


def slug(text: str) -> str:
    """``text`` reduced to characters safe in a file name (``npz:/a/b.npz`` → ``npz-a-b.npz``).

    Args:
        text: Any label (dataset, model, run name).
    """
    return re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-") or "x"
