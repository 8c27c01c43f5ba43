"""What decides a training run: :class:`TrainConfig` and the checks of its values.

Kept apart from the loop (:mod:`marginrobust.train.trainer`) so that the options can be
built and validated, by the command line or a caller, without the loop's machinery.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..io import resolve_device
from ..precision import DEFAULT_PRECISION, check_precision
from .schedules import DEFAULT_WALK, SCHEDULES

__all__ = ["DEFAULT_LR", "TrainConfig"]

DEFAULT_LR = {"loss-based": 0.1, "loss-based-capped": 0.1, "loss-based-fast": 0.1,
              "constant": 0.01}


@dataclass
class TrainConfig:
    """Everything that decides a training run.

    Attributes:
        epochs: Accepted epochs to train (rolled-back attempts do not count).
        batch_size: Mini-batch size; 0 means full batch (paper: 100).
        schedule: ``loss-based`` (paper's, with rollback), ``loss-based-capped`` (the same
            rate with α capped below its last rollback: fewer wasted epochs),
            ``loss-based-fast`` (the paper's step and descent test; an attempt that ends
            an epoch above the last accepted loss runs up to 3 more epochs before it is
            judged, and an alarm every 2 steps ends an exploding one) or ``constant``.
        lr: α_0 for ``loss-based`` (paper: 0.1), η for ``constant`` (paper: 0.01 MNIST,
            0.1 CIFAR-10); None picks those defaults.
        lr_up: α factor after an accepted epoch (paper: 2^{1/5}; ``loss-based-fast``:
            2^{1/20}); None picks the schedule's own.
        lr_down: α divisor after a rollback (paper: 2^{1/10}; ``loss-based-fast``:
            2^{1/5}); None picks the schedule's own.
        alpha_min: Stop once α < alpha_min (paper: 1e-50).
        explode_ratio: Roll back when a batch's mean loss exceeds this multiple of the
            last full-set mean loss (paper: 500-600), or is not finite.
        max_minutes: Stop after this much training wall time (None: no limit).
        target_log10_loss: Stop once log10 of the summed training loss is at or below it.
        seed: Seed of the data order (the model's initialisation is seeded by its builder).
        device: ``auto`` (cuda when present), ``cpu`` or ``cuda``.
        eval_batch_size: Batch size of the per-epoch full-set measurements.
        precision: Kernels of the training steps: ``fp32`` (exact, the default) or
            ``tf32`` (TF32 matmuls and convolutions on a GPU; no effect on a CPU). The
            per-epoch measurements (losses, margins) are always exact float32 with float64
            reductions, whatever this says.
        deterministic: Deterministic algorithms, no cuDNN autotuning, the cuBLAS workspace
            setting: a resumed run equals an uninterrupted one bit for bit on a GPU too.
    """

    epochs: int = 100
    batch_size: int = 100
    schedule: str = "loss-based"
    lr: float | None = None
    lr_up: float | None = None
    lr_down: float | None = None
    alpha_min: float = 1e-50
    explode_ratio: float = 500.0
    max_minutes: float | None = None
    target_log10_loss: float | None = None
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    precision: str = DEFAULT_PRECISION
    deterministic: bool = True

    def validate(self) -> TrainConfig:
        """Check values; returns self with ``lr``, ``lr_up`` and ``lr_down`` filled in.

        Raises:
            UserError: one sentence naming the first offending value as the command line
                names it (``--explode-ratio``), or by its field name where the command
                line has no such option (``lr_up``).
        """
        _check_int("--epochs", self.epochs, 0, "a whole number, 0 or more")
        _check_int("--batch-size", self.batch_size, 0, "a whole number, 0 (full batch) or more")
        _check_int("eval_batch_size", self.eval_batch_size, 1, "a positive whole number")
        _check_int("--seed", self.seed, None, "a whole number")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, "
                            f"not {self.schedule!r}")
        if self.lr is not None:
            _check_number("--lr", self.lr, lambda v: v > 0, "a positive number")
        if self.lr_up is not None:
            _check_number("lr_up", self.lr_up, lambda v: v >= 1, ">= 1")
        if self.lr_down is not None:
            _check_number("lr_down", self.lr_down, lambda v: v > 1, "> 1")
        _check_number("alpha_min", self.alpha_min, lambda v: v >= 0, "0 or more")
        _check_number("--explode-ratio", self.explode_ratio, lambda v: v > 1, "> 1")
        if self.max_minutes is not None:
            _check_number("--max-minutes", self.max_minutes, lambda v: v > 0,
                          "a positive number of minutes (leave it out for no limit)")
        if self.target_log10_loss is not None:
            # Finite too: run.json is strict JSON, and "never" is leaving it out.
            _check_number("--target-log10-loss", self.target_log10_loss, lambda v: True,
                          "a finite number")
        check_precision(self.precision)
        if not isinstance(self.deterministic, bool):
            raise UserError(f"deterministic must be true or false, not {self.deterministic!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.schedule]
        up, down = DEFAULT_WALK[self.schedule]
        self.lr_up = up if self.lr_up is None else self.lr_up
        self.lr_down = down if self.lr_down is None else self.lr_down
        resolve_device(self.device)
        return self


def _is_number(value: Any) -> bool:
    # numbers.Real takes numpy scalars too; a bool is no number here.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int | None, what: str) -> None:
    """``value`` is an integer (not a bool) at least ``low``, else one sentence naming ``name``."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and (low is None or value >= low)):
        raise UserError(f"{name} must be {what}, not {_shown(value)}")


def _check_number(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
    """``value`` is a finite real number for which ``ok`` holds (NaN and inf never make
    sense here, and strict JSON could not record them)."""
    if not (_is_number(value) and math.isfinite(value) and ok(value)):
        raise UserError(f"{name} must be {what}, not {_shown(value)}")


def _shown(value: Any) -> str:
    """A value as the user typed it: ``-5`` rather than ``-5.0``, strings quoted."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if _is_number(value) else repr(value)
