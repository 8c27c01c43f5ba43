"""The leaderboard: every checkpoint of some runs, its margins and its robustness, in one table.

:func:`leaderboard_frame` gives one row per (run, checkpoint). Its columns:

* identity (strings, except ``width``): ``run`` (the directory's name), ``run_dir`` (the
  path as given), ``dataset``, ``model``, ``bias``, ``width``, ``schedule`` (from
  ``run.json``; a model option the run did not record is empty), ``checkpoint`` (the
  checkpoint's file stem, ``epoch-NNNNNN``);
* trajectory, from ``metrics.jsonl`` at the checkpoint's epoch (else from its evaluation
  records): ``epoch, step, train_wall_s, log10_loss, train_acc, test_acc, rho,
  homogeneity_order`` (L), ``normalized_margin, product_margin, smoothed_margin``;
* robustness, from ``eval/records.jsonl`` (NaN for a checkpoint not evaluated):

  ==================================  ====================================================
  ``n_flags``                         distinct consistency violations in its records
  ``min_certified_radius_train_L2``   smallest Lipschitz-certified L2 radius over the
                                      evaluated training points
  ``clean_{split}``                   clean accuracy on the evaluated points of the split
  ``aa_{split}_{norm}_{eps}``         AutoAttack robust accuracy
  ``cert_{split}_{norm}_{eps}``       certified accuracy (Lipschitz or IBP certificate)
  ``worst_{split}_{norm}_{eps}``      per point, the worst case over every attack run
  ``median_dist_{split}_{norm}``      median minimal adversarial distance: the smallest
                                      median among the minimal-norm attacks run (fmn, ddn,
                                      deepfool, cw) — each bounds the true minimal distance
                                      from above, hence so does the smallest median
  ==================================  ====================================================

  ``split`` is ``test`` or ``train``, ``norm`` ``L2`` or ``Linf``, and ``eps`` is written with
  4 significant digits (``0.5``, ``1``, ``0.03137`` for 8/255), more only where two budgets
  would otherwise share a name.

Every column but the identity strings is float64. :func:`link_statistics` then reports, per
run, the Spearman rank correlation between the normalized margin and each robustness column
across checkpoints: it measures the link, it never assumes one. :func:`write_leaderboard`
writes all of it as CSV, JSON, Markdown, a self-contained HTML page and PNG figures.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError
from .plots import MINIMAL_NORM_ATTACKS, SPLIT_ORDER, write_plots
from .results import ResultsStore
from .train.checkpoints import atomic_write, list_checkpoints
from .train.metrics_log import read_metrics
from .train.run import RUN_FILE

IDENTITY = ("run", "run_dir", "dataset", "model", "bias", "width", "schedule", "checkpoint")
STRING_COLUMNS = frozenset(IDENTITY) - {"width"}
TRAJECTORY = ("epoch", "step", "train_wall_s", "log10_loss", "train_acc", "test_acc", "rho",
              "homogeneity_order", "normalized_margin", "product_margin", "smoothed_margin")
# metrics.jsonl names the trajectory's wall time differently from the records.
METRIC_NAMES = {"train_wall_s": "wall_s"}
MIN_RADIUS = "min_certified_radius_train_L2"
# Record method → column prefix of the accuracies taken from it.
ACCURACY_PREFIXES = {"autoattack": "aa", "certified": "cert", "worst": "worst"}
LINK_PREFIXES = ("aa_", "cert_", "worst_", "median_dist_")
LINK_COLUMNS = ("run", "dataset", "model", "column", "n_checkpoints", "spearman", "n_fitted",
                "spearman_fitted")
# A rank correlation of fewer points says nothing.
MIN_LINK_POINTS = 3
INTEGER_COLUMNS = frozenset({"epoch", "step", "homogeneity_order", "n_flags", "n_checkpoints",
                             "n_fitted"})
TRAJECTORY_VIEW = ("run", "epoch", "log10_loss", "train_acc", "test_acc", "rho",
                   "normalized_margin", "smoothed_margin", MIN_RADIUS, "n_flags")
PLOTS_DIR = "plots"
_EPOCH = re.compile(r"epoch-(\d+)$")
_NONE = pd.Series(dtype="float64")


# ---------------------------------------------------------------------------- the frame
@dataclass
class _Run:
    path: Path
    label: str
    info: dict[str, Any]
    records: pd.DataFrame


def _read_run_json(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise UserError(f"no run directory at {path}")
    file = path / RUN_FILE
    if not file.is_file():
        raise UserError(f"{path} is not a run directory (it has no {RUN_FILE})")
    try:
        info = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{file} is not valid JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("run"), dict):
        raise UserError(f"{file} does not describe a run (no 'run' object)")
    return info


def _open_runs(run_dirs: Sequence[Path | str]) -> list[_Run]:
    if not run_dirs:
        raise UserError("give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    resolved = [p.resolve() for p in paths]
    twice = next((p for p, r in zip(paths, resolved) if resolved.count(r) > 1), None)
    if twice is not None:
        raise UserError(f"run directory {twice} is given twice")
    names = [p.resolve().name for p in paths]
    # Runs are labelled by directory name; two with the same name keep their full path.
    labels = [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]
    return [_Run(p, label, _read_run_json(p), ResultsStore(p).frame())
            for p, label in zip(paths, labels)]


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


def _identity(run: _Run) -> dict[str, Any]:
    spec = run.info["run"]
    kwargs = spec.get("model_kwargs") or {}
    dataset = spec.get("dataset") or (run.info.get("data") or {}).get("name") or ""
    kind, colon, arg = dataset.partition(":")
    if colon:  # imagefolder:/long/path/set.tar.xz → imagefolder:set.tar.xz (no machine paths)
        dataset = f"{kind}:{Path(arg).name}"
    return {"run": run.label, "run_dir": str(run.path), "dataset": dataset,
            "model": spec.get("model"), "bias": kwargs.get("bias"), "width": kwargs.get("width"),
            "schedule": (spec.get("train") or {}).get("schedule")}


def _epoch_of(name: str, context: dict[str, Any]) -> int | None:
    value = context.get("epoch")
    if value is not None and not pd.isna(value):
        return int(value)
    match = _EPOCH.search(name)
    return int(match.group(1)) if match else None


def _trajectory_rows(run: _Run) -> list[dict[str, Any]]:
    """One row per checkpoint (files on disk and evaluated ones), trajectory columns filled."""
    names = {p.stem for p in list_checkpoints(run.path)} | set(run.records["checkpoint"])
    # first() skips missing values, so each field comes from any record that has it.
    contexts = (run.records.groupby("checkpoint").first().to_dict("index")
                if len(run.records) else {})
    metrics = {row.get("epoch"): row for row in read_metrics(run.path)}
    rows = []
    for name in names:
        context = contexts.get(name, {})
        epoch = _epoch_of(name, context)
        at_epoch = metrics.get(epoch, {})
        row = {**_identity(run), "checkpoint": name}
        for col in TRAJECTORY:
            row[col] = at_epoch.get(METRIC_NAMES.get(col, col), context.get(col))
        row["epoch"] = epoch
        rows.append(row)
    return sorted(rows, key=lambda r: (r["epoch"] is None, r["epoch"] or 0, r["checkpoint"]))


def _accuracies(records: pd.DataFrame, labels: dict[float, str]) -> pd.DataFrame:
    chosen = records[records["method"].isin(list(ACCURACY_PREFIXES))]
    if chosen.empty:
        return pd.DataFrame()
    names = (chosen["method"].map(ACCURACY_PREFIXES) + "_" + chosen["split"] + "_"
             + chosen["norm"] + "_" + chosen["eps"].map(labels))
    return chosen.assign(column=names).pivot_table(index="checkpoint", columns="column",
                                                   values="robust_acc", aggfunc="first")


def _median_distances(records: pd.DataFrame) -> pd.DataFrame:
    chosen = records[records["method"].isin(MINIMAL_NORM_ATTACKS)]
    if chosen.empty:
        return pd.DataFrame()
    names = "median_dist_" + chosen["split"] + "_" + chosen["norm"]
    return chosen.assign(column=names).pivot_table(index="checkpoint", columns="column",
                                                   values="median_distance", aggfunc="min")


def _per_checkpoint(records: pd.DataFrame) -> pd.DataFrame:
    clean = records.pivot_table(index="checkpoint", columns="split", values="clean_acc",
                                aggfunc="first").add_prefix("clean_")
    lip = records[(records["method"] == "certify-lipschitz") & (records["split"] == "train")
                  & (records["norm"] == "L2")]
    flags = records.groupby("checkpoint")["flags"].agg(lambda s: len(set().union(*s)))
    return clean.join([lip.groupby("checkpoint")["min_distance"].min().rename(MIN_RADIUS),
                       flags.rename("n_flags")], how="outer")


def _robustness(records: pd.DataFrame, labels: dict[float, str]) -> dict[str, dict[str, Any]]:
    """Robustness columns per checkpoint name."""
    if records.empty:
        return {}
    parts = [_per_checkpoint(records), _accuracies(records, labels), _median_distances(records)]
    return pd.concat([p for p in parts if not p.empty], axis=1).to_dict("index")


def _robust_order(records: pd.DataFrame, labels: dict[float, str]) -> list[str]:
    """Robustness column names in reading order: split, then norm, then measure, then ε."""
    if records.empty:
        return []
    order = [MIN_RADIUS]
    splits = sorted(set(records["split"]),
                    key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))
    for split in splits:
        order.append(f"clean_{split}")
        of_split = records[records["split"] == split]
        for norm in sorted(set(of_split["norm"])):
            budgets = sorted(set(of_split.loc[of_split["norm"] == norm, "eps"]))
            for prefix in ACCURACY_PREFIXES.values():
                order += [f"{prefix}_{split}_{norm}_{labels[float(e)]}" for e in budgets]
            order.append(f"median_dist_{split}_{norm}")
    return order


def leaderboard_frame(run_dirs: Sequence[Path | str]) -> pd.DataFrame:
    """One row per (run, checkpoint): identity, trajectory metrics and robustness.

    Args:
        run_dirs: Run directories (each with ``run.json``; ``eval/`` may be missing).

    Returns:
        The frame described in the module docstring, rows by run then epoch. Robustness
        columns appear for every (split, norm, ε) evaluated in any run (NaN elsewhere).

    Raises:
        UserError: A path is not a run directory, or one is given twice.
    """
    runs = _open_runs(run_dirs)
    all_records = pd.concat([r.records for r in runs if not r.records.empty] or [pd.DataFrame()])
    labels = eps_labels(all_records["eps"] if len(all_records) else [])
    rows = []
    for run in runs:
        robustness = _robustness(run.records, labels)
        for row in _trajectory_rows(run):
            rows.append({**row, **robustness.get(row["checkpoint"], {})})
    columns = [*IDENTITY, *TRAJECTORY, "n_flags",
               *[c for c in _robust_order(all_records, labels) if any(c in r for r in rows)]]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [c for c in columns if c not in STRING_COLUMNS]
    frame[numeric] = frame[numeric].apply(pd.to_numeric).astype("float64")
    return frame


# ---------------------------------------------------------------------------- the link
def spearman(x: pd.Series, y: pd.Series) -> tuple[int, float]:
    """Spearman rank correlation of the pairs where both values are present.

    Args:
        x, y: Aligned series.

    Returns:
        (number of pairs, correlation); the correlation is NaN with fewer than 3 pairs or
        when either side is constant (no ranking to compare).
    """
    both = pd.concat([x, y], axis=1).dropna()
    if len(both) < MIN_LINK_POINTS or both.nunique().min() < 2:
        return len(both), math.nan
    return len(both), float(both.iloc[:, 0].corr(both.iloc[:, 1], method="spearman"))


def robustness_columns(frame: pd.DataFrame) -> list[str]:
    """The columns :func:`link_statistics` correlates with the normalized margin.

    Args:
        frame: A leaderboard frame.
    """
    return [c for c in frame.columns if c.startswith(LINK_PREFIXES) or c == MIN_RADIUS]


def link_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run and robustness column, Spearman's ρ with the normalized margin over checkpoints.

    ``spearman`` uses every checkpoint with both values; ``spearman_fitted`` only those with
    training accuracy 1: Lyu & Li's results (the normalized margin rises once the data is
    fitted) say nothing before that, when margin and robustness both grow with plain
    accuracy. A column a run never evaluated is left out for that run.

    Args:
        frame: A leaderboard frame.

    Returns:
        Columns ``run, dataset, model, column, n_checkpoints, spearman, n_fitted,
        spearman_fitted`` (ρ is NaN with fewer than 3 checkpoints or a constant side).
    """
    rows = []
    for run, sub in frame.groupby("run", sort=False):
        fitted = sub[sub["train_acc"] == 1.0]
        for col in robustness_columns(frame):
            if sub[col].isna().all():
                continue
            n, rho = spearman(sub["normalized_margin"], sub[col])
            n_fit, rho_fit = spearman(fitted["normalized_margin"], fitted[col])
            rows.append({"run": run, "dataset": sub["dataset"].iloc[0],
                         "model": sub["model"].iloc[0], "column": col, "n_checkpoints": n,
                         "spearman": rho, "n_fitted": n_fit, "spearman_fitted": rho_fit})
    return pd.DataFrame(rows, columns=list(LINK_COLUMNS))


