"""Attack strength: marginrobust's PGD and APGD-CE against foolbox / pyautoattack on the raw model.

``python -m benchmarks.attack_strength [--out PATH] [--quick]``

The README's "Logit scale" table comes from this script's JSON
(benchmarks/results-attack-strength.json, checked by tests/test_readme_figures.py).

Setup: the paper's CNN (``create_model("cnn", width=0.5, bias="first")``) trained on
scikit-learn digits by :class:`marginrobust.Trainer` with ``TrainConfig(epochs=120,
device="cpu", seed=seed)`` (paper's loss-based schedule, batch 100) after
``torch.manual_seed(seed)``, for seeds 0-3; the models at epochs 10 and 120 are attacked.
Points: ``select_points(data, 200, seed, ("test",))`` (the model's seed). Budgets: Linf 0.1
and L2 1.0. Each figure is the robust fraction of the 200 points (misclassified points
count as broken); lower means a stronger attack.

Attacks, each called with the model's seed:

* ``pgd`` / ``raw``: foolbox ``LinfPGD`` / ``L2PGD`` (defaults) called directly on the raw
  model, on the correctly classified points, after ``torch.manual_seed(seed)``;
* ``pgd`` / ``spread1``: ``PGD(losses=("crossentropy",), logit_spread=1.0)``, marginrobust's
  PGD before (cross-entropy only, logits rescaled to median spread 1);
* ``pgd`` / ``now``: ``PGD()``, the current default;
* ``apgd-ce`` / ``raw``: ``pyautoattack.AutoAttack(version="custom", attacks=["apgd-ce"])``
  called directly on the raw model;
* ``apgd-ce`` / ``spread1``: marginrobust's
  ``AutoAttack(version="custom", attacks_to_run=["apgd-ce"], logit_spread=1.0)``;
* ``apgd-ce`` / ``now``: the same with the default ``logit_spread``.

``--quick`` (a smoke run: seed 0, epochs 1 and 3, 40 points) writes only where ``--out``
says. One torch thread throughout.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import foolbox as fb
import numpy as np
import torch
from pyautoattack import AutoAttack as PyAutoAttack
from torch import nn

from marginrobust import Callback, ThreatModel, TrainConfig, Trainer, create_model, load_dataset
from marginrobust.evaluate.attacks import CE_LOGIT_SPREAD, PGD, PGD_LOSSES
from marginrobust.evaluate.attacks.autoattack import AutoAttack
from marginrobust.evaluate.points import select_points

DEFAULT_OUT = Path(__file__).resolve().parent / "results-attack-strength.json"
THREADS = 1
MODEL = {"name": "cnn", "num_classes": 10, "in_chans": 1, "img_size": 8, "bias": "first",
         "width": 0.5}
BUDGETS = (("Linf", 0.1), ("L2", 1.0))
ATTACKS = ("pgd", "apgd-ce")
VARIANTS = ("raw", "spread1", "now")
FULL = {"seeds": (0, 1, 2, 3), "epochs": (10, 120), "points": 200}
QUICK = {"seeds": (0,), "epochs": (1, 3), "points": 40}


class _Snapshots(Callback):
    """Keeps a CPU copy of the model's weights (and the record) at the listed epochs."""

    def __init__(self, epochs: Sequence[int]) -> None:
        self.epochs = set(epochs)
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.records: dict[int, dict[str, Any]] = {}

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        if epoch in self.epochs:
            self.states[epoch] = copy.deepcopy(trainer.model).cpu().state_dict()
            self.records[epoch] = dict(record)


def _new_model() -> nn.Module:
    options = dict(MODEL)
    return create_model(options.pop("name"), **options)


def train(data: Any, seed: int, epochs: Sequence[int]) -> _Snapshots:
    """Train one seed up to the last of ``epochs``; the snapshots at each of them."""
    torch.manual_seed(seed)
    model = _new_model()
    snaps = _Snapshots(epochs)
    Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
            TrainConfig(epochs=max(epochs), device="cpu", seed=seed), callbacks=[snaps]).fit()
    missing = sorted(set(epochs) - set(snaps.states))
    if missing:
        raise RuntimeError(f"seed {seed}: training stopped before epochs {missing}")
    return snaps


def _foolbox_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                 seed: int) -> float:
    """foolbox's own PGD on the raw model: robust fraction of all points."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        torch.manual_seed(seed)
        cls = fb.attacks.LinfPGD if norm == "Linf" else fb.attacks.L2PGD
        _, _, success = cls()(fb.PyTorchModel(model, bounds=(0, 1)), x[correct], y[correct],
                              epsilons=eps)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return float((~success).sum()) / len(x)


def _pyautoattack_apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                          eps: float, seed: int) -> float:
    """pyautoattack's APGD-CE on the raw model: robust fraction of all points."""
    adversary = PyAutoAttack(model, norm=norm, eps=eps, version="custom", attacks=["apgd-ce"],
                             seed=seed, device=x.device)
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=256)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def _figure(attack: str, variant: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            norm: str, eps: float, seed: int) -> float:
    """One attack variant's robust fraction at one budget."""
    if variant == "raw":
        direct = _foolbox_pgd if attack == "pgd" else _pyautoattack_apgd_ce
        return direct(model, x, y, norm, eps, seed)
    spread = {"spread1": {"logit_spread": 1.0}, "now": {}}[variant]
    if attack == "pgd":
        losses = {"spread1": {"losses": ("crossentropy",)}, "now": {}}[variant]
        instance: PGD | AutoAttack = PGD(**losses, **spread)
    else:
        instance = AutoAttack(version="custom", attacks_to_run=["apgd-ce"], **spread)
    return instance(model, x, y, ThreatModel(norm, (eps,)), seed=seed).robust_accuracy()[0]


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int
            ) -> dict[str, dict[str, dict[str, float]]]:
    """``{attack: {variant: {norm: robust fraction}}}`` for one model."""
    out: dict[str, dict[str, dict[str, float]]] = {a: {v: {} for v in VARIANTS}
                                                   for a in ATTACKS}
    for norm, eps in BUDGETS:
        for attack in ATTACKS:
            for variant in VARIANTS:
                model.eval()
                out[attack][variant][norm] = float(_figure(attack, variant, model, x, y,
                                                           norm, eps, seed))
    return out


