"""Timing helpers and shared fixtures: A and B alternated in one process, medians and ratios.

Every figure of the suite is a ratio of two things timed alternately in this process, so
that both see the same machine state (other jobs, CPU frequency, caches); absolute times
are only reported beside the ratios. On cuda every timed call is bracketed by
``torch.cuda.synchronize()``, so a time covers the kernels it launched, not just their launch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Threads used by default: the suite is meant for a quiet 2-core machine.
DEFAULT_THREADS = 2
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

Row = dict[str, Any]


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value (``auto``: cuda when present).

    Raises:
        SystemExit: cuda asked for on a machine without a CUDA device (one sentence, code 2).
    """
    if name not in DEVICES:
        raise SystemExit(f"--device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        print("--device cuda was asked for but no CUDA device is available", file=sys.stderr)
        raise SystemExit(2)
    return name


# A dry run (``--tiny``) checks that every part runs, not what it costs: one timed round
# per callable, no warm-up. Set through :func:`dry_run`.
_DRY = {"on": False}


@contextlib.contextmanager
def dry_run(enabled: bool = True) -> Iterator[None]:
    """Inside: :func:`interleave` runs each callable once (no warm-up, one round)."""
    before = _DRY["on"]
    _DRY["on"] = enabled or before
    try:
        yield
    finally:
        _DRY["on"] = before


def sync(device: str | torch.device | None) -> None:
    """Wait for the device's queued kernels (cuda); nothing on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def set_threads(n: int = DEFAULT_THREADS) -> int:
    """Pin torch's intra-op threads (recorded in results.json) and return the number."""
    torch.set_num_threads(n)
    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def alternate(a: Callable[[], None], b: Callable[[], None], reps: int = 5,
              warmup: int = 1, device: str | torch.device | None = None) -> dict[str, float]:
    """Time ``a`` and ``b`` alternately; return median seconds and the median ratio a/b.

    Alternating inside one process makes both sides see the same machine state
    (other load, CPU frequency, caches), so the ratio is steadier than either time.
    ``device``: synchronise it around each timed call (cuda).
    """
    t = interleave({"a": a, "b": b}, reps=reps, warmup=warmup, device=device)
    return {"a_s": t["a"], "b_s": t["b"], "ratio": t["ratios"]["a"]}


def interleave(fns: dict[str, Callable[[], Any]], reps: int = 5, warmup: int = 1,
               setup: Callable[[str], None] | None = None,
               device: str | torch.device | None = None) -> dict[str, Any]:
    """Time several callables round-robin; medians and per-round ratios to the last one.

    Each round runs every callable once, in the given order, so the ratio of any one to
    the reference (the last) is taken from timings a few seconds apart.

    Args:
        fns: Named callables; the last one is the reference of the ratios.
        reps: Timed rounds.
        warmup: Untimed rounds first (lazy imports, allocator, caches).
        setup: Called untimed with the name before each call (e.g. to clear a cache dir).
        device: Synchronise it before and after each timed call (cuda; None: no sync).

    Returns:
        ``{name: median seconds, ..., "ratios": {name: median of per-round ratios},
        "times": {name: [seconds per round]}}``.
    """
    if _DRY["on"]:
        reps, warmup = 1, 0
    names = list(fns)
    ref = names[-1]
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + reps):
        for k in names:
            if setup is not None:
                setup(k)
            sync(device)
            t0 = time.perf_counter()
            fns[k]()
            sync(device)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(dt)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["ratios"] = {k: statistics.median(a / b for a, b in zip(times[k], times[ref],
                                                                 strict=True))
                     for k in names}
    out["times"] = times
    return out


def row(benchmark: str, figure: str, value: float, target: str, ok: bool | None,
        detail: str, **extra: Any) -> Row:
    """One result row; ``ok`` is None for figures reported without a target."""
    return {"benchmark": benchmark, "figure": figure, "value": float(value), "target": target,
            "ok": ok, "detail": detail, **extra}


def reps_for(quick: bool, full: int, fast: int = 2) -> int:
    """Timed repetitions: ``full`` normally, ``fast`` with ``--quick``."""
    return fast if quick else full


# Fashion-MNIST images are loaded once for the whole suite, then sliced.
_POOL = 10_000


def images28(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` 28x28 grey training images and labels: Fashion-MNIST when installed, else noise.

    Returns:
        (x in [0, 1] of shape (n, 1, 28, 28), int64 labels, a label of the source).
    """
    x, y, source = _images28_pool(max(n, _POOL))
    return x[:n], y[:n], source


@functools.lru_cache(maxsize=2)
def _images28_pool(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    # Cached: torchvision's reader takes ~10 s per load and several benchmarks use it.
    if all((FASHION_MNIST_DIR / f).is_file() for f in
           ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")):
        from marginrobust import load_dataset

        data = load_dataset("fashion-mnist", train_subset=n, seed=0)
        return data.x_train, data.y_train, "fashion-mnist"
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen),
            "random")


def images32(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 3x32x32 noise images in [0, 1] and labels (CIFAR-10's shape; timing only)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 32, 32, generator=gen),
            torch.randint(0, 10, (n,), generator=gen))


def fmt_s(seconds: float) -> str:
    """Seconds for a detail column: ms below one second."""
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def med(values: Sequence[float]) -> float:
    """Median (a short name for detail strings)."""
    return statistics.median(values)


def trained_digits_mlp(epochs: int = 15) -> tuple[nn.Module, Any]:
    """A digits MLP (512, 512) after a few loss-based epochs (~97% test accuracy).

    Returns:
        (the model in eval mode, the digits :class:`marginrobust.Dataset`).
    """
    return trained_digits("mlp", epochs)


@functools.lru_cache(maxsize=4)
def trained_digits(family: str, epochs: int = 15) -> tuple[nn.Module, Any]:
    """A digits model of ``family`` (``mlp``, ``cnn``) after a few loss-based epochs, on the CPU.

    Returns:
        (the model in eval mode, the digits :class:`marginrobust.Dataset`).
    """
    from marginrobust import TrainConfig, Trainer, create_model, load_dataset

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model(family, num_classes=10, in_chans=1, img_size=8)
    Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
            TrainConfig(epochs=epochs, device="cpu")).fit()
    return model.eval(), data
