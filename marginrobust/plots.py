"""Moved to :mod:`marginrobust.report.plots`; this module only re-exports its names.

The figures now receive their data (metric trajectories, per-point distances) instead of
reading run folders; :mod:`marginrobust.report.loader` reads them.
"""

from .report.columns import SPLIT_ORDER, eps_columns, pair_order, slug, split_norms
from .report.loader import load_distances
from .report.plots import (
    ACCURACY_MEASURES,
    DPI,
    MARGINS,
    draw_robust_vs_eps,
    eps_marks,
    first_last_curves,
    group_title,
    margin_plot,
    panel_grid,
    robust_vs_epoch_plot,
    robust_vs_eps_plot,
    robust_vs_margin_plot,
    save,
    write_plots,
)

__all__ = ["ACCURACY_MEASURES", "DPI", "MARGINS", "SPLIT_ORDER", "draw_robust_vs_eps",
           "eps_columns", "eps_marks", "first_last_curves", "group_title", "load_distances",
           "margin_plot", "pair_order", "panel_grid", "robust_vs_epoch_plot",
           "robust_vs_eps_plot", "robust_vs_margin_plot", "save", "slug", "split_norms",
           "write_plots"]