# ---------------------------------------------------------------------------- formatting
def format_value(column: str, value: Any) -> str:
    """A cell for people: 4 significant digits, counts as integers, ``—`` when missing.

    Args:
        column: The column's name (counts such as ``epoch`` print as integers).
        value: The raw value.
    """
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return "—"
    number = float(value)
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if column in INTEGER_COLUMNS and number.is_integer():
        return str(int(number))
    return f"{number:.4g}"


def json_value(value: Any) -> Any:
    """A value for strict JSON: non-finite and missing numbers become None.

    Args:
        value: A cell of a frame.
    """
    if value is None or isinstance(value, str):
        return value
    if pd.isna(value):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return int(number) if isinstance(value, int) else number


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-ready dicts (see :func:`json_value`).

    Args:
        frame: Any frame.
    """
    return [{k: json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]


# ---------------------------------------------------------------------------- documents
@dataclass
class _Table:
    title: str
    frame: pd.DataFrame
    name: str


@dataclass
class _Section:
    title: str
    tables: list[_Table]
    plots: list[str] = field(default_factory=list)
    note: str = ""


def _view(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    keep = [c for c in columns if c in rows and (c in ("run", "epoch") or rows[c].notna().any())]
    return rows[keep].reset_index(drop=True)


def _group_sections(frame: pd.DataFrame, plots: dict[tuple[str, str], list[Path]],
                    out_dir: Path) -> list[_Section]:
    sections = []
    for i, ((dataset, model), rows) in enumerate(frame.groupby(["dataset", "model"], sort=False)):
        tables = [_Table("Trajectory", _view(rows, TRAJECTORY_VIEW), f"g{i}-trajectory")]
        for split in [s for s in SPLIT_ORDER if rows.get(f"clean_{s}", _NONE).notna().any()]:
            heads = tuple(f"{p}_{split}_" for p in ("aa", "cert", "median_dist"))
            robust = [f"clean_{split}", *[c for c in rows.columns if c.startswith(heads)]]
            # Checkpoints not evaluated would only add rows of dashes.
            evaluated = rows[rows[robust].notna().any(axis=1)]
            tables.append(_Table(f"Robustness on {split} points",
                                 _view(evaluated, ["run", "epoch", "normalized_margin", *robust]),
                                 f"g{i}-{split}"))
        images = [p.relative_to(out_dir).as_posix() for p in plots.get((dataset, model), [])]
        note = "" if len(tables) > 1 else "No checkpoint of these runs is evaluated yet."
        sections.append(_Section(f"{dataset} · {model}", tables, images, note))
    return sections


def _links_section(links: pd.DataFrame) -> _Section:
    view = links.drop(columns=["dataset", "model"])
    return _Section("Margin–robustness link", [_Table("", view, "links")], note=(
        "Spearman rank correlation, per run, between the normalized margin and each "
        "robustness column across checkpoints (`spearman`), and across the checkpoints with "
        "training accuracy 1 only (`spearman_fitted`, where the margin theory applies). "
        "Empty with fewer than 3 checkpoints or a constant column; with few checkpoints "
        "even ±1 is weak evidence."))


INTRO = (
    "One row per (run, checkpoint). Robustness columns are named "
    "`{measure}_{split}_{norm}_{eps}`: `aa` = AutoAttack robust accuracy, `cert` = certified "
    "accuracy, `worst` = worst case over all attacks; `median_dist_{split}_{norm}` = median "
    "minimal adversarial distance; `clean_{split}` = clean accuracy on the evaluated points; "
    "`min_certified_radius_train_L2` = smallest Lipschitz-certified L2 radius on training "
    "points; `n_flags` = consistency violations found by the evaluator. Every column is in "
    "`leaderboard.csv` / `leaderboard.json`; the tables below show a subset.")


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_"
    shown = pd.DataFrame({c: [format_value(c, v) for v in frame[c]] for c in frame.columns})
    # Cells are pre-formatted strings, so alignment is given rather than guessed.
    align = ["left" if c in STRING_COLUMNS or c == "column" else "right" for c in frame.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _markdown(sections: list[_Section], n_runs: int, notes: str = "") -> str:
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
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return f'<td class="na">{text}</td>'
    if isinstance(value, str):
        return f"<td>{text}</td>"
    # The raw number rides along for sorting and for machines reading the page.
    number = float(value)
    raw = repr(number) if math.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")
    return f'<td class="num" data-value="{raw}">{text}</td>'


def _html_table(table: _Table) -> str:
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


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1500px;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.4em 0 1.4em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;white-space:nowrap}
th{background:#eef1f5;cursor:pointer;user-select:none;position:sticky;top:0}
th:hover{background:#dde3ea}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.na{color:#999;text-align:center}
tbody tr:nth-child(even){background:#f8f9fb}
.scroll{overflow-x:auto}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0;display:block}
code{background:#f3f3f3;padding:0 3px}
"""

