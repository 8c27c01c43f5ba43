"""Typed evaluation results and the per-run results store.

A figure is identified by everything that decides it, :class:`RecordKey`: the checkpoint,
the split, the method, the threat (norm, ε), the points (their number and seed) and the
method's options (``config``, canonical JSON). Per-point arrays carry the same settings in
their :class:`ArrayKey`, so results of other settings are never taken for these ones.
Strings appear only at the file boundary (:meth:`ArrayKey.to_str`, :meth:`ArrayKey.parse`).

A run's evaluation lives in ``RUN_DIR/eval/``:

    records.jsonl     one record per figure (:class:`RecordKey`: its fields above)
    <checkpoint>.npz  per-point distances, robust flags and certified radii of that
                      checkpoint, named by :meth:`ArrayKey.to_str` (settings
                      included, so arrays of other settings are never reused)
    adversarials/<checkpoint>.npz
                      the minimal-norm adversarial points (only with warm-started attacks;
                      inputs for the next checkpoint, not results, so never published)
    points.json       the fixed evaluation points, per (n, seed) and split:
                      ``{"format": 2, "selections": [{"n": 20, "seed": 0,
                      "points": {"test": [...], "train": [...]}}, ...]}``

Evaluations with other settings are stored beside the earlier ones. The arrays and points
files are rewritten atomically; ``records.jsonl`` is appended to (rewritten atomically
only when a figure is replaced), after repairing a torn last line a killed append left. So
a killed evaluation leaves the last complete state, and a rerun skips every finished
figure. A corrupt line elsewhere is reported (an error naming the file and line, or with
``on_corrupt="warn"`` a printed warning and a count), never skipped silently.

The first layout of ``points.json``, ``{split: indices}``, written before points were kept
per settings, is read as a selection of unknown (n, seed): the records of that time carry
no seed either, so its points stay with them and are kept on every rewrite.
"""

from __future__ import annotations

import io as _bytes_io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import UserError
from ..io import append_lines, atomic_write, atomic_write_text, read_jsonl

EVAL_DIR = "eval"
ADVERSARIALS_DIR = "adversarials"
RECORDS = "records.jsonl"
POINTS = "points.json"
POINTS_FORMAT = 2


# The config of figures that no option decides (certificates, clean accuracy).
NO_OPTIONS = "{}"
# The config of records and arrays written before settings were stored: unknown.
UNKNOWN = ""
DISTANCE_FIELDS = ("median_distance", "min_distance")
# The record fields a caller may fill from the checkpoint's context (where it sits on the
# trajectory, its training metrics); the others are the evaluation's own.
CONTEXT_FIELDS = ("epoch", "step", "train_wall_s", "log10_loss", "train_acc", "test_acc",
                  "normalized_margin", "product_margin", "smoothed_margin", "run")


