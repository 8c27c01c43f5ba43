"""Loss step: the fused float64 log-loss against the current ``log_losses`` step and plain CE.

One SGD epoch (batch 100) of the same model from the same weights, four ways, timed
round-robin (CUDA-synchronised on cuda):

* ``fused``: ``framed_loss(logits, y, F)`` (``marginrobust.train.fused_loss``: one autograd
  node, closed-form backward);
* ``log_losses``: ``torch.exp(log_losses(logits, y) - F).mean()``, what the trainer runs now;
* ``ce64``: ``F.cross_entropy`` on the float64 logits (the price of float64 alone);
* ``ce``: plain float32 ``F.cross_entropy`` (the reference of the ratios).

Models: the paper's CNN on 28x28 images (Fashion-MNIST when installed, else noise) on the
CPU; on cuda also VGG-16 on 3x32x32 noise, 10,000 images each. A last group of rows times
the loss alone on (100, 10) logits (forward + backward, 200 calls per timing), where the
difference is not diluted by the model. Each model's rows say whether the fused loss
agrees with the reference on that device: values bit for bit, the largest relative
gradient difference, and the same with the logits scaled to log10 𝓛 ≈ −1,300.

On cuda (not in a dry run) ``torch.compile`` of the reference loss is tried as an
alternative on the CNN: its compile seconds and its step ratio, or why it failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marginrobust import create_model
from marginrobust.margins import log_losses, per_example_margins
from marginrobust.precision import deterministic_algorithms, training_precision
from marginrobust.train.fused_loss import framed_loss

from .common import Row, dry_run, fmt_s, images28, images32, interleave, med, reps_for, row

LossFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def reference_loss(logits: torch.Tensor, y: torch.Tensor, frame: float) -> torch.Tensor:
    """The trainer's current relative loss."""
    return torch.exp(log_losses(logits, y) - frame).mean()


def _ce(logits: torch.Tensor, y: torch.Tensor, frame: float) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def _ce64(logits: torch.Tensor, y: torch.Tensor, frame: float) -> torch.Tensor:
    return F.cross_entropy(logits.double(), y)


LOSSES: dict[str, LossFn] = {"fused": framed_loss, "log_losses": reference_loss,
                             "ce64": _ce64, "ce": _ce}


def _epoch(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, frame: float,
           batch_size: int, seed: int = 0) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)

    def epoch() -> None:
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(x[idx]), y[idx], frame)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epoch


def agreement(logits: torch.Tensor, y: torch.Tensor, frame: float) -> dict[str, Any]:
    """Whether the fused loss gives the reference's value, and how close its gradient is."""
    out = []
    for fn in (reference_loss, framed_loss):
        z = logits.detach().clone().requires_grad_(True)
        value = fn(z, y, frame)
        value.backward()
        assert z.grad is not None
        out.append((value.detach(), z.grad.detach()))
    (v_ref, g_ref), (v, g) = out
    scale = float(g_ref.abs().max())
    rel = float(((g - g_ref).abs() / g_ref.abs().clamp_min(1e-3 * scale + 1e-300)).max())
    return {"same_value": bool(torch.equal(v, v_ref)), "grad_rel": rel,
            "finite": bool(torch.isfinite(v) and torch.isfinite(g).all())}


def _log_mean_loss(logits: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.logsumexp(log_losses(logits, y), 0)) - math.log(len(y))


