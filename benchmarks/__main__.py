"""Run the benchmarks: ``python -m benchmarks [--only margins,certify] [--quick]``.

Prints one table (each figure, its target, whether met) and writes
benchmarks/results.json with the machine, torch version and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from tabulate import tabulate

from . import (
    bench_certify,
    bench_eval,
    bench_growth,
    bench_margins,
    bench_schedule,
    bench_train,
    bench_warm,
)
from .common import DEFAULT_THREADS, Row, machine, row, set_threads

BENCHMARKS: dict[str, ModuleType] = {
    "train": bench_train,
    "margins": bench_margins,
    "schedule": bench_schedule,
    "eval": bench_eval,
    "certify": bench_certify,
    "growth": bench_growth,
    "warm": bench_warm,
}
# Row keys that hold bulky extras: saved in results.json, printed after the table.
EXTRAS = ("profile", "profile_tottime")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", default="",
                   help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller sizes (for development)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch intra-op threads (default {DEFAULT_THREADS})")
    p.add_argument("--schedule-target", type=float, default=None,
                   help=f"log10 loss target of the schedule benchmark (default "
                        f"{bench_schedule.DEFAULT_TARGET:g}; the paper's is "
                        f"{bench_schedule.PAPER_TARGET:g})")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"),
                   help="where to write the results (default benchmarks/results.json)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def _value(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 and float(v).is_integer() else f"{v:.3f}"


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; return 1 if one of them crashed (a missed target is not)."""
    args = _parse(argv)
    threads = set_threads(args.threads)
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    crashed = False
    start = time.perf_counter()
    for name in args.names:
        kwargs: dict[str, Any] = {"quick": args.quick}
        if name == "schedule":
            kwargs["target"] = args.schedule_target
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name].run(**kwargs)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            crashed = True
            traceback.print_exc()
            result = row(name, "crashed", math.nan, "-", False, f"{type(exc).__name__}: {exc}")
        seconds[name] = time.perf_counter() - t0
        results = result if isinstance(result, list) else [result]
        rows.extend(results)
        for r in results:
            print(f"[{seconds[name]:6.0f} s] {r['benchmark']}: {r['figure']} = "
                  f"{_value(r['value'])} ({r['detail']})", file=sys.stderr, flush=True)
    total = time.perf_counter() - start

    print(tabulate([[r["benchmark"], r["figure"], _value(r["value"]), r["target"], _met(r["ok"]),
                     r["detail"]] for r in rows],
                   headers=["benchmark", "figure", "value", "target", "met", "detail"],
                   tablefmt="github"))
    for r in rows:
        if r.get("profile"):
            print(f"\ncProfile of {r['benchmark']}, top 10 by cumulative time:")
            print(tabulate([[e["function"], e["where"], e["ncalls"], f"{e['tottime_s']:.3f}",
                             f"{e['cumtime_s']:.3f}"] for e in r["profile"]],
                           headers=["function", "where", "ncalls", "tottime s", "cumtime s"],
                           tablefmt="github"))
    info = machine()
    missed = [f"{r['benchmark']}: {r['figure']}" for r in rows if r["ok"] is False]
    print(f"\nmachine: {info}")
    print(f"total: {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})"
          f"{'; quick mode' if args.quick else ''}")
    print(f"targets missed: {len(missed)}" + "".join(f"\n  - {m}" for m in missed))
    payload = {"machine": info, "torch": info["torch"], "threads": threads,
               "quick": args.quick, "only": args.names, "total_s": total,
               "seconds": seconds,
               "results": [{k: v for k, v in r.items() if k not in EXTRAS} for r in rows],
               **{k: r[k] for r in rows for k in EXTRAS if k in r}}
    args.out.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
