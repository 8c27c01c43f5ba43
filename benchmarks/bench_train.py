"""Training step: marginrobust's trainer vs a plain PyTorch SGD loop.

Same model (the paper's CNN on 28x28 inputs), same data (Fashion-MNIST when installed,
else noise), same batch size (100). The trainer's epoch adds the float64 log-domain loss
with the frame, the explosion check kept on the device, and the rollback snapshot; the
plain loop uses F.cross_entropy.

With ``--device cuda`` (or ``--tiny``, the same rows at toy sizes on the CPU) the paper's
CNN (1x28x28) and VGG-16 (3x32x32, bias in the first layer as the cifar10 preset has it)
are timed on 10,000 images, both sides under the same flags (fp32, deterministic
algorithms off), CUDA-synchronised, and per model four rows: the step ratio (target
>= 0.90), a full accepted epoch (the SGD pass plus the per-epoch train and test
measurements) against the plain epoch, and the trainer epoch's cost of
``--deterministic`` and gain from ``--precision tf32``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marginrobust import TrainConfig, Trainer, create_model
from marginrobust.precision import deterministic_algorithms, training_precision

from .common import Row, alternate, dry_run, fmt_s, images28, images32, interleave, reps_for, row

CUDA_TARGET = 0.90


def run(quick: bool = False, n: int = 2000, batch_size: int = 100, device: str = "cpu",
        tiny: bool = False) -> Row | list[Row]:
    """Throughput ratio (steps/s) of ``Trainer._run_epoch`` over a plain SGD epoch.

    On the CPU without ``tiny``: the one row of the CPU suite. Otherwise the per-model
    rows of the cuda suite (see the module docstring).
    """
    if device != "cpu" or tiny:
        with dry_run(tiny):
            return _device_rows(quick, device, tiny, batch_size)
    x, y, source = images28(n)
    torch.manual_seed(0)
    ours = create_model("cnn", in_chans=1, img_size=28)
    plain = create_model("cnn", in_chans=1, img_size=28)
    plain.load_state_dict(ours.state_dict())
    trainer = Trainer(ours, x, y, x[:100], y[:100],
                      TrainConfig(batch_size=batch_size, lr=0.01, schedule="constant",
                                  device="cpu"))
    trainer.schedule.start(0.0)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    if quick:
        # Fewer steps per timed call: the ratio only needs a few dozen steps per side.
        n = n // 2
        trainer.x_train, trainer.y_train = x[:n], y[:n]

    def marginrobust_epoch() -> None:
        trainer._run_epoch()

    def plain_epoch() -> None:
        plain.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(plain(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = alternate(marginrobust_epoch, plain_epoch, reps=reps_for(quick, 5))
    steps = -(-n // batch_size)
    value = 1 / t["ratio"]
    return row("training step (cnn 28x28, batch 100)", "throughput ratio marginrobust/plain",
               value, ">= 0.95", value >= 0.95,
               f"{steps / t['a_s']:.1f} vs {steps / t['b_s']:.1f} steps/s, {n} {source} images")


# (label, model name, kwargs, input shape, images on cuda, images in a dry run)
_MODELS: tuple[tuple[str, str, dict[str, Any], tuple[int, int, int], int, int], ...] = (
    ("cnn 1x28x28", "cnn", {}, (1, 28, 28), 10_000, 300),
    ("vgg16 3x32x32", "vgg16", {"bias": "first"}, (3, 32, 32), 10_000, 100),
)


def _images(shape: tuple[int, int, int], n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if shape == (1, 28, 28):
        return images28(n)
    x, y = images32(n)
    return x, y, "noise"


def _plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, batch_size: int, gen: torch.Generator) -> Callable[[], None]:
    """A plain SGD epoch on F.cross_entropy, the data order drawn as the trainer draws it."""
    def epoch() -> None:
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epoch


@contextmanager
def flags(precision: str = "fp32", deterministic: bool = False) -> Iterator[None]:
    """The training flags both sides of a comparison run under."""
    with training_precision(precision), deterministic_algorithms(deterministic):
        yield


def _under(precision: str, deterministic: bool, fn: Callable[[], None]) -> Callable[[], None]:
    def go() -> None:
        with flags(precision, deterministic):
            fn()
    return go


def _device_rows(quick: bool, device: str, tiny: bool, batch_size: int) -> list[Row]:
    rows: list[Row] = []
    for label, name, kwargs, shape, n_cuda, n_tiny in _MODELS:
        if tiny:
            kwargs = {**kwargs, "width": 0.125 if name == "vgg16" else 0.25}
        rows += _model_rows(label, name, kwargs, shape, n_tiny if tiny else n_cuda, quick,
                            device, tiny, batch_size)
    return rows


def _model_rows(label: str, name: str, kwargs: dict[str, Any], shape: tuple[int, int, int],
                n: int, quick: bool, device: str, tiny: bool, batch_size: int) -> list[Row]:
    reps = reps_for(quick, 3)
    x, y, source = _images(shape, n)
    n_test = max(n // 10, 50)
    torch.manual_seed(0)
    ours = create_model(name, in_chans=shape[0], img_size=shape[1:], **kwargs)
    plain = create_model(name, in_chans=shape[0], img_size=shape[1:], **kwargs)
    plain.load_state_dict(ours.state_dict())
    trainer = Trainer(ours, x, y, x[:n_test], y[:n_test],
                      TrainConfig(batch_size=batch_size, lr=0.01, schedule="constant",
                                  device=device))
    trainer.schedule.start(0.0)
    plain = plain.to(device)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    plain_epoch = _plain_epoch(plain, opt, trainer.x_train, trainer.y_train, batch_size,
                               torch.Generator().manual_seed(0))

    def ours_epoch() -> None:
        trainer._run_epoch()

    def accepted_epoch() -> None:
        # The trainer's own accepted epoch: rollback snapshot, SGD pass, train-set stats,
        # the schedule's verdict (a constant rate accepts) and the epoch record.
        trainer._advance_one_epoch()

    t = interleave({"ours": _under("fp32", False, ours_epoch),
                    "accepted": _under("fp32", False, accepted_epoch),
                    "plain": _under("fp32", False, plain_epoch)}, reps=reps, device=device)
    steps = -(-n // batch_size)
    value = 1 / t["ratios"]["ours"]
    where = f"{n} {source} images, {device}" + ("; dry run" if tiny else "")
    bench = f"training step ({label}, batch {batch_size}, fp32, {device})"
    target = CUDA_TARGET if device == "cuda" else 0.95
    rows = [row(bench, "throughput ratio marginrobust/plain", value, f">= {target}",
                None if tiny else value >= target,
                f"{steps / t['ours']:.1f} vs {steps / t['plain']:.1f} steps/s; {where}"),
            row(bench, "time ratio accepted epoch (SGD + measurements)/plain epoch",
                t["ratios"]["accepted"], "info", None,
                f"{fmt_s(t['accepted'])} vs {fmt_s(t['plain'])}; {where}")]
    # The flags' costs on the trainer's own epoch (the plain loop's cross-entropy has no
    # deterministic CUDA kernel: torch refuses NLLLoss on cuda in deterministic mode).
    f = interleave({"det": _under("fp32", True, ours_epoch),
                    "tf32": _under("tf32", False, ours_epoch),
                    "ours": _under("fp32", False, ours_epoch)}, reps=reps, device=device)
    rows.append(row(bench, "trainer epoch: time ratio --deterministic / off", f["ratios"]["det"],
                    "info", None, f"{fmt_s(f['det'])} vs {fmt_s(f['ours'])}; {where}"))
    rows.append(row(bench, "trainer epoch: time ratio --precision tf32 / fp32",
                    f["ratios"]["tf32"], "info", None,
                    f"{fmt_s(f['tf32'])} vs {fmt_s(f['ours'])}; {where}"
                    f"{'; a CPU has no TF32' if device == 'cpu' else ''}"))
    return rows
