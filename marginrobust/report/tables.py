"""Records and metrics → the leaderboard's tables (pandas frames).

:func:`build_tables` gives the leaderboard frame, the settings table and the index of the
robustness columns of some loaded runs; :func:`leaderboard_tables` and
:func:`leaderboard_frame` read the runs too. The frame has one row per (run, checkpoint,
evaluation setting). Its columns:

* identity (strings, except ``width``): ``run`` (the folder's name), ``run_dir`` (the path
  as given), ``dataset``, ``model``, ``bias``, ``width``, ``schedule`` (from ``run.json``;
  a model option the run did not record is empty), ``checkpoint`` (its file stem);
* settings: ``n`` (evaluated points), ``seed`` (the point seed; empty for records that did
  not store it) and ``settings``, the id of the attack options the row's figures used,
  spelled out per method in the settings table (``settings, method, config``). A run
  evaluated with several settings has one row per setting and checkpoint; a checkpoint
  never evaluated has one row with empty settings;
* trajectory, from ``metrics.jsonl`` at the checkpoint's epoch (else from its evaluation
  records): ``epoch, step`` (accepted steps), ``grad_evals`` (gradient evaluations, those
  of rolled-back epochs included), ``train_wall_s, log10_loss, train_acc, test_acc, rho,
  homogeneity_order`` (L), ``normalized_margin, product_margin, smoothed_margin``;
* robustness, from ``eval/records.jsonl`` (empty for a checkpoint not evaluated):
  ``n_flags`` (distinct consistency violations in its records), one column per figure
  (clean, AutoAttack, certified and worst-case accuracies per split, norm and ε, median
  minimal distances, the smallest Lipschitz radius: named and indexed by
  :mod:`marginrobust.report.figures`; a median distance is the smallest median among the
  minimal-norm attacks run, each an upper bound of the true minimal distance) and
  ``skipped``, the figures that could not be computed with the reason (their cells are
  empty, never 0).

Counts (``epoch, step, grad_evals, homogeneity_order, n_flags, n, seed``) are pandas
``Int64``; every other column but the identity strings is float64.

:func:`leaderboard_frame` (and the board) add the 95 % intervals and the certified-radius
figures of :mod:`marginrobust.report.intervals`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluate.store import canonical_json
from .columns import (
    IDENTITY,
    INTEGER_COLUMNS,
    METRIC_NAMES,
    SETTINGS,
    SKIPPED,
    STRING_COLUMNS,
    TRAJECTORY,
    eps_labels,
    split_rank,
)
from .figures import (
    ACCURACY_METHODS,
    HALF_EPS,
    MEDIAN,
    MIN_RADIUS_FIGURE,
    RADIUS,
    Figure,
    FigureIndex,
)
from .intervals import with_intervals
from .loader import LIPSCHITZ, RunData, load_all_distances, load_all_radii, load_runs
from .methods import minimal_norm_methods

SETTINGS_COLUMNS = ("settings", "method", "config")
NOT_RECORDED = "(not recorded)"
_EPOCH = re.compile(r"epoch-(\d+)$")
# Options are per (method, norm): an attack may take an option under one norm only (FMN's
# warm start is L2 only), and its L2 and Linf records are still one setting.
OptionKey = tuple[str, str]
# ((method, norm), config) pairs of the methods whose options vary: what tells two settings
# apart.
Signature = tuple[tuple[OptionKey, str], ...]


@dataclass
class Tables:
    """The leaderboard frame, the settings table that explains its ``settings`` ids, and
    the index of its robustness columns."""

    frame: pd.DataFrame
    settings: pd.DataFrame
    figures: FigureIndex


@dataclass
class _Group:
    """The records of one row: one checkpoint of one run under one setting."""

    run: RunData
    checkpoint: str
    n: int | None
    seed: int | None
    signature: Signature
    records: list[dict[str, Any]]


def settings_id(k: int) -> str:
    """The k-th settings id: ``A`` … ``Z``, then ``AA``, ``AB`` …"""
    name = ""
    k += 1
    while k:
        k, rest = divmod(k - 1, 26)
        name = chr(65 + rest) + name
    return name


def _option_key(rec: dict[str, Any]) -> OptionKey:
    return rec["method"], rec["norm"]


def _groups(runs: Sequence[RunData]) -> list[_Group]:
    """The records of each run cut into rows, so that no row mixes two settings.

    Records are grouped by (checkpoint, n, seed); a method evaluated there under one norm
    with several option sets (``config``) gives one row per option set (in the order the
    records were stored), with the figures of the other methods repeated in each. Options
    that differ between norms by design (an option only one norm takes) are one setting.
    """
    configs: dict[OptionKey, set[str]] = defaultdict(set)
    for rec in (r for run in runs for r in run.records):
        configs[_option_key(rec)].add(rec["config"])
    varying = sorted(k for k, c in configs.items() if len(c) > 1)
    groups = []
    for run in runs:
        by_key: dict[tuple[str, Any, Any], list[dict[str, Any]]] = defaultdict(list)
        for rec in run.records:
            by_key[(rec["checkpoint"], rec["n"], rec["seed"])].append(rec)
        for (checkpoint, n, seed), recs in by_key.items():
            present = {k: list(dict.fromkeys(r["config"] for r in recs if _option_key(r) == k))
                       for k in varying}
            present = {k: c for k, c in present.items() if c}
            for chosen in _combinations(present):
                rows = [r for r in recs if chosen.get(_option_key(r), r["config"]) == r["config"]]
                groups.append(_Group(run, checkpoint, n, seed, tuple(chosen.items()), rows))
    return groups


def _named_options(config: str) -> dict[str, str]:
    """The options of other methods a config names (``worst``: the attacks it takes the
    worst over, each with its options), as canonical JSON per method."""
    try:
        parsed = json.loads(config) if config else {}
    except ValueError:
        return {}
    attacks = parsed.get("attacks") if isinstance(parsed, dict) else None
    if not isinstance(attacks, dict):
        return {}
    return {str(m): canonical_json(o) for m, o in attacks.items()}


def _combinations(present: dict[OptionKey, list[str]]) -> list[dict[OptionKey, str]]:
    """The option sets of the varying (method, norm) keys that make rows, one config each.

    Combinations where one method's config names another's options under the same norm
    (``worst`` over an AutoAttack set) and they differ are left out: that ``worst`` was not
    taken over that AutoAttack. Every (method, norm, config) keeps at least one row.
    """
    every = [dict(zip(present, combo)) for combo in itertools.product(*present.values())]

    def consistent(chosen: dict[OptionKey, str]) -> bool:
        return all(chosen.get((m, norm), c) == c
                   for (_, norm), config in chosen.items()
                   for m, c in _named_options(config).items())

    kept = [c for c in every if consistent(c)]
    for key, configs in present.items():
        for config in configs:
            if not any(c[key] == config for c in kept):
                kept.append(next(c for c in every if c[key] == config))
    return kept


def run_identity(run: RunData) -> dict[str, Any]:
    """The identity columns of a run's rows: run, run_dir, dataset (image-folder paths cut
    to the file name), model, bias, width, schedule and precision."""
    spec = run.info["run"]
    kwargs = spec.get("model_kwargs") or {}
    dataset = spec.get("dataset") or (run.info.get("data") or {}).get("name") or ""
    kind, colon, arg = dataset.partition(":")
    if colon:  # imagefolder:/long/path/set.tar.xz → imagefolder:set.tar.xz (no machine paths)
        dataset = f"{kind}:{Path(arg).name}"
    train = spec.get("train") or {}
    return {"run": run.label, "run_dir": str(run.path), "dataset": dataset,
            "model": spec.get("model"), "bias": kwargs.get("bias"), "width": kwargs.get("width"),
            "schedule": train.get("schedule"), "precision": _precision(train)}


def _precision(train: dict[str, Any]) -> str:
    """The training kernels as the board shows them: ``fp32``, ``tf32``, plus
    ``non-deterministic`` when deterministic algorithms were off (runs made before the
    option existed recorded neither and trained in fp32)."""
    label = str(train.get("precision", "fp32"))
    return label if train.get("deterministic", True) else f"{label}, non-deterministic"


def _epoch_of(name: str, context: dict[str, Any]) -> int | None:
    value = context.get("epoch")
    if value is not None and not pd.isna(value):
        return int(value)
    match = _EPOCH.search(name)
    return int(match.group(1)) if match else None


def _trajectories(run: RunData) -> dict[str, dict[str, Any]]:
    """Trajectory columns per checkpoint (files on disk and evaluated ones)."""
    contexts: dict[str, dict[str, Any]] = defaultdict(dict)
    for rec in run.records:
        # Each field comes from any record of the checkpoint that has it.
        context = contexts[rec["checkpoint"]]
        for col in TRAJECTORY:
            if context.get(col) is None and rec.get(col) is not None:
                context[col] = rec[col]
    metrics = {row.get("epoch"): row for row in run.metrics}
    out = {}
    for name in [*run.checkpoints, *contexts]:
        context = contexts.get(name, {})
        epoch = _epoch_of(name, context)
        at_epoch = metrics.get(epoch, {})
        row = {col: at_epoch.get(METRIC_NAMES.get(col, col), context.get(col))
               for col in TRAJECTORY}
        out[name] = {**row, "epoch": epoch}
    return out


def _figures(records: list[dict[str, Any]], labels: dict[float, str],
             minimal: Collection[str]) -> dict[str, Any]:
    """The robustness columns of one row."""
    row: dict[str, Any] = {}
    flags: set[str] = set()
    skipped: dict[str, None] = {}

    def smallest(figure: Figure, value: float) -> None:
        name = figure.column(labels)
        row[name] = min(row.get(name, value), value)

    for rec in records:
        split, method, norm = rec["split"], rec["method"], rec["norm"]
        flags.update(rec["flags"])
        if rec["skipped"]:
            skipped[f"{method}: {rec['skipped']}"] = None
        clean = Figure("clean", split).column(labels)
        if rec["clean_acc"] is not None and row.get(clean) is None:
            row[clean] = rec["clean_acc"]
        if method in ACCURACY_METHODS:
            row[Figure(ACCURACY_METHODS[method], split, norm, rec["eps"]).column(labels)] = (
                rec["robust_acc"])
        if method in minimal and rec["median_distance"] is not None:
            smallest(Figure(MEDIAN, split, norm), rec["median_distance"])
        if (method, split, norm) == (LIPSCHITZ, "train", "L2") and (
                rec["min_distance"] is not None):
            smallest(MIN_RADIUS_FIGURE, rec["min_distance"])
    row["n_flags"] = len(flags)
    if skipped:
        row[SKIPPED] = "; ".join(skipped)
    return row


def _robust_order(records: Iterable[dict[str, Any]]) -> list[Figure]:
    """Robustness figures in reading order: split, then norm, then measure, then ε; the
    certified-radius figures of the Lipschitz records last (their columns are placed by
    :func:`~marginrobust.report.intervals.with_intervals`)."""
    budgets: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    radii: set[tuple[str, str]] = set()
    for rec in records:
        budgets[rec["split"]][rec["norm"]].add(rec["eps"])
        if rec["method"] == LIPSCHITZ:
            radii.add((rec["split"], rec["norm"]))
    order = [MIN_RADIUS_FIGURE]
    for split in sorted(budgets, key=split_rank):
        order.append(Figure("clean", split))
        for norm in sorted(budgets[split]):
            for measure in ACCURACY_METHODS.values():
                order += [Figure(measure, split, norm, e) for e in sorted(budgets[split][norm])]
            order.append(Figure(MEDIAN, split, norm))
    order += [Figure(m, split, norm) for split, norm in sorted(radii) for m in (RADIUS, HALF_EPS)]
    return order


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts as ``Int64`` (where every value is a whole number), other numbers float64."""
    for col in frame.columns:
        if col in STRING_COLUMNS:
            continue
        values = pd.to_numeric(frame[col]).astype("float64")
        whole = values.dropna()
        if col in INTEGER_COLUMNS and (whole == whole.round()).all() and whole.abs().lt(
                2**53).all():
            frame[col] = values.astype("Int64")
        else:
            frame[col] = values
    return frame


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def last(value: Any) -> tuple[bool, Any]:  # missing values after present ones
        return (value is None, value if value is not None else 0)

    return (last(row["epoch"]), row["checkpoint"], last(row["n"]), last(row["seed"]),
            row["settings"] or "")


