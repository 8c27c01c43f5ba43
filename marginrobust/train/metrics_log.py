"""Per-epoch metrics on disk: ``metrics.jsonl`` (the record) and ``metrics.csv`` (flat).

Both files are append-only, one row per accepted epoch (epoch 0 is the initial model).
Every append first cuts a torn last line left by a killed writer, so no row is ever glued
onto half of another. On resume, rows past the resumed epoch (written by the killed
process after its last resume file) are dropped too, so the files end exactly as an
uninterrupted run's would. Reading is strict: a torn last line is tolerated, a corrupt
line anywhere else is an error naming the file and line, never a silent truncation.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import distributed
from ..io import append_lines, atomic_write_text, read_jsonl
from .callbacks import Callback

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


def read_metrics(run_dir: str | Path, on_corrupt: str = "error") -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (absent file: none).

    A torn last line, as a killed append leaves, is dropped. A corrupt line elsewhere
    raises a :class:`~marginrobust.errors.UserError` naming the file and line, or with
    ``on_corrupt="warn"`` is skipped with a printed warning.
    """
    return read_jsonl(Path(run_dir) / JSONL, on_corrupt=on_corrupt)


def _dumps(record: dict[str, Any]) -> str:
    # Strict JSON: a non-finite number would be a bug upstream, so refuse it loudly.
    return json.dumps(record, allow_nan=False)


def _csv_lines(columns: list[str], rows: Iterable[dict[str, Any]], header: bool) -> list[str]:
    """CSV lines (without newlines) of flattened rows, the header first if asked."""
    buf = io.StringIO()
    # "\n" endings, so the lines go through the same append as the JSON lines.
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    # Split on "\n" alone (not splitlines): joined back with "\n", the bytes are the same.
    return buf.getvalue().split("\n")[:-1]


class MetricsWriter(Callback):
    """Appends every epoch record to ``metrics.jsonl`` and ``metrics.csv``.

    Under a process group it checks the records on every rank (the same records: a
    non-finite one stops every rank) and writes on rank 0 only.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.columns: list[str] | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not distributed.is_main_process():
            return
        keep = [] if trainer.record is None else [
            r for r in read_metrics(self.run_dir) if r["epoch"] <= trainer.epoch]
        atomic_write_text(self.run_dir / JSONL, "".join(_dumps(r) + "\n" for r in keep))
        flat = [flatten_record(r) for r in keep]
        self.columns = list(flat[0]) if flat else None
        lines = _csv_lines(self.columns, flat, header=True) if self.columns else []
        atomic_write_text(self.run_dir / CSV, "".join(line + "\n" for line in lines))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite metrics at epoch {record['epoch']}: {bad}")
        if not distributed.is_main_process():
            return
        append_lines(self.run_dir / JSONL, [_dumps(record)])
        flat = flatten_record(record)
        new = self.columns is None
        if new:
            self.columns = list(flat)
        assert self.columns is not None
        append_lines(self.run_dir / CSV, _csv_lines(self.columns, [flat], header=new))
