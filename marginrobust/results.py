"""Typed evaluation records and the per-run results store.

A run's evaluation lives in ``RUN_DIR/eval/``:

    records.jsonl     one record per (checkpoint, split, attack or certificate, norm, ε)
    <checkpoint>.npz  per-point distances and certified radii of that checkpoint
    adversarials/<checkpoint>.npz
                      the minimal-norm adversarial points (only with warm-started attacks;
                      inputs for the next checkpoint, not results, so never published)
    points.json       the fixed evaluation points (indices per split), same for all checkpoints

The arrays and points files are rewritten atomically; ``records.jsonl`` is appended to
(rewritten atomically only when a figure is replaced), and a torn last line left by a
killed process is ignored on reading. So a killed evaluation leaves the last complete
state, and a rerun skips every finished (checkpoint, split, attack, norm, ε).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .train.checkpoints import atomic_write

EVAL_DIR = "eval"
ADVERSARIALS_DIR = "adversarials"
RECORDS = "records.jsonl"


@dataclass
class EvalRecord:
    """One robustness figure of one checkpoint.

    Attributes:
        checkpoint: Checkpoint name (file stem) or a label for in-memory models.
        split: ``train`` or ``test``.
        method: Attack name (``autoattack``, ``pgd``, ``fmn``...), ``certify-lipschitz``,
            ``certify-ibp``, or ``worst`` (per point, the worst case over the attacks).
        norm: ``L2`` or ``Linf``.
        eps: Perturbation budget.
        n: Number of evaluated points.
        clean_acc: Accuracy on the unperturbed points.
        robust_acc: Fraction of points still correct under the method (certified
            fraction for certificates).
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
    """

    checkpoint: str
    split: str
    method: str
    norm: str
    eps: float
    n: int
    clean_acc: float
    robust_acc: float
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

    @property
    def key(self) -> tuple[str, str, str, str, float]:
        """Identity of a figure: (checkpoint, split, method, norm, ε)."""
        return (self.checkpoint, self.split, self.method, self.norm, float(self.eps))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no infinity: an infinite distance (the attack failed on those points)
        # is stored as null plus a marker, with the per-point arrays in the .npz.
        for key in ("median_distance", "min_distance"):
            if d[key] is not None and not math.isfinite(d[key]):
                d[key] = None
                d[f"{key}_infinite"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalRecord:
        names = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in names})
        for key in ("median_distance", "min_distance"):
            if d.get(f"{key}_infinite"):
                setattr(rec, key, math.inf)
        return rec


class ResultsStore:
    """The evaluation records and per-point arrays of one run directory.

    Args:
        root: The run directory (records go to ``root/eval``).
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / EVAL_DIR
        self.path = self.dir / RECORDS
        self._records: list[EvalRecord] = self._read()
        self._keys = {r.key for r in self._records}

    def _read(self) -> list[EvalRecord]:
        if not self.path.exists():
            return []
        out = []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        for i, line in enumerate(lines):
            try:
                out.append(EvalRecord.from_json(json.loads(line)))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise
                # A killed append leaves a torn last line; its figure is simply redone.
        return out

    @property
    def records(self) -> list[EvalRecord]:
        return list(self._records)

    def done(self) -> set[tuple[str, str, str, str, float]]:
        """Keys of the figures already stored."""
        return set(self._keys)

    def add(self, records: Iterable[EvalRecord]) -> None:
        """Store records, replacing any with the same key.

        New figures are appended (cost independent of the store's size); replacing a
        stored figure rewrites the file atomically.
        """
        new = list(records)
        keys = {r.key for r in new}
        if keys & self._keys:
            self._records = [r for r in self._records if r.key not in keys] + new
            text = _lines(self._records)
            atomic_write(self.path, lambda fh: fh.write(text.encode()))
        else:
            self._records += new
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(_lines(new))
                fh.flush()
                os.fsync(fh.fileno())
        self._keys |= keys

    def arrays_path(self, checkpoint: str) -> Path:
        return self.dir / f"{checkpoint}.npz"

    def load_arrays(self, checkpoint: str) -> dict[str, np.ndarray]:
        """Per-point arrays of a checkpoint (empty if none yet)."""
        return _load_npz(self.arrays_path(checkpoint))

    def save_arrays(self, checkpoint: str, arrays: dict[str, np.ndarray]) -> None:
        """Merge ``arrays`` into the checkpoint's .npz, atomically."""
        _merge_npz(self.arrays_path(checkpoint), arrays)

    def adversarials_path(self, checkpoint: str) -> Path:
        return self.dir / ADVERSARIALS_DIR / f"{checkpoint}.npz"

    def load_adversarials(self, checkpoint: str) -> dict[str, np.ndarray]:
        """A checkpoint's stored adversarial points (empty if none)."""
        return _load_npz(self.adversarials_path(checkpoint))

    def save_adversarials(self, checkpoint: str, arrays: dict[str, np.ndarray]) -> None:
        """Merge adversarial points into the checkpoint's file, atomically."""
        _merge_npz(self.adversarials_path(checkpoint), arrays)

    def load_points(self) -> dict[str, list[int]] | None:
        path = self.dir / "points.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_points(self, points: dict[str, list[int]]) -> None:
        text = json.dumps(points)
        atomic_write(self.dir / "points.json", lambda fh: fh.write(text.encode()))

    def frame(self) -> Any:
        """The records as a pandas DataFrame (one row per figure)."""
        return records_frame(self._records)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _merge_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Merge ``arrays`` into the .npz at ``path`` (created if absent), atomically."""
    merged = {**_load_npz(path), **arrays}
    buf = io.BytesIO()
    np.savez_compressed(buf, **merged)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _lines(records: Iterable[EvalRecord]) -> str:
    return "".join(json.dumps(r.to_json(), allow_nan=False) + "\n" for r in records)


def records_frame(records: Iterable[EvalRecord]) -> Any:
    """A pandas DataFrame of records, numbers as numbers."""
    import pandas as pd

    rows = [asdict(r) for r in records]
    columns = [f.name for f in fields(EvalRecord)]
    return pd.DataFrame(rows, columns=columns)
