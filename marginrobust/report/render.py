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

from .attack_sets import column_notes, legend
from .columns import SETTINGS, SKIPPED, SPLIT_ORDER, STRING_COLUMNS, bounds, is_bound
from .figures import HALF_EPS, MEDIAN, MIN_RADIUS_FIGURE, RADIUS, FigureIndex
from .formatting import format_value, is_missing
from .markup import markdown_html

TRAJECTORY_VIEW = ("run", "epoch", "grad_evals", "step", "train_wall_s", "log10_loss",
                   "train_acc", "test_acc", "rho", "normalized_margin", "smoothed_margin",
                   MIN_RADIUS_FIGURE.column({}), "n_flags")
# Measures shown in the compact robustness tables (every column is in the CSV); certified
# accuracies only where one is not 0 (the radii say more).
SHOWN_MEASURES = ("clean", "aa", "cert", MEDIAN, RADIUS, HALF_EPS)
TITLE = "marginrobust leaderboard"
INTRO = (
    "One row per (run, checkpoint, evaluation setting). Robustness columns are named "
    "`{measure}_{split}_{norm}_{eps}`: `aa` = AutoAttack robust accuracy, `cert` = certified "
    "accuracy, `worst` = worst case over all attacks; `median_dist_{split}_{norm}` = median "
    "minimal adversarial distance; `median_certified_radius_{split}_{norm}` = median "
    "Lipschitz-certified radius and `half_certified_eps_{split}_{norm}` = the budget below "
    "which that certificate certifies half the points; `clean_{split}` = clean accuracy on "
    "the evaluated points; `min_certified_radius_train_L2` = smallest Lipschitz-certified L2 "
    "radius on training points; `n_flags` = consistency violations found by the evaluator. "
    "Duration: `epoch`, `step` = accepted steps, `grad_evals` = gradient evaluations (those "
    "of rolled-back epochs included), `train_wall_s` = training seconds. `n` = evaluated "
    "points per split, `seed` = the seed that chose them, `settings` = the attack options of "
    "the row's figures (spelled out in the table of evaluation settings); a figure that "
    "could not be computed is an empty cell, its reason in `skipped`. A figure shown as "
    "`0.55 [0.45, 0.65]` carries its 95 % interval (columns `_lo`, `_hi`; how each is "
    "computed is under Statistics). Every column is in `leaderboard.csv` / "
    "`leaderboard.json`; the tables below show a subset.")


@dataclass
class Table:
    """A titled frame; ``name`` is its HTML id; ``notes`` say, per column, what produced it
    (shown under the column's name on the page)."""

    title: str
    frame: pd.DataFrame
    name: str
    notes: dict[str, str] = field(default_factory=dict)


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


