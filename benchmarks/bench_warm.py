"""Warm-started FMN: each checkpoint's minimal-norm attack started from the previous
checkpoint's adversarial points (``Evaluator(warm_start=True)``, ``--warm-start``) against
attacking every checkpoint from scratch.

A digits MLP (512, 512) is trained with the paper's schedule and snapshotted every
``EVERY`` accepted epochs, as a run's checkpoints along the trajectory. At each snapshot
after the first, FMN with the library's defaults attacks the same N test points twice,
alternately: from scratch, and from the adversarial points the warm chain found at the
snapshot before (the chain starts from scratch at the first snapshot, exactly as
``evaluate_run`` does). Reported per norm, as medians over the snapshots:

* the time ratio warm / cold (cold L2 FMN runs two passes, foolbox's and the projection-
  fixed refinement; warm runs only the refinement, so about 1/2 is expected; Linf runs one
  pass either way, so the start is all that can help);
* the median over points of the distance ratio warm / cold (below 1: warm finds closer
  adversarial points), and the fraction of points where warm is at least as close.

The option is worth keeping for a norm when warm is faster without finding farther points
(time < 1 and distance ratio <= 1.01), or finds closer points at no extra time. Both
norms are measured here; the library warm-starts only L2 (``FMN.warm_start_norms``),
where it pays, and the Linf row says whether that choice still holds.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from marginrobust import Callback, TrainConfig, Trainer, create_model, load_dataset
from marginrobust.evaluate.attacks import FMN, AttackResult
from marginrobust.evaluate.threats import ThreatModel

from .common import Row, fmt_s, interleave, med, reps_for, row


class _BothNorms(FMN):
    """FMN warm-started under Linf too, to measure what the library's L2-only choice
    leaves out."""

    warm_start_norms = ("L2", "Linf")


N_POINTS = 300
EVERY = 20
SNAPSHOTS = 5
THREATS = {"L2": ThreatModel("L2", (0.5,)), "Linf": ThreatModel("Linf", (0.05,))}
DISTANCE_SLACK = 1.01


class _Snapshots(Callback):
    """Copies of the model every ``EVERY`` accepted epochs."""

    def __init__(self) -> None:
        self.models: list[tuple[int, nn.Module]] = []

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] and record["epoch"] % EVERY == 0:
            self.models.append((record["epoch"], copy.deepcopy(trainer.model).eval()))


def snapshots(count: int) -> tuple[list[tuple[int, nn.Module]], Any]:
    """``count`` snapshots of a digits MLP along its training, and the data."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, in_chans=1, img_size=8)
    snaps = _Snapshots()
    Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
            TrainConfig(epochs=EVERY * count, device="cpu"), [snaps]).fit()
    return snaps.models, data


def _compare(attack: FMN, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             threat: ThreatModel, starts: Any, reps: int,
             ) -> tuple[dict[str, Any], dict[str, AttackResult]]:
    """Warm and cold runs timed alternately; their timings and last results."""
    out: dict[str, AttackResult] = {}

    def cold() -> None:
        out["cold"] = attack(model, x, y, threat)

    def warm() -> None:
        out["warm"] = attack(model, x, y, threat, starting_points=starts)

    return interleave({"warm": warm, "cold": cold}, reps=reps, warmup=0), out


def run(quick: bool = False) -> list[Row]:
    """Per norm: time and distance ratios of warm-started vs from-scratch FMN."""
    count = 3 if quick else SNAPSHOTS
    models, data = snapshots(count)
    x, y = data.x_test[:N_POINTS], data.y_test[:N_POINTS]
    reps = reps_for(quick, 3, 1)
    rows = []
    for norm, threat in THREATS.items():
        attack = _BothNorms()
        chain: AttackResult = attack(models[0][1], x, y, threat)
        times, dists, closer, warmed, details = [], [], [], [], []
        for epoch, model in models[1:]:
            t, out = _compare(attack, model, x, y, threat, chain.adversarials, reps)
            c, w = out["cold"].distances, out["warm"].distances
            both = np.isfinite(c) & np.isfinite(w) & (c > 0)
            times.append(t["ratios"]["warm"])
            dists.append(float(np.median(w[both] / c[both])))
            closer.append(float(np.mean(w[both] <= c[both])))
            warmed.append(out["warm"].warm_started / max(int(out["warm"].clean_correct.sum()), 1))
            details.append(f"epoch {epoch}: {fmt_s(t['warm'])} vs {fmt_s(t['cold'])}")
            chain = out["warm"]
        time_ratio, dist_ratio = med(times), med(dists)
        keep = (time_ratio < 1 and dist_ratio <= DISTANCE_SLACK) or (
            dist_ratio < 1 / DISTANCE_SLACK and time_ratio <= 1.05)
        bench = (f"warm start: FMN {norm} (mlp digits, N={len(x)}, {len(models) - 1} "
                 f"checkpoints {EVERY} epochs apart)")
        used = norm in FMN.warm_start_norms
        verdict = ("kept: FMN warm-starts " if used else "not used: FMN does not warm-start "
                   ) + norm
        if keep != used:
            verdict += f" (but this run says it {'helps' if keep else 'does not help'})"
        rows.append(row(bench, "time ratio warm/cold", time_ratio, "< 1 to keep the option",
                        keep if used else None, f"{verdict}; " + "; ".join(details)
                        + f"; {med(warmed):.0%} of the attacked points warm-started"))
        rows.append(row(bench, "median distance ratio warm/cold", dist_ratio,
                        f"<= {DISTANCE_SLACK}", dist_ratio <= DISTANCE_SLACK,
                        f"per checkpoint {', '.join(f'{d:.4f}' for d in dists)}; warm at "
                        f"least as close on {med(closer):.0%} of the points"))
    return rows
