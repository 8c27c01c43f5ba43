"""Margin statistics: ``margin_stats`` vs a bare ``torch.no_grad()`` forward pass.

Both sides run the paper's CNN on the same N 28x28 training images (Fashion-MNIST when
installed, else noise) in batches of 1000. ``margin_stats`` adds, on top of the forward
pass, the concatenation of the logits, float64 per-example margins and log losses, the
parameter and layer norms and seven near-support counts; the order L is passed in, so
the homogeneity probe (a few extra forward passes) is not part of the figure.

Beside the ratio, the post-processing alone (``stats_from_logits`` on precomputed logits
and the norms) is timed, so a miss can be attributed to it or to the forward loop.

With ``--device cuda`` (or ``--tiny``: toy sizes on the CPU) both sides run under the
measurement precision (TF32 off), CUDA-synchronised, for the CNN at N = 1,000 and 10,000
and VGG-16 (3x32x32 noise) at N = 10,000; one more row gives what the measurement
precision costs: VGG-16's forward pass with TF32 off over the same with TF32 on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from marginrobust import create_model, margin_stats
from marginrobust.margins import param_norm, stats_from_logits
from marginrobust.models import layer_norms
from marginrobust.precision import measurement_precision, training_precision

from .common import Row, alternate, dry_run, fmt_s, images28, images32, interleave, reps_for, row

BATCH = 1000
TARGET = 1.15


def run(quick: bool = False, sizes: tuple[int, ...] = (1000, 10000), device: str = "cpu",
        tiny: bool = False) -> list[Row]:
    """One row per N: time ratio margin_stats / bare forward."""
    if device != "cpu" or tiny:
        with dry_run(tiny):
            return _device_rows(quick, device, tiny)
    x_all, y_all, source = images28(max(sizes))
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=28).eval()
    order = 4  # the paper CNN without biases: four weight layers
    rows = []
    for n in sizes:
        x, y = x_all[:n], y_all[:n]

        def ours(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            margin_stats(model, x, y, order=order, batch_size=BATCH)

        def bare(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                for i in range(0, len(x), BATCH):
                    model(x[i:i + BATCH])

        # The large N costs seconds per call; three rounds keep the suite's budget.
        reps = reps_for(quick, 5 if n <= 2000 else 3)
        t = alternate(ours, bare, reps=reps)
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + BATCH]) for i in range(0, n, BATCH)])
        post = interleave({
            "stats": lambda logits=logits, y=y: stats_from_logits(logits, y, 1.0, [1.0] * 4,
                                                                  order),
            "norms": lambda: (param_norm(model), layer_norms(model)),
        }, reps=5)
        rows.append(row(f"margin statistics (cnn 28x28, N={n})",
                        "time ratio margin_stats/forward", t["ratio"], f"<= {TARGET}",
                        t["ratio"] <= TARGET,
                        f"{fmt_s(t['a_s'])} vs {fmt_s(t['b_s'])}; post-processing "
                        f"{fmt_s(post['stats'])} stats + {fmt_s(post['norms'])} norms; "
                        f"{source}"))
    return rows


def _forward(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            model(x[i:i + BATCH])


def _measured(fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` under the measurement precision (TF32 off)."""
    def go() -> None:
        with measurement_precision():
            fn()
    return go


def _device_rows(quick: bool, device: str, tiny: bool) -> list[Row]:
    reps = reps_for(quick, 3)
    rows = []
    torch.manual_seed(0)
    cnn = create_model("cnn", in_chans=1, img_size=28, width=0.25 if tiny else 1.0)
    vgg = create_model("vgg16", in_chans=3, img_size=32, bias="first",
                       width=0.125 if tiny else 1.0)
    x28, y28, source = images28(500 if tiny else 10_000)
    x32, y32 = images32(100 if tiny else 10_000)
    cases = [("cnn 28x28", cnn, 4, x28[:n], y28[:n], source)
             for n in ((250, 500) if tiny else (1000, 10_000))]
    # VGG-16 with a bias in layer 1 is not homogeneous: the nominal order 14 is passed in.
    cases.append(("vgg16 32x32", vgg, 14, x32, y32, "noise"))
    for label, model, order, x, y, src in cases:
        model = model.to(device).eval()
        xd, yd = x.to(device), y.to(device)
        t = alternate(_measured(lambda m=model, x=xd, y=yd, o=order: margin_stats(
                          m, x, y, order=o, batch_size=BATCH)),
                      _measured(lambda m=model, x=xd: _forward(m, x)), reps=reps, device=device)
        rows.append(row(f"margin statistics ({label}, N={len(y)}, {device})",
                        "time ratio margin_stats/forward", t["ratio"], f"<= {TARGET}",
                        None if tiny else t["ratio"] <= TARGET,
                        f"{fmt_s(t['a_s'])} vs {fmt_s(t['b_s'])}; both with TF32 off; {src}"
                        f"{'; dry run' if tiny else ''}"))
    model, xd = vgg, x32.to(device)

    def tf32_forward() -> None:
        with training_precision("tf32"):
            _forward(model, xd)

    t = alternate(_measured(lambda: _forward(model, xd)), tf32_forward, reps=reps,
                  device=device)
    rows.append(row(f"measurement precision (vgg16 32x32, N={len(xd)}, {device})",
                    "time ratio forward TF32 off / TF32 on", t["ratio"], "info", None,
                    f"{fmt_s(t['a_s'])} vs {fmt_s(t['b_s'])}"
                    f"{'; a CPU has no TF32' if device == 'cpu' else ''}"))
    return rows