def _check_detail(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    with torch.no_grad():
        logits = model.eval()(x[:100])
    yb = y[:100]
    a = agreement(logits, yb, _log_mean_loss(logits, yb))
    # Huge margins: each point's largest logit as its label, the logits scaled so that the
    # smallest margin is 3,000 (log10 of the summed loss near −1,300), as late in training.
    y_big = logits.argmax(1)
    q = per_example_margins(logits, y_big)
    keep = q > 0  # exact ties have no margin to scale
    big = (logits[keep].double() * (3000.0 / float(q[keep].min()))).to(logits.dtype)
    y_big = y_big[keep]
    frame = _log_mean_loss(big, y_big)
    b = agreement(big, y_big, frame)
    log10 = (frame + math.log(len(y_big))) / math.log(10)
    return (f"fused = log_losses bit for bit: {'yes' if a['same_value'] else 'NO'}, gradient "
            f"within {a['grad_rel']:.1e} rel; at log10 loss {log10:.0f}: "
            f"{'yes' if b['same_value'] else 'NO'}, {b['grad_rel']:.1e}"
            f"{'' if a['finite'] and b['finite'] else ', NOT FINITE'}")


def _model_rows(label: str, build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor,
                source: str, device: str, reps: int, batch_size: int, compile_ref: bool,
                tiny: bool) -> list[Row]:
    torch.manual_seed(0)
    base = build().to(device)
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        frame = _log_mean_loss(base.eval()(x[:1000]), y[:1000])
    fns: dict[str, Callable[[], None]] = {}
    losses = dict(LOSSES)
    compile_note = ""
    if compile_ref:
        compiled, compile_note = _compiled_reference(base, x, y, frame)
        if compiled is not None:
            losses = {"compiled": compiled, **losses}
    for name, fn in losses.items():
        model = build().to(device)
        model.load_state_dict(base.state_dict())
        fns[name] = _epoch(model, fn, x, y, frame, batch_size)
    t = interleave(fns, reps=reps, device=device)
    r = t["ratios"]
    # fused / log_losses from the same rounds, not a quotient of two medians.
    fused_ref = med([a / b for a, b in zip(t["times"]["fused"], t["times"]["log_losses"])])
    bench = f"loss step ({label}, batch {batch_size}, {device})"
    where = f"{len(y)} {source} images" + ("; dry run" if tiny else "")
    rows = [
        # On a CPU the model's kernels dwarf the loss's (and their launches cost nothing
        # extra), so the step ratio there is information; on cuda it is the point.
        row(bench, "time ratio fused step / log_losses step", fused_ref,
            "<= 1.0" if device == "cuda" else "info",
            fused_ref <= 1.0 if device == "cuda" and not tiny else None,
            f"{fmt_s(t['fused'])} vs {fmt_s(t['log_losses'])} per epoch; "
            f"{_check_detail(base, x, y)}"),
        row(bench, "time ratio fused step / float32 CE step", r["fused"], "info", None,
            f"{fmt_s(t['fused'])} vs {fmt_s(t['ce'])}; {where}"),
        row(bench, "time ratio log_losses step / float32 CE step", r["log_losses"], "info",
            None, f"{fmt_s(t['log_losses'])} vs {fmt_s(t['ce'])}; {where}"),
        row(bench, "time ratio float64 CE step / float32 CE step", r["ce64"], "info", None,
            f"{fmt_s(t['ce64'])} vs {fmt_s(t['ce'])}; {where}"),
    ]
    if "compiled" in r:
        rows.append(row(bench, "time ratio torch.compile(log_losses) step / float32 CE step",
                        r["compiled"], "info", None,
                        f"{fmt_s(t['compiled'])} vs {fmt_s(t['ce'])}; {compile_note}"))
    elif compile_ref:
        rows.append(row(bench, "torch.compile(log_losses)", math.nan, "info", None,
                        compile_note))
    return rows


def _compiled_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        frame: float) -> tuple[LossFn | None, str]:
    """torch.compile of the reference loss, compiled once here (timed apart), or why not."""
    try:
        compiled = torch.compile(reference_loss, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(x[:100])
        z = logits.detach().requires_grad_(True)
        compiled(z, y[:100], frame).backward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        ref = z.grad
        z2 = logits.detach().requires_grad_(True)
        reference_loss(z2, y[:100], frame).backward()
        assert ref is not None and z2.grad is not None
        close = bool(torch.allclose(ref, z2.grad, rtol=1e-6, atol=0))
        return compiled, (f"compiled in {seconds:.1f} s (once per shape); gradient "
                          f"{'equals' if close else 'DIFFERS FROM'} the eager one to 1e-6")
    except Exception as exc:  # noqa: BLE001 - an alternative that fails is a finding
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _loss_only_rows(device: str, reps: int, calls: int, tiny: bool) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(100, 10, generator=gen)).to(device)
    y = torch.randint(0, 10, (100,), generator=gen).to(device)
    frame = _log_mean_loss(logits, y)

    def loop(fn: LossFn) -> Callable[[], None]:
        def go() -> None:
            z = logits.detach().requires_grad_(True)
            for _ in range(calls):
                fn(z, y, frame).backward()
        return go

    t = interleave({k: loop(fn) for k, fn in LOSSES.items()}, reps=reps, device=device)
    fused_ref = med([a / b for a, b in zip(t["times"]["fused"], t["times"]["log_losses"])])
    bench = f"loss alone ((100, 10) logits, forward + backward, {device})"
    per = {k: t[k] / calls for k in LOSSES}
    detail = ", ".join(f"{k} {per[k] * 1e6:.0f} us" for k in LOSSES) + (
        "; dry run" if tiny else "")
    return [row(bench, "time ratio fused / log_losses", fused_ref, "<= 1.0",
                None if tiny else fused_ref <= 1.0, detail),
            row(bench, "time ratio fused / float32 CE", t["ratios"]["fused"], "info", None,
                detail)]


def run(quick: bool = False, device: str = "cpu", tiny: bool = False,
        batch_size: int = 100) -> list[Row]:
    """Rows per model (fused vs log_losses vs CE steps) and for the loss alone.

    Every side runs in IEEE float32 with deterministic algorithms off (torch's own default
    lets cuDNN convolutions use TF32).
    """
    with dry_run(tiny), training_precision("fp32"), deterministic_algorithms(False):
        return _rows(quick, device, tiny, batch_size)


def _rows(quick: bool, device: str, tiny: bool, batch_size: int) -> list[Row]:
    reps = reps_for(quick, 3 if device == "cuda" else 5)
    cuda = device == "cuda"
    n = 300 if tiny else (10_000 if cuda else 2000)
    x, y, source = images28(n)
    width = 0.25 if tiny else 1.0
    rows = _model_rows("cnn 28x28", lambda: create_model("cnn", in_chans=1, img_size=28,
                                                           width=width),
                       x, y, source, device, reps, batch_size, cuda and not tiny, tiny)
    if cuda or tiny:
        x32, y32 = images32(100 if tiny else 10_000)
        vgg_width = 0.125 if tiny else 1.0
        # torch.compile is tried on the CNN only: the loss sees (100, 10) logits either way.
        rows += _model_rows("vgg16 32x32", lambda: create_model(
            "vgg16", in_chans=3, img_size=32, bias="first", width=vgg_width),
            x32, y32, "noise", device, reps, batch_size, False, tiny)
    rows += _loss_only_rows(device, reps, 20 if tiny else 200, tiny)
    return rows
