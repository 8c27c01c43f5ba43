"""The state of one evaluation (one model on one split's points) and its typed results.

:class:`PriorResults` is what an earlier, interrupted evaluation left (the runner passes
it in to resume); :class:`Evaluation` is what the engine hands back; :class:`Unit` builds
the keys of one evaluation's figures and arrays, so every part of the engine names them
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .store import CONTEXT_FIELDS, NO_OPTIONS, ArrayKey, EvalRecord, RecordKey, records_frame


@dataclass(frozen=True)
class PriorResults:
    """What an earlier evaluation of the same checkpoint and split left (for resuming).

    Attributes:
        done: Keys of the figures already stored (not computed again).
        skipped: Keys of stored skipped figures with their reason: tried again, and
            recorded again only if the reason changed.
        arrays: Stored per-point arrays (used where their key matches exactly).
        starts: With warm starts, the previous checkpoint's adversarial points.
    """

    done: frozenset[RecordKey] = frozenset()
    skipped: Mapping[RecordKey, str] = field(default_factory=dict)
    arrays: Mapping[ArrayKey, np.ndarray] = field(default_factory=dict)
    starts: Mapping[ArrayKey, np.ndarray] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The results of one model on one split's points.

    Attributes:
        split: The split's name.
        checkpoint: The model's label.
        records: The new figures (stored ones given as done are not repeated).
        arrays: The per-point arrays of these settings: clean correctness, distances,
            per-ε robustness, radii, certificates and timings.
        adversarials: With warm starts, the minimal-norm adversarial points (inputs for
            the next checkpoint, not results).
    """

    split: str
    checkpoint: str
    records: list[EvalRecord]
    arrays: dict[ArrayKey, np.ndarray]
    adversarials: dict[ArrayKey, np.ndarray]

    def array(self, method: str, kind: str, norm: str | None = None,
              eps: float | None = None) -> np.ndarray:
        """The array of ``method`` and ``kind`` (e.g. ``("fmn", "distances", "L2")``)."""
        for key, value in self.arrays.items():
            if (key.method, key.kind, key.norm) == (method, kind, norm) and (
                    key.eps == (None if eps is None else float(eps))):
                return value
        raise KeyError(f"no {kind} array of {method} {norm or ''} {eps or ''}".strip())

    def frame(self) -> Any:
        """The records as a pandas DataFrame."""
        return records_frame(self.records)


class Unit:
    """One model on one split's points: the keys, records and arrays of one evaluation."""

    def __init__(self, seed: int, split: str, checkpoint: str, n: int,
                 context: dict[str, Any], prior: PriorResults) -> None:
        self.seed, self.split, self.checkpoint, self.n = seed, split, checkpoint, n
        self.context = {k: v for k, v in context.items() if k in CONTEXT_FIELDS}
        self.prior = prior
        self.records: list[EvalRecord] = []
        self.arrays: dict[ArrayKey, np.ndarray] = {}
        self.adversarials: dict[ArrayKey, np.ndarray] = {}

    def akey(self, method: str, norm: str | None, eps: float | None, kind: str,
             config: str = NO_OPTIONS) -> ArrayKey:
        return ArrayKey(self.split, method, norm, None if eps is None else float(eps), kind,
                        self.n, self.seed, config)

    def rkey(self, method: str, norm: str, eps: float, config: str) -> RecordKey:
        return RecordKey(self.checkpoint, self.split, method, norm, float(eps), self.n,
                         self.seed, config)

    def done(self, method: str, norm: str, eps: float, config: str) -> bool:
        return self.rkey(method, norm, eps, config) in self.prior.done

    def get(self, key: ArrayKey) -> np.ndarray | None:
        """An array of this evaluation, or one stored earlier under the same key."""
        if key not in self.arrays and key in self.prior.arrays:
            self.arrays[key] = self.prior.arrays[key]
        return self.arrays.get(key)

    def record(self, method: str, norm: str, eps: float, config: str, clean: np.ndarray,
               robust: np.ndarray | None, seconds: float,
               distances: np.ndarray | None = None, skipped: str | None = None) -> None:
        self.records.append(EvalRecord(
            checkpoint=self.checkpoint, split=self.split, method=method, norm=norm,
            eps=float(eps), n=len(clean), clean_acc=float(clean.mean()),
            robust_acc=None if robust is None else float(robust.mean()),
            median_distance=None if distances is None else float(np.median(distances)),
            min_distance=None if distances is None else float(np.min(distances)),
            seconds=seconds, seed=self.seed, config=config, skipped=skipped,
            **self.context))
