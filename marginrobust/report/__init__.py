"""The report: leaderboard tables, link statistics, figures, pages, ``compare`` and publishing.

Layers, each importing only those above it in this list (and ``io``, ``registry``,
``errors``, the evaluation package's store and attack classes and the training package's
readers; never ``cli`` or the pipeline):

* :mod:`.columns` — the column groups (identity, settings, trajectory, counts);
* :mod:`.figures` — each robustness column's typed key, and the index that keeps them;
* :mod:`.formatting` — cells for people and for strict JSON;
* :mod:`.stats` — intervals, tests and fits (Wilson, bootstrap, Spearman, t, OLS);
* :mod:`.methods` — which methods are minimal-norm attacks (asked of the attack registry);
* :mod:`.loader` — everything read from run folders;
* :mod:`.series` — the lines of a figure: per run and evaluation setting;
* :mod:`.intervals` — the 95 % intervals of the leaderboard's figures;
* :mod:`.tables` — records and metrics → the leaderboard frame and the settings table;
* :mod:`.run_groups` — which runs are seeds of one configuration, or differ in the schedule;
* :mod:`.labels` — titles that say what the data are;
* :mod:`.plot_base` — what every figure shares;
* :mod:`.attack_sets`, :mod:`.markup` — what produced each column; notes as HTML;
* :mod:`.render` — Markdown and HTML (style sheet and script are package data files), the
  per-(dataset, model) sections and the settings section;
* topics, each owning its table, its board section and its figure where it has one:
  :mod:`.seeds` (means and intervals across seeds), :mod:`.pooled` (the pooled fit
  separating the margin from training time), :mod:`.correlations` (Spearman's ρ between
  the normalized margin and robustness), :mod:`.matched` (schedules at equal gradient
  evaluations and epochs), :mod:`.depth` (the deep trajectories), :mod:`.certified`
  (certified accuracy and radius per certifier, a long table, and its margin link);
* :mod:`.plots` — the per-(dataset, model) figures;
* :mod:`.guard` — which folders the leaderboard may write into;
* :mod:`.board` — :func:`write_leaderboard`;
* :mod:`.compare` — checkpoints side by side;
* :mod:`.publish` — :func:`publish` and :func:`update_leaderboard`.

The names below are imported on first use, so ``import marginrobust.report`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "leaderboard_frame": "tables", "leaderboard_tables": "tables", "build_tables": "tables",
    "eps_labels": "columns", "Figure": "figures", "FigureIndex": "figures",
    "link_statistics": "correlations", "spearman": "correlations", "load_runs": "loader",
    "load_distances": "loader", "write_plots": "plots", "write_leaderboard": "board",
    "check_board_folder": "guard", "compare": "compare", "format_compare": "compare",
    "compare_plot": "compare", "publish": "publish", "update_leaderboard": "publish",
    "format_value": "formatting", "json_records": "formatting", "json_value": "formatting",
    "minimal_norm_methods": "methods", "with_intervals": "intervals",
    "seed_table": "seeds", "matched_table": "matched", "pooled_table": "pooled",
    "spearman_test": "stats", "wilson_interval": "stats", "run_configs": "run_groups",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
