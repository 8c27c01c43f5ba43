"""Everything the report reads from disk, in one place: run folders → :class:`RunData`.

A run folder holds ``run.json``, ``metrics.jsonl``, ``checkpoints/epoch-*.pt`` and
``eval/`` (``records.jsonl`` and one ``.npz`` of per-point arrays per checkpoint). The
tables, plots and pages receive what is read here and never open a file themselves.

Readers stop at nothing silently: a torn last line of ``metrics.jsonl`` or
``records.jsonl`` (what a killed append leaves) is dropped, a corrupt line elsewhere is a
:class:`~marginrobust.errors.UserError` naming the file and line (or, with
``on_corrupt="warn"``, skipped with a printed warning and a count).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import UserError
from ..evaluate.store import EVAL_DIR, RECORDS, ArrayKey, infinities_restored
from ..io import RUN_FILE, read_jsonl, read_run_json
from ..train.checkpoints import list_checkpoints
from ..train.metrics_log import JSONL as METRICS_FILE

# Fields a record may lack: older records have no seed, config or skipped.
RECORD_DEFAULTS: dict[str, Any] = {"seed": None, "config": "", "skipped": None,
                                   "median_distance": None, "min_distance": None,
                                   "robust_acc": None, "clean_acc": None, "flags": ()}
DISTANCES = "distances"
RADIUS = "radius"
LIPSCHITZ = "certify-lipschitz"
# (split, norm, n, seed) of per-point distances: arrays of one (n, seed) belong to the same
# points, so only they may be combined. n and seed are None for arrays stored before
# settings were (their records carry no seed either).
DistanceKey = tuple[str, str, "int | None", "int | None"]


@dataclass
class RunData:
    """What the report needs of one run folder.

    Attributes:
        path: The folder as given.
        label: The run's name in tables (the folder's name; its path where two share one).
        info: The parsed ``run.json``.
        records: Evaluation records as dicts (all fields of :data:`RECORD_DEFAULTS` present,
            infinite distances restored, ``eps`` a float).
        metrics: The rows of ``metrics.jsonl``.
        checkpoints: Stems of the checkpoint files on disk (``epoch-NNNNNN``).
    """

    path: Path
    label: str
    info: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Distances:
    """Per-point minimal adversarial distances of one checkpoint, split and norm.

    Attributes:
        values: Per point, the smallest distance any minimal-norm attack found (0 on
            misclassified points, inf where every attack failed).
        attacks: The attacks the distances come from, sorted.
        per_attack: Each attack's (and option set's) own distances on the same points: the
            ``median_dist_*`` column is the smallest of their medians, so its bootstrap
            resamples all of them with the same points.
    """

    values: np.ndarray
    attacks: tuple[str, ...]
    per_attack: tuple[np.ndarray, ...] = field(default=(), compare=False)


def normalize_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored record with every optional field present and infinities restored.

    JSON has no infinity: an infinite distance is stored as null plus a
    ``{field}_infinite`` marker.

    Args:
        raw: One object of ``records.jsonl``.
    """
    rec = {**RECORD_DEFAULTS, **infinities_restored(raw)}
    rec["eps"] = float(rec["eps"])
    rec["config"] = rec["config"] or ""
    rec["flags"] = tuple(rec["flags"] or ())
    return rec


def read_records(run_dir: str | Path, on_corrupt: str = "error") -> list[dict[str, Any]]:
    """The evaluation records of a run, normalized (:func:`normalize_record`).

    Args:
        run_dir: The run folder.
        on_corrupt: ``error`` or ``warn`` (see the module docstring).
    """
    path = Path(run_dir) / EVAL_DIR / RECORDS
    return [normalize_record(r) for r in read_jsonl(path, on_corrupt=on_corrupt)]


