"""Checkpoints side by side: margins, accuracies and robustness, with differences.

Each item is a run folder (its last checkpoint, by epoch) or a checkpoint file
``RUN/checkpoints/epoch-N.pt`` (that checkpoint of ``RUN``). :func:`compare` returns a frame
whose **rows are metrics** (every numeric column of the leaderboard frame that any item
has, in its order) and whose **columns are the items**, labelled ``run@checkpoint``,
followed by one column ``Δ {label}`` per later item holding that item minus the first.
A checkpoint evaluated with several settings gives one column per setting, its label
naming the setting. ``frame.attrs["items"]`` keeps each column's identity (dataset, model,
bias, width, schedule, run folder, n, seed, settings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..errors import UserError
from ..train.checkpoints import CHECKPOINT_DIR
from .columns import IDENTITY, SETTINGS, SKIPPED, STRING_COLUMNS, pair_order
from .figures import FigureIndex
from .formatting import format_value, json_records, json_value
from .loader import load_distances, load_runs, pick_distances
from .methods import minimal_norm_methods
from .plots import draw_robust_vs_eps, eps_marks, panel_grid, save
from .series import known, setting_text
from .tables import build_tables

FORMATS = ("table", "csv", "json")
ITEM_FIELDS = (*IDENTITY, *SETTINGS, SKIPPED)


@dataclass
class _Item:
    run_dir: Path
    checkpoint: str | None  # None: the run's last checkpoint


def _item(path: Path | str) -> _Item:
    path = Path(path)
    if path.is_dir():
        return _Item(path, None)
    if path.is_file():
        if path.suffix != ".pt" or path.parent.name != CHECKPOINT_DIR:
            raise UserError(f"{path} is not a checkpoint (expected RUN/{CHECKPOINT_DIR}/"
                            "epoch-N.pt) nor a run directory")
        return _Item(path.parent.parent, path.stem)
    raise UserError(f"no run directory or checkpoint at {path}")


@dataclass
class _Items:
    """The leaderboard rows of the items compared, the keys of their robustness columns and
    the minimal-norm methods among their records."""

    rows: pd.DataFrame
    figures: FigureIndex
    minimal: frozenset[str]


def _rows(paths: Sequence[Path | str], settings: str | None = None) -> _Items:
    """The leaderboard rows of every item, in order, labelled; the keys of their columns
    and the minimal-norm methods.

    With ``settings`` (an id of the settings table, e.g. ``A``) only rows of those
    settings are kept, and an item without them is an error."""
    if not paths:
        raise UserError("give at least one run directory or checkpoint to compare")
    items = [_item(p) for p in paths]
    # One leaderboard over the distinct runs; items then pick their rows from it.
    runs = load_runs(list({i.run_dir.resolve(): i.run_dir for i in items}.values()))
    minimal = minimal_norm_methods(r for run in runs for r in run.records)
    tables = build_tables(runs, minimal)
    frame = tables.frame
    by_dir = {Path(d).resolve(): rows for d, rows in frame.groupby("run_dir", sort=False)}
    picked = []
    for k, item in enumerate(items):
        rows = by_dir.get(item.run_dir.resolve())
        if rows is None or rows.empty:
            raise UserError(f"{item.run_dir} has no checkpoints to compare")
        name = (rows.loc[rows["epoch"].astype("float64").idxmax(), "checkpoint"]
                if item.checkpoint is None else item.checkpoint)
        chosen = rows[rows["checkpoint"] == name]
        if chosen.empty:
            raise UserError(f"{item.run_dir} has no checkpoint {name}")
        if settings is not None:
            have = sorted({str(v) for v in chosen["settings"].dropna()})
            chosen = chosen[chosen["settings"].astype("string") == settings]
            if chosen.empty:
                raise UserError(f"{item.run_dir} ({name}) was not evaluated with settings "
                                f"{settings}; it has {', '.join(have) or 'none'}")
        base = f"{chosen['run'].iloc[0]}@{name}"
        labels = ([base] if len(chosen) == 1 else
                  [f"{base} ({setting_text(r)})" for r in chosen.to_dict("records")])
        picked.append(chosen.assign(label=labels, base=base, item=k))
    out = pd.concat(picked, ignore_index=True)
    labels = out["label"].tolist()
    # The same checkpoint given twice still needs distinct column names.
    out["label"] = [lab if labels.count(lab) == 1 else f"{lab}#{k + 1}"
                    for k, lab in enumerate(labels)]
    return _Items(out, tables.figures, minimal)


# Marks a difference between figures of different evaluation settings (n, seed, attack
# options): it measures the settings as much as the models.
OTHER_SETTINGS = " [other settings]"


def compare(paths: Sequence[Path | str], settings: str | None = None) -> pd.DataFrame:
    """Items side by side: rows = metrics, columns = items then ``Δ {label}`` vs the first.

    A difference between columns of different evaluation settings (points, seed, or
    attack options such as the attack set) is labelled ``Δ {label} [other settings]``:
    a worst case over other attacks differs without any difference of the models.

    Args:
        paths: Run folders (their last checkpoint) or ``RUN/checkpoints/epoch-N.pt`` files.
        settings: Keep only figures of these settings (an id of the settings table:
            ``A``, ``B``...), so every difference compares like with like.

    Returns:
        A float frame indexed by metric name; ``attrs["items"]`` lists each item's identity
        and ``attrs["other_settings"]`` says whether a difference spans two settings.

    Raises:
        UserError: A path is missing, not a run folder, or not a checkpoint file.
    """
    rows = _rows(paths, settings).rows
    # Identity and settings go to attrs["items"]; the rows are the measurements.
    metrics = [c for c in rows.columns if c not in ITEM_FIELDS and c not in STRING_COLUMNS
               and c not in ("label", "base", "item") and rows[c].notna().any()]
    numbers = rows[metrics].apply(lambda s: s.astype("float64"))
    table = numbers.set_axis(rows["label"]).T
    first = table.columns[0]
    key = {r["label"]: tuple(str(r.get(k)) for k in SETTINGS) for r in rows.to_dict("records")}
    other = [label for label in table.columns[1:] if key[label] != key[first]]
    for label in table.columns[1:]:
        mark = OTHER_SETTINGS if label in other else ""
        table[f"Δ {label}{mark}"] = table[label] - table[first]
    table.index.name = "metric"
    table.columns.name = None
    table.attrs["items"] = [{"label": r["label"], **{k: json_value(r.get(k))
                                                    for k in ITEM_FIELDS if k in r}}
                            for r in rows.to_dict("records")]
    table.attrs["other_settings"] = bool(other)
    return table


def format_compare(frame: pd.DataFrame, fmt: str = "table") -> str:
    """Render :func:`compare`'s frame.

    Args:
        frame: The frame from :func:`compare`.
        fmt: ``table`` (items, then the metrics, via tabulate), ``csv`` (the metrics) or
            ``json`` (``{"items": [...], "metrics": [{"metric": ..., label: value}]}``,
            strict: missing and infinite numbers are null).

    Raises:
        UserError: An unknown format.
    """
    items = frame.attrs.get("items", [])
    if fmt == "table":
        head = tabulate([{k: format_value(k, v) for k, v in i.items()} for i in items],
                        headers="keys", disable_numparse=True)
        shown = [[metric, *[format_value(metric, v) for v in row]]
                 for metric, row in frame.iterrows()]
        body = tabulate(shown, headers=["metric", *frame.columns], disable_numparse=True,
                        colalign=["left", *["right"] * len(frame.columns)])
        warn = ""
        if frame.attrs.get("other_settings"):
            warn = ("\nWARNING: the columns marked [other settings] differ from the first in "
                    "their evaluation settings (points, seed or attack options, see the items "
                    "above), so their differences need not come from the models; pass "
                    "--settings ID to compare figures of one setting only.\n")
        return f"{head}\n\n{body}\n{warn}"
    if fmt == "csv":
        return frame.to_csv()
    if fmt == "json":
        return json.dumps({"items": items, "metrics": json_records(frame.reset_index())},
                          indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def compare_plot(paths: Sequence[Path | str], out_png: Path | str) -> Path | None:
    """Robust accuracy against ε of every item, one panel per (split, norm), in one PNG.

    The curves come from the per-point minimal distances of the minimal-norm attacks (each
    point keeps the smallest distance any of them found).

    Args:
        paths: As for :func:`compare`.
        out_png: Where to write the PNG.

    Returns:
        The PNG, or None (nothing written) when no item has per-point distances.
    """
    items = _rows(paths)
    rows, minimal = items.rows, items.minimal
    curves: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    # Distances belong to a checkpoint's points (n, seed), not to attack options: one curve
    # per item given and (n, seed).
    bases = rows.drop_duplicates("item")["base"].tolist()
    for _, of_item in rows.groupby("item", sort=True):
        points = of_item.drop_duplicates(["n", "seed"])
        for row in points.to_dict("records"):
            name = row["base"]
            if bases.count(name) > 1:
                name += f"#{row['item'] + 1}"
            if len(points) > 1:
                name += f" (n={known(row['n'])}, seed={known(row['seed'])})"
            found = load_distances(row["run_dir"], row["checkpoint"], minimal)
            for split, norm in {(k[0], k[1]) for k in found}:
                picked = pick_distances(found, split, norm, known(row["n"]), known(row["seed"]))
                if picked is not None:
                    label = f"{name} ({row['dataset']} · {row['model']})"
                    curves.setdefault((split, norm), []).append((label, picked.values))
    if not curves:
        return None
    fig, axes = panel_grid(len(curves), max_cols=2, width=6.5, height=4.6)
    for ax, ((split, norm), pair_curves) in zip(axes, sorted(curves.items(),
                                                            key=lambda kv: pair_order(kv[0]))):
        draw_robust_vs_eps(ax, pair_curves, eps_marks(rows, items.figures, split, norm))
        ax.set_title(f"{split} points, {norm}", fontsize=10)
    fig.suptitle("Robust accuracy vs ε (per-point minimal adversarial distances)")
    return save(fig, out_png)