def means(per_seed: list[dict[str, Any]], epochs: Sequence[int]
          ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{attack: {variant: {norm: {epoch: mean over seeds}}}}`` (epochs as strings)."""
    return {attack: {variant: {norm: {str(e): float(np.mean(
        [r["robust"][attack][variant][norm] for r in per_seed if r["epoch"] == e]))
        for e in epochs} for norm, _ in BUDGETS} for variant in VARIANTS} for attack in ATTACKS}


def run(quick: bool = False, log: Any = sys.stdout) -> dict[str, Any]:
    """Train, attack, and return the JSON document."""
    setup = QUICK if quick else FULL
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    data = load_dataset("digits")
    per_seed: list[dict[str, Any]] = []
    for seed in setup["seeds"]:
        t0 = time.perf_counter()
        snaps = train(data, seed, setup["epochs"])
        train_s = time.perf_counter() - t0
        print(f"seed {seed}: trained in {train_s:.0f} s", file=log, flush=True)
        pts = select_points(data, setup["points"], seed, ("test",))["test"]
        for epoch in setup["epochs"]:
            t0 = time.perf_counter()
            model = _new_model()
            model.load_state_dict(snaps.states[epoch])
            model.eval()
            with torch.no_grad():
                clean = float((model(pts.x).argmax(1) == pts.y).float().mean())
            robust = measure(model, pts.x, pts.y, seed)
            record = snaps.records[epoch]
            per_seed.append({"seed": seed, "epoch": epoch,
                             "log10_loss": float(record["log10_loss"]),
                             "train_acc": float(record["train_acc"]),
                             "clean_accuracy": clean, "robust": robust,
                             "attack_s": time.perf_counter() - t0})
            print(f"seed {seed} epoch {epoch}: log10 loss {record['log10_loss']:.2f}, "
                  + ", ".join(f"{a} {v} {n} {robust[a][v][n]:.3f}" for a in ATTACKS
                              for v in VARIANTS for n, _ in BUDGETS), file=log, flush=True)
    command = "python -m benchmarks.attack_strength" + (" --quick" if quick else "")
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("foolbox", "pyautoattack", "eagerpy")},
        "quick": quick,
        "total_s": time.perf_counter() - start,
        "setup": {
            "dataset": "digits", "model": MODEL,
            "train": {"epochs": max(setup["epochs"]), "device": "cpu", "seed": "model seed",
                      "init": "torch.manual_seed(seed) before create_model",
                      "config": "TrainConfig defaults otherwise"},
            "seeds": list(setup["seeds"]), "epochs": list(setup["epochs"]),
            "points": {"n": setup["points"], "split": "test", "seed": "model seed",
                       "selection": "marginrobust.evaluate.points.select_points"},
            "budgets": {norm: eps for norm, eps in BUDGETS},
            "figure": "robust fraction of all points (misclassified count as broken)",
            "default_pgd_losses": list(PGD_LOSSES),
            "default_logit_spread": CE_LOGIT_SPREAD,
        },
        "attacks": {
            "pgd": {"raw": "foolbox LinfPGD / L2PGD on the raw model",
                    "spread1": "PGD(losses=('crossentropy',), logit_spread=1.0)",
                    "now": "PGD()"},
            "apgd-ce": {"raw": "pyautoattack AutoAttack(version='custom', "
                               "attacks=['apgd-ce']) on the raw model",
                        "spread1": "AutoAttack(version='custom', attacks_to_run=['apgd-ce'], "
                                   "logit_spread=1.0)",
                        "now": "AutoAttack(version='custom', attacks_to_run=['apgd-ce'])"},
        },
        "per_seed": per_seed,
        "means": means(per_seed, setup["epochs"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_strength",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where the JSON goes (default: {DEFAULT_OUT.name} beside this "
                             "script; with --quick: nowhere unless given)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0, epochs 1 and 3, 40 points")
    args = parser.parse_args(argv)
    doc = run(quick=args.quick)
    for attack in ATTACKS:
        for norm, eps in BUDGETS:
            cells = "  ".join(f"{v} " + " / ".join(f"{m:.3f}" for m in
                                                   doc["means"][attack][v][norm].values())
                              for v in VARIANTS)
            print(f"{attack} {norm} {eps}: {cells}")
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out} ({doc['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