def _settings_table(groups: list[_Group], ids: dict[Signature, str]) -> pd.DataFrame:
    configs: dict[str, dict[tuple[str, str], None]] = defaultdict(dict)
    for group in groups:
        for rec in group.records:
            configs[ids[group.signature]][(str(rec["method"]), str(rec["config"]))] = None
    rows = [{"settings": sid, "method": m, "config": c or NOT_RECORDED}
            for sid in sorted(configs, key=lambda s: (len(s), s))
            for m, c in sorted(configs[sid])]
    return pd.DataFrame(rows, columns=list(SETTINGS_COLUMNS))


def build_tables(runs: Sequence[RunData], minimal: Collection[str] | None = None) -> Tables:
    """The leaderboard frame (module docstring) and the settings table of loaded runs.

    Args:
        runs: Runs from :func:`marginrobust.report.loader.load_runs`.
        minimal: The minimal-norm methods (default: asked of the attack registry, see
            :func:`marginrobust.report.methods.minimal_norm_methods`).

    Returns:
        ``frame``: rows by run, then epoch, then setting; robustness columns for every
        (split, norm, ε) evaluated in any run (empty elsewhere). ``settings``: one row per
        (settings id, method) with the method's options as canonical JSON. ``figures``:
        the key of every robustness column, and of the certified-radius columns
        :func:`~marginrobust.report.intervals.with_intervals` adds.
    """
    records = [r for run in runs for r in run.records]
    if minimal is None:
        minimal = minimal_norm_methods(records)
    labels = eps_labels(r["eps"] for r in records)
    groups = _groups(runs)
    # Ids in order of first appearance: the first settings a board's runs were evaluated
    # with are A, later ones B, C...
    ids = {sig: settings_id(k) for k, sig in enumerate(dict.fromkeys(g.signature for g in groups))}
    by_run: dict[str, list[_Group]] = defaultdict(list)
    for group in groups:
        by_run[group.run.label].append(group)
    rows = []
    for run in runs:
        identity, trajectories = run_identity(run), _trajectories(run)
        evaluated = set()
        run_rows = []
        for group in by_run[run.label]:
            evaluated.add(group.checkpoint)
            run_rows.append({**identity, "checkpoint": group.checkpoint, "n": group.n,
                             "seed": group.seed, "settings": ids[group.signature],
                             **trajectories[group.checkpoint],
                             **_figures(group.records, labels, minimal)})
        run_rows += [{**identity, "checkpoint": name, "n": None, "seed": None, "settings": None,
                      **trajectory} for name, trajectory in trajectories.items()
                     if name not in evaluated]
        rows += sorted(run_rows, key=_sort_key)
    order = _robust_order(records)
    robust = [*(f.column(labels) for f in order), SKIPPED]
    columns = [*IDENTITY, *SETTINGS, *TRAJECTORY, "n_flags",
               *[c for c in robust if any(c in r for r in rows)]]
    frame = _typed(pd.DataFrame(rows, columns=columns))
    return Tables(frame, _settings_table(groups, ids), FigureIndex.of(order, labels))


