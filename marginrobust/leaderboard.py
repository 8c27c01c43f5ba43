"""Moved to :mod:`marginrobust.report`; this module only re-exports its names.

Kept so that code importing ``marginrobust.leaderboard`` keeps working; import from
``marginrobust.report`` (``.tables``, ``.links``, ``.board``, ``.formatting``) instead.
"""

from .report.board import PLOTS_DIR, portable_run_dir, write_leaderboard
from .report.columns import (
    ACCURACY_PREFIXES,
    IDENTITY,
    INTEGER_COLUMNS,
    LINK_PREFIXES,
    METRIC_NAMES,
    MIN_RADIUS,
    STRING_COLUMNS,
    TRAJECTORY,
    eps_labels,
    robustness_columns,
)
from .report.formatting import format_value, json_records, json_value
from .report.links import LINK_COLUMNS, MIN_LINK_POINTS, link_statistics, spearman
from .report.render import INTRO, TRAJECTORY_VIEW
from .report.tables import leaderboard_frame

__all__ = ["ACCURACY_PREFIXES", "IDENTITY", "INTEGER_COLUMNS", "INTRO", "LINK_COLUMNS",
           "LINK_PREFIXES", "METRIC_NAMES", "MIN_LINK_POINTS", "MIN_RADIUS", "PLOTS_DIR",
           "STRING_COLUMNS", "TRAJECTORY", "TRAJECTORY_VIEW", "eps_labels", "format_value",
           "json_records", "json_value", "leaderboard_frame", "link_statistics",
           "portable_run_dir", "robustness_columns", "spearman", "write_leaderboard"]