def view(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """The columns of ``rows`` that hold any value (``run`` and ``epoch`` always), with
    their interval columns.

    Args:
        rows: A frame.
        columns: The columns wanted, in order.
    """
    keep = []
    for c in columns:
        if c in rows and not is_bound(c) and (c in ("run", "epoch") or rows[c].notna().any()):
            keep += [c, *[b for b in bounds(c) if b in rows]]
    return rows[keep].reset_index(drop=True)


def _nonzero(rows: pd.DataFrame, columns: Iterable[str], figures: FigureIndex) -> list[str]:
    """Columns without the certified accuracies that are 0 (or missing) everywhere."""
    return [c for c in columns if not (figures.measure(c) == "cert"
                                       and rows[c].fillna(0).eq(0).all())]


def _skipped_note(rows: pd.DataFrame) -> str:
    if SKIPPED not in rows or rows[SKIPPED].isna().all():
        return ""
    found = dict.fromkeys(f"{run}: {text}" for run, text in
                          rows.loc[rows[SKIPPED].notna(), ["run", SKIPPED]].itertuples(index=False))
    return ("Figures that could not be computed are empty cells (not 0): "
            + "; ".join(found) + ".")


def group_sections(frame: pd.DataFrame, figures: FigureIndex,
                   plots: Mapping[tuple[str, str], Sequence[Path]],
                   out_dir: Path, texts: Mapping[str, Mapping[str, str]] | None = None,
                   titles: Mapping[tuple[str, str], str] | None = None) -> list[Section]:
    """One section per (dataset, model): trajectory, robustness per split, figures.

    Args:
        frame: A leaderboard frame.
        figures: The key of each of its robustness columns.
        plots: The PNGs per (dataset, model).
        out_dir: The folder the documents go to (figure paths are made relative to it).
        texts: Per settings id, what produced each measure
            (:func:`marginrobust.report.attack_sets.setting_texts`): column notes and a
            legend line.
        titles: Per (dataset, model), the section's title (default ``dataset · model``).
    """
    texts = dict(texts or {})
    sections = []
    for i, ((dataset, model), rows) in enumerate(frame.groupby(["dataset", "model"], sort=False)):
        trajectory = list(TRAJECTORY_VIEW)
        if rows.duplicated(["run", "checkpoint"]).any():
            # Several settings per checkpoint: say which row is which.
            trajectory[2:2] = SETTINGS
        tables = [Table("Trajectory", view(rows, trajectory), f"g{i}-trajectory")]
        for split in [s for s in SPLIT_ORDER if f"clean_{s}" in rows
                      and rows[f"clean_{s}"].notna().any()]:
            robust = figures.select(rows.columns, SHOWN_MEASURES, split)
            # Checkpoints not evaluated would only add rows of dashes.
            evaluated = rows[rows[robust].notna().any(axis=1)]
            shown = view(evaluated, ["run", "epoch", "grad_evals", *SETTINGS,
                                      "normalized_margin", *_nonzero(evaluated, robust, figures)])
            tables.append(Table(f"Robustness on {split} points", shown, f"g{i}-{split}",
                                column_notes(shown.columns, evaluated["settings"], texts,
                                             figures)))
        images = [Path(p).relative_to(out_dir).as_posix() for p in plots.get((dataset, model), [])]
        note = "" if len(tables) > 1 else "No checkpoint of these runs is evaluated yet."
        ids = rows["settings"] if "settings" in rows else []
        note = " ".join(t for t in (note, legend(texts, ids), _skipped_note(rows)) if t)
        title = (titles or {}).get((dataset, model), f"{dataset} · {model}")
        sections.append(Section(title, tables, images, note))
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


def _bound_text(value: Any) -> str:
    if is_missing(value):
        return "—"
    number = float(value)
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    return f"{number:.3g}"


def shown_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a document shows: those of ``frame`` but the interval ends of a shown
    column (they go into its cells)."""
    ends = {b for c in frame.columns for b in bounds(c)}
    return [c for c in frame.columns if c not in ends]


def cell_text(column: str, row: Mapping[str, Any]) -> str:
    """A cell for people, with its interval: ``0.55 [0.452, 0.644]``.

    Args:
        column: The column shown.
        row: The row (its ``{column}_lo`` / ``{column}_hi``, if any, are read).
    """
    text = format_value(column, row[column])
    lo, hi = (row.get(b) for b in bounds(column))
    if is_missing(row[column]) or (is_missing(lo) and is_missing(hi)):
        return text
    return f"{text} [{_bound_text(lo)}, {_bound_text(hi)}]"


_LEFT = ("column", "method", "config", "conclusion", "note", "runs", "description",
         "schedule_a", "schedule_b", "run_a", "run_b", "match", "aligned_by", "quantity")


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_"
    columns = shown_columns(frame)
    records = frame.to_dict("records")
    shown = pd.DataFrame({c: [cell_text(c, r) for r in records] for c in columns})
    # Cells are pre-formatted strings, so alignment is given rather than guessed.
    align = ["left" if c in STRING_COLUMNS or c in _LEFT else "right" for c in columns]
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


def _html_cell(column: str, row: Mapping[str, Any]) -> str:
    value = row[column]
    text = html.escape(cell_text(column, row))
    if is_missing(value):
        return f'<td class="na">{text}</td>'
    if isinstance(value, str):
        return f"<td>{text}</td>"
    # The raw number rides along for sorting and for machines reading the page.
    number = float(value)
    raw = repr(number) if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")
    return f'<td class="num" data-value="{raw}">{text}</td>'


def _html_head(column: str, note: str | None) -> str:
    name = html.escape(column)
    if not note:
        return f'<th data-column="{name}" title="click to sort">{name}</th>'
    return (f'<th data-column="{name}" title="{html.escape(note)} (click to sort)">{name}'
            f'<span class="src">{html.escape(note)}</span></th>')


def _html_table(table: Table) -> str:
    columns = shown_columns(table.frame)
    head = "".join(_html_head(c, table.notes.get(c)) for c in columns)
    body = "\n".join("<tr>" + "".join(_html_cell(c, row) for c in columns) + "</tr>"
                     for row in table.frame.to_dict("records"))
    title = f"<h3>{html.escape(table.title)}</h3>\n" if table.title else ""
    return (f'{title}<div class="scroll"><table class="sortable" id="{table.name}">'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>")


def _inline_code(text: str) -> str:
    # The intro and notes are written with Markdown backticks; the page shows them as code.
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def html_page(sections: Sequence[Section], n_runs: int, notes: str = "") -> str:
    """``index.html``: the same sections, self-contained, sortable by clicking a header.

    Args:
        sections: The sections, in order.
        n_runs: Number of runs.
        notes: The hand-written ``NOTES.md`` (the reading and its caveats), placed after
            the introduction as in the README.
    """
    parts = ["<h1>Leaderboard</h1>", f"<p>{n_runs} run(s). {_inline_code(INTRO)} "
             "Click a column header to sort.</p>"]
    if notes.strip():
        parts.append(f'<div class="notes">\n{markdown_html(notes)}\n</div>')
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
