"""Loss-based schedules: what it costs to drive the summed training loss to a target.

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
  every attempt (train set) and every accepted epoch (train + test);
* the option ``loss-based-capped`` (α capped below its last rollback) against the paper's
  schedule: gradient evaluations to the same target, and the normalized margin reached.

The paper's target is log10 𝓛 = −50. On 2 CPU cores that takes the CNN about 800 accepted
epochs and the MLP about 1,350 (together well over 10 minutes), more than the whole
suite may spend, so the default target here is −20 (about 300 and 520 epochs). The four
runs (two models x two schedules) go to two worker processes of one thread each;
``--schedule-target -50`` measures the paper's target. The figures are counts, not
timings: they do not depend on machine load.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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


PAPER, CAPPED = "loss-based", "loss-based-capped"


def measure(name: str, target: float, max_minutes: float | None = None,
            schedule: str = PAPER, threads: int | None = None) -> dict[str, Any]:
    """Train ``name`` on digits until log10 𝓛 ≤ ``target``; counts and a time breakdown."""
    if threads is not None:
        torch.set_num_threads(threads)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, img_size=8, **MODELS[name])
    rollbacks = _Rollbacks()
    trainer = Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                      TrainConfig(target_log10_loss=target, epochs=1_000_000, device="cpu",
                                  max_minutes=max_minutes, schedule=schedule), [rollbacks])
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
    return {"model": name, "schedule": schedule, "reason": reason, "epochs": trainer.epoch,
            "step": trainer.step,
            "grad_evals": trainer.grad_evals, "rollbacks": rollbacks.count,
            "log10_loss": trainer.record["log10_loss"], "wall_s": wall, "sgd_s": sgd[0],
            "train_stats_s": stats[0], "measure_s": record[0],
            "normalized_margin": trainer.record["normalized_margin"]}


def run(quick: bool = False, target: float | None = None) -> list[Row]:
    """Rows per model: accepted epochs, gradient evaluations, wasted fraction, and the
    capped schedule's gradient evaluations relative to the paper's."""
    if target is None:
        target = QUICK_TARGET if quick else DEFAULT_TARGET
    note = "" if target <= PAPER_TARGET else (
        f"; target {target:g}, not the paper's {PAPER_TARGET:g} (too long for the suite's "
        "15 minutes; run --only schedule --schedule-target -50)")
    jobs = [(name, schedule) for name in MODELS for schedule in (PAPER, CAPPED)]
    # Spawned workers: a forked torch may deadlock in its thread pool.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job: pool.submit(measure, job[0], target, None, job[1], 1) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}
    rows = []
    for name in MODELS:
        for schedule in (PAPER, CAPPED):
            rows.extend(_rows(results[name, schedule], target, note))
        paper, capped = results[name, PAPER], results[name, CAPPED]
        ratio = capped["grad_evals"] / paper["grad_evals"]
        both = paper["reason"] == capped["reason"] == "target"
        rows.append(row(
            f"schedule: digits {name} to log10 loss {target:g}",
            f"gradient evaluations {CAPPED} / {PAPER}", ratio, "< 1 to keep the option",
            (ratio < 1) if both else False,
            f"{capped['grad_evals']} vs {paper['grad_evals']} in {capped['epochs']} vs "
            f"{paper['epochs']} accepted epochs; normalized margin at the target "
            f"{capped['normalized_margin']:.4g} vs {paper['normalized_margin']:.4g} "
            f"(ratio {capped['normalized_margin'] / paper['normalized_margin']:.3f})"))
    return rows


def _rows(m: dict[str, Any], target: float, note: str) -> list[Row]:
    """The three count rows of one (model, schedule) run."""
    reached = m["reason"] == "target"
    tag = "" if m["schedule"] == PAPER else f" [{m['schedule']}]"
    bench = f"schedule: digits {m['model']} to log10 loss {target:g}{tag}"
    status = "" if reached else f"; STOPPED BY {m['reason']} at {m['log10_loss']:.2f}"
    waste = 1 - m["step"] / m["grad_evals"] if m["grad_evals"] else 0.0
    timing = (f"{m['wall_s']:.0f} s on 1 thread: SGD {m['sgd_s']:.0f} s, train-set stats per "
              f"attempt {m['train_stats_s']:.0f} s, epoch records (test stats) "
              f"{m['measure_s']:.0f} s")
    expected = f"~{EQUILIBRIUM_WASTE:.2f} at equilibrium" if m["schedule"] == PAPER else "info"
    return [
        row(bench, "accepted epochs", m["epochs"], "info", None,
            f"{m['step']} accepted SGD steps, {m['rollbacks']} rolled-back "
            f"epochs{status}{note}"),
        row(bench, "gradient evaluations (incl. rolled back)", m["grad_evals"], "info", None,
            f"{m['grad_evals'] / max(m['epochs'], 1):.1f} per accepted epoch; {timing}"),
        row(bench, "fraction of gradient evaluations wasted", waste, expected, None,
            f"{m['grad_evals'] - m['step']} of {m['grad_evals']} steps rolled back; "
            f"final normalized margin {m['normalized_margin']:.3g}"),
    ]
