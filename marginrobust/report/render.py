"""The leaderboard as documents: Markdown (``README.md``) and one self-contained HTML page.

Rendering receives finished frames and figure paths and returns text; it reads no run
folder. The page's style sheet, sorting script and frame are package data files
(``static/style.css``, ``static/sort.js``, ``static/page.html``), inlined so that the page
needs nothing else.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from .columns import MIN_RADIUS, SETTINGS, SKIPPED, SPLIT_ORDER, STRING_COLUMNS, split_columns
from .formatting import format_value, is_missing

TRAJECTORY_VIEW = ("run", "epoch", "log10_loss", "train_acc", "test_acc", "rho",
                   "normalized_margin", "smoothed_margin", MIN_RADIUS, "n_flags")
# Measures shown in the compact robustness tables (every column is in the CSV).
SHOWN_MEASURES = ("aa", "cert", "median_dist")
TITLE = "marginrobust leaderboard"
INTRO = (
    "One row per (run, checkpoint, evaluation setting). Robustness columns are named "
    "`{measure}_{split}_{norm}_{eps}`: `aa` = AutoAttack robust accuracy, `cert` = certified "
    "accuracy, `worst` = worst case over all attacks; `median_dist_{split}_{norm}` = median "
    "minimal adversarial distance; `clean_{split}` = clean accuracy on the evaluated points; "
    "`min_certified_radius_train_L2` = smallest Lipschitz-certified L2 radius on training "
    "points; `n_flags` = consistency violations found by the evaluator. `n` = evaluated "
    "points per split, `seed` = the seed that chose them, `settings` = the attack options of "
    "the row's figures (spelled out in the table of evaluation settings); a figure that "
    "could not be computed is an empty cell, its reason in `skipped`. Every column is in "
    "`leaderboard.csv` / `leaderboard.json`; the tables below show a subset.")


@dataclass
class Table:
    """A titled frame; ``name`` is its HTML id."""

    title: str
    frame: pd.DataFrame
    name: str


@dataclass
class Section:
    """A heading with its tables, figures (paths relative to the page) and a note."""

    title: str
    tables: list[Table]
    plots: list[str] = field(default_factory=list)
    note: str = ""


def static_text(name: str) -> str:
    """A package data file of ``marginrobust/report/static`` as text.

    Args:
        name: File name (``style.css``, ``sort.js``, ``page.html``).
    """
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _view(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    keep = [c for c in columns if c in rows and (c in ("run", "epoch") or rows[c].notna().any())]
    return rows[keep].reset_index(drop=True)


def _skipped_note(rows: pd.DataFrame) -> str:
    if SKIPPED not in rows or rows[SKIPPED].isna().all():
        return ""
    found = dict.fromkeys(f"{run}: {text}" for run, text in
                          rows.loc[rows[SKIPPED].notna(), ["run", SKIPPED]].itertuples(index=False))
    return ("Figures that could not be computed are empty cells (not 0): "
            + "; ".join(found) + ".")


def group_sections(frame: pd.DataFrame, plots: Mapping[tuple[str, str], Sequence[Path]],
                   out_dir: Path) -> list[Section]:
    """One section per (dataset, model): trajectory, robustness per split, figures.

    Args:
        frame: A leaderboard frame.
        plots: The PNGs per (dataset, model).
        out_dir: The folder the documents go to (figure paths are made relative to it).
    """
    sections = []
    for i, ((dataset, model), rows) in enumerate(frame.groupby(["dataset", "model"], sort=False)):
        trajectory = list(TRAJECTORY_VIEW)
        if rows.duplicated(["run", "checkpoint"]).any():
            # Several settings per checkpoint: say which row is which.
            trajectory[2:2] = SETTINGS
        tables = [Table("Trajectory", _view(rows, trajectory), f"g{i}-trajectory")]
        for split in [s for s in SPLIT_ORDER if f"clean_{s}" in rows
                      and rows[f"clean_{s}"].notna().any()]:
            robust = split_columns(rows, split, SHOWN_MEASURES)
            # Checkpoints not evaluated would only add rows of dashes.
            evaluated = rows[rows[robust].notna().any(axis=1)]
            tables.append(Table(f"Robustness on {split} points",
                                _view(evaluated, ["run", "epoch", *SETTINGS,
                                                  "normalized_margin", *robust]),
                                f"g{i}-{split}"))
        images = [Path(p).relative_to(out_dir).as_posix() for p in plots.get((dataset, model), [])]
        note = "" if len(tables) > 1 else "No checkpoint of these runs is evaluated yet."
        note = " ".join(t for t in (note, _skipped_note(rows)) if t)
        sections.append(Section(f"{dataset} · {model}", tables, images, note))
    return sections


def settings_section(settings: pd.DataFrame) -> Section:
    """The settings table: per ``settings`` id, each method's options.

    Args:
        settings: The settings table (``settings, method, config``).
    """
    return Section("Evaluation settings", [Table("", settings, "settings")], note=(
        "The attack options behind each `settings` id of the tables above, per method, as "
        "the evaluator recorded them (`config`); the number of points `n` and their `seed` "
        "are columns of their own."))


def links_section(links: pd.DataFrame) -> Section:
    """The link table with its explanation.

    Args:
        links: :func:`marginrobust.report.links.link_statistics`.
    """
    view = _view(links.drop(columns=["dataset", "model"]), links.columns)
    return Section("Margin–robustness link", [Table("", view, "links")], note=(
        "Spearman rank correlation, per run and evaluation setting, between the normalized "
        "margin and each robustness column across checkpoints (`spearman`), and across the "
        "checkpoints with training accuracy 1 only (`spearman_fitted`, where the margin "
        "theory applies). Empty with fewer than 3 checkpoints or a constant column; with few "
        "checkpoints even ±1 is weak evidence."))


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_"
    shown = pd.DataFrame({c: [format_value(c, v) for v in frame[c]] for c in frame.columns})
    # Cells are pre-formatted strings, so alignment is given rather than guessed.
    align = ["left" if c in STRING_COLUMNS or c in ("column", "method", "config") else "right"
             for c in frame.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def markdown(sections: Sequence[Section], n_runs: int, notes: str = "") -> str:
    """``README.md``: the introduction, hand-written notes, then every section.

    Args:
        sections: The sections, in order.
        n_runs: Number of runs (said in the first line).
        notes: Text placed after the introduction (a hand-written ``NOTES.md``).
    """
    lines = ["# Leaderboard", "", f"{n_runs} run(s). {INTRO}", ""]
    lines += [notes.strip(), ""] if notes.strip() else []
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [section.note, ""] if section.note else []
        for table in section.tables:
            lines += ([f"### {table.title}", ""] if table.title else [])
            lines += [_markdown_table(table.frame), ""]
        lines += ["### Figures", ""] if section.plots else []
        lines += [f"![{Path(p).stem}]({p})" + "\n" for p in section.plots]
    return "\n".join(lines).rstrip() + "\n"


def _html_cell(column: str, value: Any) -> str:
    text = html.escape(format_value(column, value))
    if is_missing(value):
        return f'<td class="na">{text}</td>'
    if isinstance(value, str):
        return f"<td>{text}</td>"
    # The raw number rides along for sorting and for machines reading the page.
    number = float(value)
    raw = repr(number) if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")
    return f'<td class="num" data-value="{raw}">{text}</td>'


def _html_table(table: Table) -> str:
    head = "".join(f'<th data-column="{html.escape(c)}" title="click to sort">'
                   f"{html.escape(c)}</th>" for c in table.frame.columns)
    body = "\n".join("<tr>" + "".join(_html_cell(c, v) for c, v in row.items()) + "</tr>"
                     for row in table.frame.to_dict("records"))
    title = f"<h3>{html.escape(table.title)}</h3>\n" if table.title else ""
    return (f'{title}<div class="scroll"><table class="sortable" id="{table.name}">'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>")


def _inline_code(text: str) -> str:
    # The intro and notes are written with Markdown backticks; the page shows them as code.
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def html_page(sections: Sequence[Section], n_runs: int) -> str:
    """``index.html``: the same sections, self-contained, sortable by clicking a header.

    Args:
        sections: The sections, in order.
        n_runs: Number of runs.
    """
    parts = ["<h1>Leaderboard</h1>", f"<p>{n_runs} run(s). {_inline_code(INTRO)} "
             "Click a column header to sort.</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p>{_inline_code(section.note)}</p>")
        parts += [_html_table(t) for t in section.tables]
        parts += ["<h3>Figures</h3>"] if section.plots else []
        parts += [f'<img src="{html.escape(p)}" alt="{html.escape(Path(p).stem)}">'
                  for p in section.plots]
    return Template(static_text("page.html")).substitute(
        title=html.escape(TITLE), style=static_text("style.css"), body="\n".join(parts),
        script=static_text("sort.js"))
