"""The cuda presets: absolute seconds per accepted epoch and per checkpoint evaluation.

Absolute times are the point here (a GPU's are steady enough to plan with), so this is the
one module whose figures are not ratios. For each cuda preset of
``marginrobust.presets`` (presets with the same model, input shape and sizes are measured
once: ``fashion-mnist`` and ``mnist``; ``cifar10`` and ``imagefolder``), on data of the
preset's shape and size (scikit-learn digits for ``digits``, noise otherwise: no dataset is
downloaded):

* one epoch attempt: the trainer's SGD pass over the whole training set (the preset's
  model and batch size) plus the train-set statistics every attempt needs, and the
  test-set statistics an accepted epoch adds (median of a few epochs);
* seconds per accepted epoch = ``ATTEMPTS`` attempts + the test-set statistics, where
  ``ATTEMPTS`` is the number of epoch attempts per accepted epoch of the paper's schedule as
  the schedule benchmark measured it (``benchmarks/results.json``: 297 accepted and 694
  rolled-back epochs on the digits CNN down to log10 𝓛 = −20); without rollbacks it is one
  attempt, and the detail gives that figure too;
* one checkpoint's evaluation: ``Evaluator.evaluate`` with the preset's attacks (AutoAttack
  ``standard`` for every cuda preset), certificates, both norms and the dataset's default
  budgets, on ``N_EVAL`` points of one split, every attack given all of them as one batch,
  scaled linearly (``benchmarks --only growth`` checks the growth is linear) to the
  preset's ``n`` points and two splits. The points are labelled with the model's own
  predictions so that every point is attacked; how long AutoAttack takes depends on how
  many points survive each of its attacks, and a real late checkpoint holds more robust
  points than a model trained a few epochs here, so read these figures as lower bounds;
* hours for the preset: its epochs at the accepted-epoch figure plus ``CHECKPOINTS``
  checkpoint evaluations (one per ``checkpoint_decades`` of the summed loss: their number
  depends on how far the run goes).

``--tiny`` is a dry run on the CPU: tiny sizes and a cheap attack set, figures meaningless.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from marginrobust import Evaluator, TrainConfig, Trainer, create_model, load_dataset
from marginrobust.evaluate.threats import default_threats
from marginrobust.precision import measurement_precision, training_precision
from marginrobust.presets import PRESETS, Preset

from .common import Row, dry_run, fmt_s, reps_for, row, sync

# Epoch attempts per accepted epoch of the paper's loss-based schedule at equilibrium:
# (297 accepted + 694 rolled back) / 297 accepted, the schedule benchmark's measurement.
ATTEMPTS = (297 + 694) / 297
CHECKPOINTS = 5
N_EVAL = 64

# dataset → (input shape, training images, test images) of the full dataset.
SHAPES: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "digits": ((1, 8, 8), 1347, 450),
    "fashion-mnist": ((1, 28, 28), 60_000, 10_000),
    "mnist": ((1, 28, 28), 60_000, 10_000),
    "cifar10": ((3, 32, 32), 50_000, 10_000),
    "imagefolder": ((3, 32, 32), 50_000, 10_000),
}
# A dry run's attack set: every kind of attack the presets use, a few steps each.
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "autoattack": {"version": "custom", "attacks_to_run": ["apgd-ce"]},
    "pgd": {"steps": 3}, "fmn": {"steps": 3}}


@dataclass
class Group:
    """Presets measured together: the same model, shape, sizes and evaluation."""

    datasets: list[str]
    preset: Preset
    shape: tuple[int, int, int]
    n_train: int
    n_test: int


def groups() -> list[Group]:
    """The cuda presets, those with the same work merged."""
    out: dict[tuple[Any, ...], Group] = {}
    for (name, kind), p in PRESETS.items():
        if kind != "cuda" or name not in SHAPES:
            continue
        shape, n_train, n_test = SHAPES[name]
        n_train = min(n_train, p.train_subset or n_train)
        n_test = min(n_test, p.test_subset or n_test)
        key = (p, shape, n_train, n_test, name == "digits")
        if key in out:
            out[key].datasets.append(name)
        else:
            out[key] = Group([name], p, shape, n_train, n_test)
    return list(out.values())


def _data(g: Group, n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    if "digits" in g.datasets:
        d = load_dataset("digits")
        return d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_test, *g.shape, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _timed(device: str, fn: Any) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def _group_rows(g: Group, device: str, quick: bool, tiny: bool) -> list[Row]:
    p = g.preset
    n_train, n_test = (200, 50) if tiny else (g.n_train, g.n_test)
    x, y, xt, yt = _data(g, n_train, n_test)
    width = min(p.width, 0.125 if p.model == "vgg16" else 0.25) if tiny else p.width
    torch.manual_seed(0)
    model = create_model(p.model, in_chans=g.shape[0], img_size=g.shape[1:], bias=p.bias,
                         width=width)
    # A constant rate: the same kernels as the paper's schedule, without its rollbacks
    # (which would make the timed epochs unequal) and without exploding on noise.
    trainer = Trainer(model, x, y, xt, yt, TrainConfig(batch_size=p.batch_size,
                                                       schedule="constant", lr=0.01,
                                                       device=device))
    trainer.schedule.start(0.0)
    sgd, train_stats, test_stats = [], [], []
    for _ in range(1 if tiny else reps_for(quick, 2) + 1):
        with training_precision("fp32"):
            sgd.append(_timed(device, trainer._run_epoch)[0])
        with measurement_precision():
            dt, stats = _timed(device, trainer._train_stats)
            train_stats.append(dt)
            test_stats.append(_timed(device, lambda s=stats: trainer.measure(train=s))[0])
    # The first epoch pays for cuDNN's and the allocator's first calls: left out.
    sgd_s, train_s, test_s = (statistics.median(v[1:] if len(v) > 1 else v)
                              for v in (sgd, train_stats, test_stats))
    attempt = sgd_s + train_s
    accepted = ATTEMPTS * attempt + test_s
    names = ", ".join(g.datasets)
    bench = (f"cuda preset {names}: {p.model} width {width:g}, {n_train} training images"
             f"{' (noise)' if 'digits' not in g.datasets else ''}, {device}"
             f"{', dry run' if tiny else ''}")
    rows = [row(bench, "seconds per epoch attempt (SGD pass + train-set stats)", attempt,
                "info", None, f"SGD {fmt_s(sgd_s)}, train-set stats {fmt_s(train_s)}"),
            row(bench, "seconds per accepted epoch (paper's schedule)", accepted, "info", None,
                f"{ATTEMPTS:.2f} attempts per accepted epoch (schedule benchmark) + test-set "
                f"stats {fmt_s(test_s)}; {fmt_s(attempt + test_s)} without rollbacks")]
    n_eval = 8 if tiny else min(N_EVAL, p.n)
    ckpt, detail = _checkpoint_eval(trainer.model, g, p, xt, n_eval, device, tiny)
    per_ckpt = ckpt * (p.n / n_eval) * 2
    rows.append(row(bench, "seconds per checkpoint evaluation (estimate)", per_ckpt, "info",
                    None, f"{fmt_s(ckpt)} for {n_eval} points x 1 split measured, scaled to "
                          f"n={p.n} x 2 splits; {detail}"))
    hours = (p.epochs * accepted + CHECKPOINTS * per_ckpt) / 3600
    rows.append(row(bench, "hours for the preset (estimate)", hours, "info", None,
                    f"{p.epochs} epochs x {accepted:.2f} s + {CHECKPOINTS} checkpoints x "
                    f"{per_ckpt:.0f} s (one checkpoint per {p.checkpoint_decades:g} decades "
                    f"of the loss: their number depends on how far the run goes)"))
    return rows


def _checkpoint_eval(model: torch.nn.Module, g: Group, p: Preset, xt: torch.Tensor,
                     n: int, device: str, tiny: bool) -> tuple[float, str]:
    model = model.eval()
    x = xt[:n].to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct: every point is attacked
    attacks = [a for a in p.attacks.split(",") if a]
    if tiny:
        options = {a: TINY_OPTIONS[a] for a in attacks if a in TINY_OPTIONS}
    else:
        aa = ({"version": "standard"} if p.aa_attacks == "standard" else
              {"version": "custom", "attacks_to_run": p.aa_attacks.split(",")})
        options = {a: {"batch_size": n} for a in attacks}
        if "autoattack" in options:
            options["autoattack"].update(aa)
    threats = default_threats(g.datasets[0])
    ev = Evaluator(threats=threats, attacks=attacks, certify=True, n=n, seed=0,
                   device=device, attack_options=options)
    with measurement_precision():
        seconds, result = _timed(device, lambda: ev.evaluate(model, x, y, "test",
                                                             threats=threats))
    assert result.records
    eps = "; ".join(f"{t.norm} {', '.join(f'{e:.3g}' for e in t.epsilons)}" for t in threats)
    aa_name = "AutoAttack " + ("apgd-ce (dry run)" if tiny else p.aa_attacks)
    return seconds, (f"{aa_name}, {', '.join(a for a in attacks if a != 'autoattack')}, "
                     f"certificates; eps {eps}")


def run(quick: bool = False, device: str = "cpu", tiny: bool = False) -> list[Row]:
    """Rows per group of cuda presets (see the module docstring)."""
    with dry_run(tiny):
        rows = []
        for g in groups():
            rows += _group_rows(g, device, quick, tiny)
        return rows
