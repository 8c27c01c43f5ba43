"""The report: leaderboard tables, link statistics, figures, pages, ``compare`` and publishing.

Layers, each importing only those above it in this list (and ``io``, ``results``,
``registry``, ``errors`` and the training package's readers; never ``cli`` or the pipeline):

* :mod:`.columns` — column names and their grammar;
* :mod:`.formatting` — cells for people and for strict JSON;
* :mod:`.methods` — which methods are minimal-norm attacks (asked of the attack registry);
* :mod:`.loader` — everything read from run folders;
* :mod:`.tables` — records and metrics → the leaderboard frame and the settings table;
* :mod:`.links` — Spearman's ρ between the normalized margin and robustness;
* :mod:`.series` — the lines of a figure: per run and evaluation setting;
* :mod:`.plots` — figures, drawn from data they receive;
* :mod:`.render` — Markdown and HTML (style sheet and script are package data files);
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
    "leaderboard_frame": "tables", "build_tables": "tables", "eps_labels": "columns",
    "link_statistics": "links", "spearman": "links", "load_runs": "loader",
    "load_distances": "loader", "write_plots": "plots", "write_leaderboard": "board",
    "check_board_folder": "guard", "compare": "compare", "format_compare": "compare",
    "compare_plot": "compare", "publish": "publish", "update_leaderboard": "publish",
    "format_value": "formatting", "json_records": "formatting", "json_value": "formatting",
    "minimal_norm_methods": "methods",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