# Click a header to sort (again to reverse); numbers sort by their data-value, missing values
# last. "#sort=COLUMN:desc" in the address sorts every table holding COLUMN on load.
_SCRIPT = """
(function () {
  "use strict";
  function numberOf(cell) {
    var v = cell.getAttribute("data-value");
    return v === null ? null : parseFloat(v);
  }
  function compare(a, b, numeric) {
    if (!numeric) {
      return a.textContent.localeCompare(b.textContent, undefined, {numeric: true});
    }
    var x = numberOf(a), y = numberOf(b);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  function sortTable(table, column, descending) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var i = headers.findIndex(function (th) { return th.dataset.column === column; });
    if (i < 0) { return; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.every(function (r) {
      return r.cells[i].hasAttribute("data-value") || r.cells[i].classList.contains("na");
    });
    rows.sort(function (a, b) {
      var missA = a.cells[i].classList.contains("na"), missB = b.cells[i].classList.contains("na");
      if (missA || missB) { return missA - missB; }
      var c = compare(a.cells[i], b.cells[i], numeric);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    headers.forEach(function (th) { th.removeAttribute("aria-sort"); });
    headers[i].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  var asked = /^#sort=([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener("click", function () {
        sortTable(table, th.dataset.column, th.getAttribute("aria-sort") === "ascending");
      });
    });
    if (asked) { sortTable(table, asked[1], asked[2] === "desc"); }
  });
})();
"""