def canonical_json(obj: Any) -> str:
    """``obj`` as canonical JSON: sorted keys, no spaces (equal options, equal text)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=_plain)


def _plain(value: Any) -> Any:
    # numpy scalars and the like; anything else by type name, never by repr (a repr may
    # hold a memory address, which would make every run's config look new)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return f"<{type(value).__name__}>"


class RecordKey(NamedTuple):
    """Identity of a figure: two records with equal keys measure the same thing."""

    checkpoint: str
    split: str
    method: str
    norm: str
    eps: float
    n: int
    seed: int | None
    config: str


@dataclass
class EvalRecord:
    """One robustness figure of one checkpoint.

    Attributes:
        checkpoint: Checkpoint name (file stem) or a label for in-memory models.
        split: ``train`` or ``test``.
        method: Attack name (``autoattack``, ``pgd``, ``fmn``...), ``certify-lipschitz``,
            ``certify-ibp``, ``certified`` (a point certified by either certificate), or
            ``worst`` (per point, the worst case over the attacks).
        norm: ``L2`` or ``Linf``.
        eps: Perturbation budget.
        n: Number of evaluated points.
        clean_acc: Accuracy on the unperturbed points.
        robust_acc: Fraction of points still correct under the method (certified
            fraction for certificates); None when the method was ``skipped``.
        median_distance: Median per-point minimal adversarial distance (minimal-norm
            attacks; 0 for misclassified points, inf where the attack failed) or median
            certified radius; None for fixed-ε methods.
        min_distance: The smallest of those per-point distances or radii (for the
            Lipschitz certificate on training points: the smallest certified radius,
            invariant to rescaling θ like the normalized margin).
        seconds: Wall time spent on this figure.
        epoch, step, train_wall_s: Where the checkpoint sits on the trajectory.
        log10_loss, train_acc, test_acc, normalized_margin, product_margin,
        smoothed_margin: The checkpoint's training metrics.
        flags: Consistency violations found for this (checkpoint, split, norm, ε).
        run: The run's name.
        seed: Seed of the point selection and of the attack (None: not recorded, for
            records written before it was).
        config: The options that decide the figure, as canonical JSON: an attack's
            options (e.g. AutoAttack's version and attack set, PGD's steps), whether it
            was warm-started, for ``worst`` the attacks it takes the worst over with
            their options, ``{}`` for certificates; empty: not recorded.
        skipped: Why the method could not run (e.g. a model that cannot be certified);
            None when it ran.
    """

    checkpoint: str
    split: str
    method: str
    norm: str
    eps: float
    n: int
    clean_acc: float
    robust_acc: float | None
    median_distance: float | None = None
    min_distance: float | None = None
    seconds: float = 0.0
    epoch: int | None = None
    step: int | None = None
    train_wall_s: float | None = None
    log10_loss: float | None = None
    train_acc: float | None = None
    test_acc: float | None = None
    normalized_margin: float | None = None
    product_margin: float | None = None
    smoothed_margin: float | None = None
    flags: list[str] = field(default_factory=list)
    run: str | None = None
    seed: int | None = None
    config: str = UNKNOWN
    skipped: str | None = None

    @property
    def key(self) -> RecordKey:
        """Identity of the figure: (checkpoint, split, method, norm, ε, n, seed, config)."""
        return RecordKey(self.checkpoint, self.split, self.method, self.norm, float(self.eps),
                         int(self.n), self.seed, self.config)

    def to_json(self) -> dict[str, Any]:
        """A JSON object (no infinities: JSON has none)."""
        d = asdict(self)
        # An infinite distance (the attack failed on those points) is stored as null plus
        # a marker (infinities_restored reads it back); the per-point arrays are in the .npz.
        infinite = [k for k in DISTANCE_FIELDS if d[k] is not None and not math.isfinite(d[k])]
        return {**d, **{k: None for k in infinite}, **{f"{k}_infinite": True for k in infinite}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalRecord:
        """The record of :meth:`to_json`'s object (unknown fields are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in infinities_restored(d).items() if k in names})


def infinities_restored(d: Mapping[str, Any]) -> dict[str, Any]:
    """A ``records.jsonl`` object with its infinite distances back (see :meth:`to_json`)."""
    return {**d, **{k: math.inf for k in DISTANCE_FIELDS if d.get(f"{k}_infinite")}}


@dataclass(frozen=True)
class ArrayKey:
    """Key of one per-point array (or a timing) of one checkpoint.

    Attributes:
        split: ``test`` or ``train``.
        method: ``clean``, an attack name, ``certify-lipschitz`` or ``certify-ibp``.
        norm: ``L2``, ``Linf``, or None where the array holds for both norms.
        eps: The budget for per-ε arrays, else None.
        kind: ``correct`` (clean), ``robust``, ``distances``, ``radius``, ``certified``,
            ``seconds`` or ``adversarial`` (warm-start points).
        n: Number of points (None: not recorded).
        seed: Seed of points and attack (None: not recorded).
        config: The method's options as canonical JSON, as in :class:`EvalRecord`.
    """

    split: str
    method: str
    norm: str | None
    eps: float | None
    kind: str
    n: int | None = None
    seed: int | None = None
    config: str = UNKNOWN

    def to_str(self) -> str:
        """The name of the array in a ``.npz`` file."""
        parts = [self.split, self.method, self.norm, self.eps, self.kind, self.n, self.seed]
        text = "/".join("-" if p is None else repr(p) if isinstance(p, float) else str(p)
                        for p in parts)
        # The config goes last: it may itself contain slashes.
        return f"{text}/{self.config}"

    @classmethod
    def parse(cls, text: str) -> ArrayKey | None:
        """The key named by :meth:`to_str`, or by the layout written before settings
        were stored (then with unknown n, seed and config); None if neither.
        """
        parts = text.split("/", 7)
        if len(parts) == 8 and parts[7].startswith("{"):
            split, method, norm, eps, kind, n, seed, config = parts
            try:
                return cls(split, method, _opt(norm), None if eps == "-" else float(eps),
                           kind, None if n == "-" else int(n),
                           None if seed == "-" else int(seed), config)
            except ValueError:
                return None
        return _parse_legacy(text.split("/"))


