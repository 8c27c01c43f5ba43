"""Per-epoch metrics on disk: ``metrics.jsonl`` (the record) and ``metrics.csv`` (flat).

Both files are append-only, one row per accepted epoch (epoch 0 is the initial model).
On resume, rows past the resumed epoch (written by the killed process after its last
resume file) and any torn last line are dropped, so the files end exactly as an
uninterrupted run's would.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import Callback
from .checkpoints import atomic_write

if TYPE_CHECKING:
    from .trainer import Trainer

JSONL = "metrics.jsonl"
CSV = "metrics.csv"


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """Lists become numbered columns (``layer_norm_1``, ``near_support_1``...), None stays empty."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "layer_norms":
            flat.update({f"layer_norm_{i + 1}": v for i, v in enumerate(value)})
        elif key == "near_support":
            flat.update({f"near_support_{k + 1}": v for k, v in enumerate(value)})
        else:
            flat[key] = value
    return flat


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a torn last line is ignored)."""
    path = Path(run_dir) / JSONL
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _dumps(record: dict[str, Any]) -> str:
    # Strict JSON: a non-finite number would be a bug upstream, so refuse it loudly.
    return json.dumps(record, allow_nan=False)


class MetricsWriter(Callback):
    """Appends every epoch record to ``metrics.jsonl`` and ``metrics.csv``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.columns: list[str] | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        keep = [] if trainer.record is None else [
            r for r in read_metrics(self.run_dir) if r["epoch"] <= trainer.epoch]
        atomic_write(self.run_dir / JSONL,
                     lambda fh: fh.write("".join(_dumps(r) + "\n" for r in keep).encode()))
        self.columns = list(flatten_record(keep[0])) if keep else None
        buf = io.StringIO()
        if keep:
            writer = csv.DictWriter(buf, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(flatten_record(r) for r in keep)
        atomic_write(self.run_dir / CSV, lambda fh: fh.write(buf.getvalue().encode()))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite metrics at epoch {record['epoch']}: {bad}")
        with open(self.run_dir / JSONL, "a") as fh:
            fh.write(_dumps(record) + "\n")
        flat = flatten_record(record)
        new = self.columns is None
        if new:
            self.columns = list(flat)
        with open(self.run_dir / CSV, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(flat)