def read_metrics_rows(run_dir: str | Path, on_corrupt: str = "error") -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (see the module docstring for damaged lines).

    Args:
        run_dir: The run folder.
        on_corrupt: ``error`` or ``warn``.
    """
    return read_jsonl(Path(run_dir) / METRICS_FILE, on_corrupt=on_corrupt)


def _run_info(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise UserError(f"no run directory at {path}")
    info = read_run_json(path)
    if info is None:
        raise UserError(f"{path} is not a run directory (it has no {RUN_FILE})")
    if not isinstance(info, dict) or not isinstance(info.get("run"), dict):
        raise UserError(f"{path / RUN_FILE} does not describe a run (no 'run' object)")
    return info


def load_runs(run_dirs: Sequence[Path | str], on_corrupt: str = "error") -> list[RunData]:
    """Read run folders for the report.

    Args:
        run_dirs: Run folders (each with ``run.json``; ``eval/`` may be missing).
        on_corrupt: ``error`` or ``warn``, for damaged lines of the JSON-lines files.

    Raises:
        UserError: None given, one given twice, a path that is not a run folder, or
            (``on_corrupt="error"``) a corrupt line in the middle of a JSON-lines file.
    """
    if not run_dirs:
        raise UserError("give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    resolved = [p.resolve() for p in paths]
    twice = next((p for p, r in zip(paths, resolved) if resolved.count(r) > 1), None)
    if twice is not None:
        raise UserError(f"run directory {twice} is given twice")
    names = [r.name for r in resolved]
    # Runs are labelled by folder name; two with the same name keep their path as given.
    labels = [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]
    runs = []
    for path, label in zip(paths, labels):
        info = _run_info(path)
        runs.append(RunData(path, label, info, read_records(path, on_corrupt),
                            read_metrics_rows(path, on_corrupt),
                            [p.stem for p in list_checkpoints(path)]))
    return runs


def read_arrays(run_dir: str | Path, checkpoint: str) -> dict[ArrayKey, np.ndarray]:
    """The per-point arrays the Evaluator stored for one checkpoint (empty if none).

    Names are read with :meth:`ArrayKey.parse` (the current layout and the first one);
    arrays under other names are left out.

    Args:
        run_dir: The run folder.
        checkpoint: Checkpoint name (file stem).
    """
    path = Path(run_dir) / EVAL_DIR / f"{checkpoint}.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as per-point arrays ({exc})") from None
    keys = {name: ArrayKey.parse(name) for name in raw}
    return {key: raw[name] for name, key in keys.items() if key is not None}


def load_distances(run_dir: str | Path, checkpoint: str,
                   minimal: Collection[str]) -> dict[DistanceKey, Distances]:
    """Per-point minimal adversarial distances of a checkpoint, per (split, norm, n, seed).

    Where several minimal-norm attacks (or one with several option sets) ran on the same
    points, each point keeps the smallest distance any of them found: every attack's
    distance bounds the true minimal distance from above, so the smallest is the tightest
    bound (and the robust accuracy read from it an upper bound).

    Args:
        run_dir: The run folder.
        checkpoint: Checkpoint name (file stem).
        minimal: The minimal-norm methods (see :mod:`marginrobust.report.methods`).
    """
    found: dict[DistanceKey, dict[str, list[np.ndarray]]] = {}
    for key, values in read_arrays(run_dir, checkpoint).items():
        if key.kind == DISTANCES and key.method in minimal and key.norm is not None:
            by = found.setdefault((key.split, key.norm, key.n, key.seed), {})
            by.setdefault(key.method, []).append(np.asarray(values, float))
    out = {}
    for where, by in found.items():
        arrays = [a for per_method in by.values() for a in per_method]
        if len({a.shape for a in arrays}) == 1:  # the same points, or nothing to combine
            out[where] = Distances(np.min(np.stack(arrays), axis=0), tuple(sorted(by)),
                                   tuple(arrays))
    return out


def load_radii(run_dir: str | Path, checkpoint: str) -> dict[DistanceKey, np.ndarray]:
    """Per-point Lipschitz-certified radii of a checkpoint, per (split, norm, n, seed).

    Misclassified points have radius 0 (the certificate's convention).

    Args:
        run_dir: The run folder.
        checkpoint: Checkpoint name (file stem).
    """
    return {(key.split, key.norm, key.n, key.seed): np.asarray(values, float)
            for key, values in read_arrays(run_dir, checkpoint).items()
            if key.kind == RADIUS and key.method == LIPSCHITZ and key.norm is not None}


T = TypeVar("T")


def pick_distances(found: Mapping[DistanceKey, T], split: str, norm: str,
                   n: int | None, seed: int | None) -> T | None:
    """The arrays of one leaderboard row's setting among one checkpoint's per-setting arrays.

    Arrays of the row's (n, seed); for a row whose records carry no seed (stored before
    settings were), the arrays of that time, which carry neither. Serves the distances of
    :func:`load_distances` and the radii of :func:`load_radii` alike.

    Args:
        found: What :func:`load_distances` (or :func:`load_radii`) gave for the row's
            checkpoint.
        split, norm: The figure.
        n, seed: The row's settings (None where not recorded, never NaN).
    """
    exact = found.get((split, norm, n, seed))
    if exact is None and seed is None:
        return found.get((split, norm, None, None))
    return exact


def _per_checkpoint(runs: Sequence[RunData], load: Callable[[Path, str], dict[DistanceKey, T]],
                    ) -> dict[tuple[str, str], dict[DistanceKey, T]]:
    # ``load`` of every evaluated checkpoint, keyed (run label, checkpoint); empty ones left out.
    out = {}
    for run in runs:
        for checkpoint in dict.fromkeys(r["checkpoint"] for r in run.records):
            found = load(run.path, checkpoint)
            if found:
                out[(run.label, checkpoint)] = found
    return out


def load_all_distances(runs: Sequence[RunData], minimal: Collection[str],
                       ) -> dict[tuple[str, str], dict[DistanceKey, Distances]]:
    """:func:`load_distances` of every evaluated checkpoint of some runs.

    Args:
        runs: Loaded runs.
        minimal: The minimal-norm methods.

    Returns:
        ``{(run label, checkpoint): {(split, norm, n, seed): distances}}``, checkpoints without
        distances left out.
    """
    return _per_checkpoint(runs, lambda path, checkpoint: load_distances(path, checkpoint,
                                                                          minimal))


def load_all_radii(runs: Sequence[RunData],
                   ) -> dict[tuple[str, str], dict[DistanceKey, np.ndarray]]:
    """:func:`load_radii` of every evaluated checkpoint of some runs.

    Args:
        runs: Loaded runs.

    Returns:
        ``{(run label, checkpoint): {(split, norm, n, seed): radii}}``, checkpoints without
        radii left out.
    """
    return _per_checkpoint(runs, load_radii)
