"""Certificates: Lipschitz-margin radii (+ IBP at one ε) vs one forward pass.

Per model, all timed round-robin on the same N points in batches of 256 (the
certificates' batch size):

* ``lipschitz_radii`` with precomputed bounds, and ``lipschitz_radii`` + ``ibp_certified``
  at one Linf ε (the figure with the ≤ 3 target);
* one float32 ``torch.no_grad()`` forward pass (the reference);
* one float64 forward pass of a float64 copy of the model: both certificates run layer by
  layer in float64 by design (sound for logits of 1e5 and more), so this separates the
  price of float64 from the certificates' own work.

The one-off ``operator_norm_bounds`` (per model and input shape) is reported as a ratio to
the same float32 forward pass, with its seconds beside it.

On the CPU, then the tightness rows of :mod:`.certify_tightness` (radii against exact
MILP distances and FMN; its table rides on its first row).

With ``--device cuda`` the same rows on the GPU (CUDA-synchronised, the float32 forward
with TF32 off), for the CNN at N = 5,000 and the full-width VGG-16 at N = 1,000;
``--tiny`` runs them at toy sizes on the CPU.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from marginrobust import create_model
from marginrobust.evaluate.certify.lipschitz_ibp import ibp_certified, lipschitz_radii
from marginrobust.evaluate.certify.operator_norms import operator_norm_bounds
from marginrobust.precision import measurement_precision

from . import certify_tightness
from .common import Row, dry_run, fmt_s, images28, images32, interleave, med, reps_for, row

TARGET = 3.0
BATCH = 256
EPS_LINF = 0.1


def _forward(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            model(x[i:i + BATCH])


def _bench_model(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 reps: int, device: str | None = None) -> list[Row]:
    if device is not None:
        model, x, y = model.to(device), x.to(device), y.to(device)
    shape = tuple(x.shape[1:])
    bounds = operator_norm_bounds(model, shape)
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    t = interleave({
        "lip": lambda: lipschitz_radii(model, x, y, bounds=bounds, batch_size=BATCH),
        "ibp": lambda: ibp_certified(model, x, y, EPS_LINF, "Linf", batch_size=BATCH),
        "bounds": lambda: operator_norm_bounds(model, shape),
        "fwd64": lambda: _forward(model64, x64),
        "fwd": lambda: _forward(model, x),
    }, reps=reps, device=device)
    r = dict(t["ratios"])
    times = t["times"]
    # lip and ibp are timed separately (one lip pass per round, not two); their sum per
    # round over the same round's forward pass is the combined figure.
    r["lip+ibp"] = med([(a + b) / f for a, b, f in zip(times["lip"], times["ibp"],
                                                       times["fwd"], strict=True)])
    t["lip+ibp"] = med([a + b for a, b in zip(times["lip"], times["ibp"], strict=True)])
    n = len(y)
    f64 = r["fwd64"]
    slowest = max(bounds, key=lambda b: b.seconds)
    return [
        row(f"certify: {label}, N={n}", "time ratio lipschitz_radii+ibp / forward",
            r["lip+ibp"], f"<= {TARGET}", r["lip+ibp"] <= TARGET,
            f"{fmt_s(t['lip+ibp'])} vs {fmt_s(t['fwd'])}; a float64 forward alone is "
            f"{f64:.2f}x the float32 one, lip+ibp is {r['lip+ibp'] / f64:.2f}x the float64 one"),
        row(f"certify: {label}, N={n}", "time ratio lipschitz_radii / forward", r["lip"],
            "info", None, f"{fmt_s(t['lip'])}; {r['lip'] / f64:.2f}x the float64 forward "
            f"(ibp at eps={EPS_LINF} alone {r['ibp'] / f64:.2f}x it)"),
        row(f"certify: {label}", "one-off operator_norm_bounds / forward over N",
            r["bounds"], "info", None,
            f"{fmt_s(t['bounds'])} once per model; slowest layer {slowest.name} "
            f"({slowest.kind}) {fmt_s(slowest.seconds)}"),
    ]


def run(quick: bool = False, device: str = "cpu", tiny: bool = False) -> list[Row]:
    """CNN on 28x28 images and VGG-16 (width 0.25; 1 on cuda) on 32x32 RGB noise."""
    if device != "cpu" or tiny:
        with measurement_precision(), dry_run(tiny):
            return _device_rows(quick, device, tiny)
    reps = reps_for(quick, 3)
    n_cnn = 256 if quick else 500
    n_vgg = 64 if quick else 128
    x, y, source = images28(n_cnn)
    torch.manual_seed(0)
    cnn = create_model("cnn", in_chans=1, img_size=28).eval()
    rows = _bench_model(f"cnn 28x28 ({source})", cnn, x, y, reps)
    gen = torch.Generator().manual_seed(0)
    x32 = torch.rand(n_vgg, 3, 32, 32, generator=gen)
    y32 = torch.randint(0, 10, (n_vgg,), generator=gen)
    vgg = create_model("vgg16", in_chans=3, img_size=32, width=0.25).eval()
    rows += _bench_model("vgg16 width 0.25, 32x32 (noise)", vgg, x32, y32, reps)
    return rows + certify_tightness.run(quick)


def _device_rows(quick: bool, device: str, tiny: bool) -> list[Row]:
    reps = reps_for(quick, 3)
    n_cnn, n_vgg = (64, 16) if tiny else (5000, 1000)
    x, y, source = images28(n_cnn)
    torch.manual_seed(0)
    cnn = create_model("cnn", in_chans=1, img_size=28, width=0.25 if tiny else 1.0).eval()
    note = f", {device}" + (", dry run" if tiny else "")
    rows = _bench_model(f"cnn 28x28 ({source}{note})", cnn, x, y, reps, device)
    x32, y32 = images32(n_vgg)
    width = 0.125 if tiny else 1.0
    vgg = create_model("vgg16", in_chans=3, img_size=32, width=width).eval()
    rows += _bench_model(f"vgg16 width {width:g}, 32x32 (noise{note})", vgg, x32, y32, reps,
                         device)
    if tiny:
        for r in rows:
            if r["ok"] is not None:
                r["ok"] = None
    return rows