def leaderboard_tables(run_dirs: Sequence[Path | str], on_corrupt: str = "error") -> Tables:
    """The tables of some run folders, the frame with its intervals.

    Args:
        run_dirs: Run folders (each with ``run.json``; ``eval/`` may be missing).
        on_corrupt: ``error`` (default) or ``warn``: what a corrupt line in the middle of
            ``metrics.jsonl`` or ``records.jsonl`` does (a torn last line is dropped).

    Returns:
        :class:`Tables`: the frame described in the module docstring with its intervals,
        the settings table and the index of the robustness columns.

    Raises:
        UserError: A path is not a run folder, one is given twice, or a file is damaged.
    """
    runs = load_runs(run_dirs, on_corrupt)
    minimal = minimal_norm_methods(r for run in runs for r in run.records)
    tables = build_tables(runs, minimal)
    frame = with_intervals(tables.frame, tables.figures, load_all_distances(runs, minimal),
                           load_all_radii(runs))
    return Tables(frame, tables.settings, tables.figures)


def leaderboard_frame(run_dirs: Sequence[Path | str], on_corrupt: str = "error",
                      ) -> pd.DataFrame:
    """One row per (run, checkpoint, setting): identity, settings, trajectory, robustness.

    Args:
        run_dirs: Run folders (each with ``run.json``; ``eval/`` may be missing).
        on_corrupt: ``error`` (default) or ``warn``: what a corrupt line in the middle of
            ``metrics.jsonl`` or ``records.jsonl`` does (a torn last line is dropped).

    Returns:
        The frame described in the module docstring, with its intervals.

    Raises:
        UserError: A path is not a run folder, one is given twice, or a file is damaged.
    """
    return leaderboard_tables(run_dirs, on_corrupt).frame