def _opt(text: str) -> str | None:
    return None if text == "-" else text


def _parse_legacy(parts: list[str]) -> ArrayKey | None:
    """Keys of the old layout ``split/method/norm[/eps]/kind``, ``split/clean_correct``
    and ``split/certify-lipschitz/seconds``."""
    try:
        if len(parts) == 2 and parts[1] == "clean_correct":
            return ArrayKey(parts[0], "clean", None, None, "correct")
        if len(parts) == 3:
            return ArrayKey(parts[0], parts[1], None, None, parts[2])
        if len(parts) == 4:
            return ArrayKey(parts[0], parts[1], parts[2], None, parts[3])
        if len(parts) == 5:
            return ArrayKey(parts[0], parts[1], parts[2], float(parts[3]), parts[4])
    except ValueError:
        pass
    return None


class ResultsStore:
    """The evaluation records and per-point arrays of one run directory.

    Args:
        root: The run directory (records go to ``root/eval``).
        on_corrupt: What a corrupt line in the middle of ``records.jsonl`` does:
            ``error`` (a :class:`UserError` naming the file and line) or ``warn``
            (skipped, with a printed warning that counts them).
    """

    def __init__(self, root: str | Path, on_corrupt: str = "error") -> None:
        if on_corrupt not in ("error", "warn"):
            raise UserError(f"on_corrupt must be error or warn, not {on_corrupt!r}")
        self.dir = Path(root) / EVAL_DIR
        self.path = self.dir / RECORDS
        self._records = [EvalRecord.from_json(d) for d in read_jsonl(self.path, on_corrupt)]
        self._by_key = {r.key: r for r in self._records}
        # Kept up to date by add(), so that asking what is done costs nothing per record:
        # the runner asks once per (checkpoint, split), and the store only grows.
        self._done = frozenset(k for k, r in self._by_key.items() if r.skipped is None)

    @property
    def records(self) -> list[EvalRecord]:
        """Every stored record, oldest first."""
        return list(self._records)

    def done(self) -> frozenset[RecordKey]:
        """Keys of the figures already computed (skipped ones are tried again)."""
        return self._done

    def skipped(self) -> dict[RecordKey, str]:
        """Keys of the stored skipped figures, with the reason each was skipped."""
        return {k: r.skipped for k, r in self._by_key.items() if r.skipped is not None}

    def add(self, records: Iterable[EvalRecord]) -> None:
        """Store records, replacing any with the same key.

        New figures are appended (cost independent of the store's size); replacing a
        stored figure rewrites the file atomically.
        """
        new = list(records)
        if not new:
            return
        keys = {r.key for r in new}
        if keys & self._by_key.keys():
            self._records = [r for r in self._records if r.key not in keys] + new
            atomic_write_text(self.path, _lines(self._records))
            self._by_key = {r.key: r for r in self._records}
            self._done = frozenset(k for k, r in self._by_key.items() if r.skipped is None)
        else:
            self._records += new
            append_lines(self.path, _lines(new).splitlines())
            self._by_key.update((r.key, r) for r in new)
            self._done = self._done | {r.key for r in new if r.skipped is None}

    # ------------------------------------------------------------------ per-point arrays
    def arrays_path(self, checkpoint: str) -> Path:
        """The ``.npz`` of a checkpoint's per-point arrays."""
        return self.dir / f"{checkpoint}.npz"

    def load_arrays(self, checkpoint: str) -> dict[ArrayKey, np.ndarray]:
        """Per-point arrays of a checkpoint (empty if none yet)."""
        return _typed(_load_npz(self.arrays_path(checkpoint)))

    def save_arrays(self, checkpoint: str, arrays: Mapping[ArrayKey, np.ndarray]) -> None:
        """Merge ``arrays`` into the checkpoint's .npz, atomically."""
        _merge_npz(self.arrays_path(checkpoint), arrays)

    def adversarials_path(self, checkpoint: str) -> Path:
        """The ``.npz`` of a checkpoint's warm-start points."""
        return self.dir / ADVERSARIALS_DIR / f"{checkpoint}.npz"

    def load_adversarials(self, checkpoint: str) -> dict[ArrayKey, np.ndarray]:
        """A checkpoint's stored adversarial points (empty if none)."""
        return _typed(_load_npz(self.adversarials_path(checkpoint)))

    def save_adversarials(self, checkpoint: str, arrays: Mapping[ArrayKey, np.ndarray]) -> None:
        """Merge adversarial points into the checkpoint's file, atomically."""
        _merge_npz(self.adversarials_path(checkpoint), arrays)

    # ------------------------------------------------------------------ points
    def selections(self) -> list[dict[str, Any]]:
        """Every stored selection: ``{"n", "seed", "points": {split: indices}}``
        (n and seed None for points stored before they were kept per settings)."""
        path = self.dir / POINTS
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is not valid JSON (the file is damaged)") from None
        if isinstance(data, dict) and data.get("format") == POINTS_FORMAT:
            return list(data["selections"])
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            return [{"n": None, "seed": None, "points": data}]
        raise UserError(f"{path} is not a points file of this version")

    def load_points(self, n: int, seed: int) -> dict[str, list[int]]:
        """The stored indices per split of the selection (n, seed) (empty if none)."""
        for sel in self.selections():
            if sel["n"] == n and sel["seed"] == seed:
                return {s: list(v) for s, v in sel["points"].items()}
        return {}

    def save_points(self, n: int, seed: int, points: Mapping[str, Sequence[int]]) -> None:
        """Store the indices of the selection (n, seed), merged with its stored splits."""
        selections = self.selections()
        for sel in selections:
            if sel["n"] == n and sel["seed"] == seed:
                sel["points"] = {**sel["points"], **{s: list(v) for s, v in points.items()}}
                break
        else:
            selections.append({"n": n, "seed": seed,
                               "points": {s: list(v) for s, v in points.items()}})
        text = json.dumps({"format": POINTS_FORMAT, "selections": selections}) + "\n"
        path = self.dir / POINTS
        if not (path.exists() and path.read_text() == text):  # a read-only run stays unwritten
            atomic_write_text(path, text)

    def frame(self) -> Any:
        """The records as a pandas DataFrame (one row per figure)."""
        return records_frame(self._records)


def _typed(raw: dict[str, np.ndarray]) -> dict[ArrayKey, np.ndarray]:
    out = {}
    for name, value in raw.items():
        key = ArrayKey.parse(name)
        if key is not None:
            out[key] = value
    return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _merge_npz(path: Path, arrays: Mapping[ArrayKey, np.ndarray]) -> None:
    """Merge ``arrays`` into the .npz at ``path`` (created if absent), atomically.

    Arrays already in the file are kept under their own names, those of other settings
    and of the first layout too.
    """
    merged = {**_load_npz(path), **{k.to_str(): np.asarray(v) for k, v in arrays.items()}}
    buf = _bytes_io.BytesIO()
    np.savez_compressed(buf, **merged)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _lines(records: Iterable[EvalRecord]) -> str:
    return "".join(json.dumps(r.to_json(), allow_nan=False) + "\n" for r in records)


def records_frame(records: Iterable[EvalRecord]) -> Any:
    """A pandas DataFrame of records, numbers as numbers (one row per figure)."""
    import pandas as pd

    rows = [asdict(r) for r in records]
    columns = [f.name for f in fields(EvalRecord)]
    return pd.DataFrame(rows, columns=columns)
