"""Margin statistics: ``margin_stats`` vs a bare ``torch.no_grad()`` forward pass.

Both sides run the paper's CNN on the same N 28x28 training images (Fashion-MNIST when
installed, else noise) in batches of 1000. ``margin_stats`` adds, on top of the forward
pass, the concatenation of the logits, float64 per-example margins and log losses, the
parameter and layer norms and seven near-support counts; the order L is passed in, so
the homogeneity probe (a few extra forward passes) is not part of the figure.

Beside the ratio, the post-processing alone (``stats_from_logits`` on precomputed logits
and the norms) is timed, so a miss can be attributed to it or to the forward loop.

Experiment (benchmark only, the library is untouched): ``param_norm`` and ``layer_norms``
each materialise a float64 copy of every weight (3.3M parameters for this CNN) to sum
squares. ``torch.linalg.vector_norm(p, dtype=torch.float64)`` accumulates in float64 in
one reduction without the copies; the patched variant of ``margin_stats`` uses it (same
norms to ~1e-13 relative) and its ratio to the forward pass is reported as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

import marginrobust.margins as margins_module
from marginrobust import create_model, margin_stats
from marginrobust.margins import param_norm, stats_from_logits
from marginrobust.models import layer_norms
from marginrobust.models._layers import weight_layers

from .common import Row, alternate, fmt_s, images28, interleave, reps_for, row

BATCH = 1000
TARGET = 1.15


def _sq(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2


def _param_norm_fused(model: nn.Module) -> float:
    """ρ without a float64 copy of each parameter (what margins.param_norm could do)."""
    return math.sqrt(sum(_sq(p) for p in model.parameters()))


def _layer_norms_fused(model: nn.Module) -> list[float]:
    """Per-layer Frobenius norms (bias of the layer included), no float64 copies."""
    return [math.sqrt(_sq(m.weight) + (_sq(m.bias) if getattr(m, "bias", None) is not None
                                       else 0.0)) for m in weight_layers(model)]


@contextmanager
def fused_norms() -> Iterator[None]:
    """Swap margins' norm helpers for the copy-free ones, for one timed call."""
    saved = margins_module.param_norm, margins_module.layer_norms
    margins_module.param_norm = _param_norm_fused  # type: ignore[assignment]
    margins_module.layer_norms = _layer_norms_fused  # type: ignore[assignment]
    try:
        yield
    finally:
        margins_module.param_norm, margins_module.layer_norms = saved


def run(quick: bool = False, sizes: tuple[int, ...] = (1000, 10000)) -> list[Row]:
    """One row per N: time ratio margin_stats / bare forward."""
    x_all, y_all, source = images28(max(sizes))
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=28).eval()
    order = 4  # the paper CNN without biases: four weight layers
    rows = []
    for n in sizes:
        x, y = x_all[:n], y_all[:n]

        def ours(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            margin_stats(model, x, y, order=order, batch_size=BATCH)

        def patched(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            with fused_norms():
                margin_stats(model, x, y, order=order, batch_size=BATCH)

        def bare(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                for i in range(0, len(x), BATCH):
                    model(x[i:i + BATCH])

        # The large N costs seconds per call; three rounds keep the suite's budget.
        reps = reps_for(quick, 5 if n <= 2000 else 3)
        if n == min(sizes):
            # The norms weigh most at the smallest N: time the patched variant there too.
            t3 = interleave({"ours": ours, "patched": patched, "bare": bare}, reps=reps)
            t = {"a_s": t3["ours"], "b_s": t3["bare"], "ratio": t3["ratios"]["ours"]}
        else:
            t3 = None
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
        if t3 is not None:
            lib = margin_stats(model, x, y, order=order)
            with fused_norms():
                fused = margin_stats(model, x, y, order=order)
            rel = abs(fused["rho"] - lib["rho"]) / lib["rho"]
            r = t3["ratios"]["patched"]
            rows.append(row(f"margin statistics (cnn 28x28, N={n}), EXPERIMENT",
                            "time ratio margin_stats with copy-free norms/forward", r,
                            f"<= {TARGET}", r <= TARGET,
                            f"{fmt_s(t3['patched'])} vs {fmt_s(t3['bare'])} (library "
                            f"{fmt_s(t3['ours'])}); patched margins.param_norm/layer_norms "
                            f"use vector_norm(dtype=float64); rho agrees to {rel:.0e}",
                            experiment=True))
    return rows
