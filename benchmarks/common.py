"""Timing helpers: A and B alternated in one process, medians and ratios."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def alternate(a: Callable[[], None], b: Callable[[], None], reps: int = 5,
              warmup: int = 1) -> dict[str, float]:
    """Time ``a`` and ``b`` alternately; return median seconds and the median ratio a/b.

    Alternating inside one process makes both sides see the same machine state
    (other load, CPU frequency, caches), so the ratio is steadier than either time.
    """
    for _ in range(warmup):
        a()
        b()
    ta, tb, ratios = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "ratio": statistics.median(ratios)}