def _html(sections: list[_Section], n_runs: int) -> str:
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
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            "<title>marginrobust leaderboard</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts)
            + f"\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")


def write_leaderboard(run_dirs: Sequence[Path | str], out_dir: Path | str) -> dict[str, Path]:
    """Write the leaderboard of some runs: tables, link statistics, figures and pages.

    Files in ``out_dir``: ``leaderboard.csv`` (every column; inf kept as ``inf``),
    ``leaderboard.json`` (records, strict JSON: missing and infinite numbers are null),
    ``links.csv`` (:func:`link_statistics`), ``README.md`` (per (dataset, model) compact
    tables and figures, then the link table; the text of a hand-written ``NOTES.md`` in
    ``out_dir``, if any, goes after its introduction), ``index.html`` (the same, self-contained,
    sortable by clicking a header or with ``#sort=COLUMN:desc``) and ``plots/*.png``.

    Args:
        run_dirs: Run directories.
        out_dir: Output folder (created).

    Returns:
        ``{path relative to out_dir: path}`` of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = leaderboard_frame(run_dirs)
    links = link_statistics(frame)
    plots = write_plots(frame, out / PLOTS_DIR)
    sections = [*_group_sections(frame, plots, out), _links_section(links)]
    notes = (out / "NOTES.md").read_text(encoding="utf-8") if (out / "NOTES.md").exists() else ""
    texts = {"leaderboard.csv": frame.to_csv(index=False),
             "leaderboard.json": json.dumps(json_records(frame), indent=1, allow_nan=False,
                                            ensure_ascii=False) + "\n",
             "links.csv": links.to_csv(index=False),
             "README.md": _markdown(sections, len(run_dirs), notes),
             "index.html": _html(sections, len(run_dirs))}
    written = {}
    for name, text in texts.items():
        data = text.encode("utf-8")
        atomic_write(out / name, lambda fh, data=data: fh.write(data))
        written[name] = out / name
    for paths in plots.values():
        written.update({p.relative_to(out).as_posix(): p for p in paths})
    return written
