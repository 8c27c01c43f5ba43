"""Margin statistics: ``margin_stats`` vs a bare ``torch.no_grad()`` forward pass.

Both sides run the paper's CNN on the same N 28x28 training images (Fashion-MNIST when
installed, else noise) in batches of 1000. ``margin_stats`` adds, on top of the forward
pass, the concatenation of the logits, float64 per-example margins and log losses, the
parameter and layer norms and seven near-support counts; the order L is passed in, so
the homogeneity probe (a few extra forward passes) is not part of the figure.

Beside the ratio, the post-processing alone (``stats_from_logits`` on precomputed logits
and the norms) is timed, so a miss can be attributed to it or to the forward loop.
"""

from __future__ import annotations

import torch

from marginrobust import create_model, margin_stats
from marginrobust.margins import param_norm, stats_from_logits
from marginrobust.models import layer_norms

from .common import Row, alternate, fmt_s, images28, interleave, reps_for, row

BATCH = 1000
TARGET = 1.15


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
