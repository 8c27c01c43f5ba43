"""Loss-based schedule: what it costs to drive the summed training loss to a target.

The paper's rate η_t = α_t / 𝓛̄_{t−1} rolls back every epoch that raised the mean loss and
redoes it with a smaller α, so part of the gradient evaluations is thrown away. Measured
with the ``Trainer`` directly on the full scikit-learn digits training set (1,347 images),
paper CNN and the default MLP (512, 512), until log10 𝓛 (summed) reaches the target:

* accepted epochs, accepted SGD steps (``Trainer.step``) and all gradient evaluations
  including rolled-back epochs (``Trainer.grad_evals``);
* the fraction wasted, 1 − step / grad_evals. α rises by 2^{1/5} per accepted epoch and
  falls by 2^{1/10} per rollback, so at equilibrium two rollbacks follow each accepted
  epoch and 2/3 of the work is wasted;
* where the wall time goes: SGD steps vs the full-set margin statistics measured after
  every attempt (train set) and every accepted epoch (train + test).

The paper's target is log10 𝓛 = −50. On 2 CPU cores that takes the CNN about 700 accepted
epochs and the MLP about 1,150 (together well over 10 minutes), more than the whole
suite may spend, so the default target here is −20 (about 330 and 480 epochs, some 5
minutes together); ``--schedule-target -50`` measures the real one. The figures are
counts, not timings: they do not depend on machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from marginrobust import Callback, TrainConfig, Trainer, create_model, load_dataset

from .common import Row, row

PAPER_TARGET = -50.0
DEFAULT_TARGET = -20.0
QUICK_TARGET = -2.0
MODELS: dict[str, dict[str, Any]] = {"cnn": {}, "mlp": {}}
# Equilibrium of the α walk: +1/5 per accept, −1/10 per rollback → 2 rollbacks per accept.
EQUILIBRIUM_WASTE = 2 / 3


class _Rollbacks(Callback):
    """Counts rolled-back attempts (the trainer only keeps the count of the last epoch)."""

    def __init__(self) -> None:
        self.count = 0

    def on_rollback(self, trainer: Trainer, epoch: int, why: str) -> None:
        self.count += 1


def _timed(fn: Callable[..., Any], acc: list[float]) -> Callable[..., Any]:
    """Wrap a bound method so its wall time accumulates in ``acc[0]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[0] += time.perf_counter() - t0
    return wrapper


def measure(name: str, target: float, max_minutes: float | None = None) -> dict[str, Any]:
    """Train ``name`` on digits until log10 𝓛 ≤ ``target``; counts and a time breakdown."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, img_size=8, **MODELS[name])
    rollbacks = _Rollbacks()
    trainer = Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                      TrainConfig(target_log10_loss=target, epochs=1_000_000, device="cpu",
                                  max_minutes=max_minutes), [rollbacks])
    # Instance attributes shadow the methods: time SGD and measurements without
    # touching the library (the wrappers cost nanoseconds per call).
    sgd, stats, record = [0.0], [0.0], [0.0]
    trainer._run_epoch = _timed(trainer._run_epoch, sgd)  # type: ignore[method-assign]
    trainer._train_stats = _timed(trainer._train_stats, stats)  # type: ignore[method-assign]
    trainer.measure = _timed(trainer.measure, record)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    reason = trainer.fit()
    wall = time.perf_counter() - t0
    assert trainer.record is not None
    return {"model": name, "reason": reason, "epochs": trainer.epoch, "step": trainer.step,
            "grad_evals": trainer.grad_evals, "rollbacks": rollbacks.count,
            "log10_loss": trainer.record["log10_loss"], "wall_s": wall, "sgd_s": sgd[0],
            "train_stats_s": stats[0], "measure_s": record[0],
            "normalized_margin": trainer.record["normalized_margin"]}


def run(quick: bool = False, target: float | None = None) -> list[Row]:
    """Rows per model: accepted epochs, gradient evaluations, wasted fraction."""
    if target is None:
        target = QUICK_TARGET if quick else DEFAULT_TARGET
    note = "" if target <= PAPER_TARGET else (
        f"; target {target:g}, not the paper's {PAPER_TARGET:g} (too long for the suite's "
        "15 minutes; run --only schedule --schedule-target -50)")
    rows = []
    for name in MODELS:
        m = measure(name, target)
        reached = m["reason"] == "target"
        bench = f"schedule: digits {name} to log10 loss {target:g}"
        status = "" if reached else f"; STOPPED BY {m['reason']} at {m['log10_loss']:.2f}"
        waste = 1 - m["step"] / m["grad_evals"] if m["grad_evals"] else 0.0
        timing = (f"{m['wall_s']:.0f} s: SGD {m['sgd_s']:.0f} s, train-set stats per attempt "
                  f"{m['train_stats_s']:.0f} s, epoch records (test stats) "
                  f"{m['measure_s']:.0f} s")
        rows.append(row(bench, "accepted epochs", m["epochs"], "info", None,
                        f"{m['step']} accepted SGD steps, {m['rollbacks']} rolled-back "
                        f"epochs{status}{note}"))
        rows.append(row(bench, "gradient evaluations (incl. rolled back)", m["grad_evals"],
                        "info", None, f"{m['grad_evals'] / max(m['epochs'], 1):.1f} per "
                        f"accepted epoch; {timing}"))
        rows.append(row(bench, "fraction of gradient evaluations wasted", waste,
                        f"~{EQUILIBRIUM_WASTE:.2f} at equilibrium", None,
                        f"{m['grad_evals'] - m['step']} of {m['grad_evals']} steps rolled back; "
                        f"final normalized margin {m['normalized_margin']:.3g}"))
    return rows
