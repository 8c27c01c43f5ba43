"""Run the benchmarks: ``python -m benchmarks [--only margins,certify] [--quick]``.

Prints one table (each figure, its target, whether met) and writes
benchmarks/results.json with the machine, torch version and thread count.

``--device cuda`` runs the cuda suite (train, loss, margins, eval, certify, presets) on the
GPU and writes benchmarks/results-cuda.json instead; ``--tiny`` runs the same suite at toy
sizes as a dry run (on the CPU: what ``benchmarks/gpu.sh --device cpu`` does), writing
only where ``--out`` says.
"""

from __future__ import annotations

import argparse
import inspect
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
    bench_distributed,
    bench_eval,
    bench_growth,
    bench_loss,
    bench_margins,
    bench_presets,
    bench_schedule,
    bench_train,
    bench_warm,
)
from .common import DEFAULT_THREADS, DEVICES, Row, machine, resolve_device, row, set_threads
from .junit import junit_rows

BENCHMARKS: dict[str, ModuleType] = {
    "train": bench_train,
    "margins": bench_margins,
    "schedule": bench_schedule,
    "eval": bench_eval,
    "certify": bench_certify,
    "growth": bench_growth,
    "warm": bench_warm,
    "loss": bench_loss,
    "presets": bench_presets,
    "distributed": bench_distributed,
}
# What a plain ``python -m benchmarks`` runs on the CPU (unchanged by the cuda suite).
CPU_SUITE = ("train", "margins", "schedule", "eval", "certify", "growth", "warm", "loss",
             "distributed")
# What ``--device cuda`` (and a ``--tiny`` dry run) runs: the modules that take a device.
CUDA_SUITE = ("train", "loss", "margins", "eval", "certify", "presets")
RESULTS = Path(__file__).with_name("results.json")
RESULTS_CUDA = Path(__file__).with_name("results-cuda.json")
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
    p.add_argument("--schedule-models", default="cnn,mlp",
                   help="comma-separated digits models of the schedule benchmark "
                        "(default cnn,mlp)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where to run: cpu (default), cuda (the cuda suite, results to "
                        "benchmarks/results-cuda.json) or auto (cuda when present)")
    p.add_argument("--tiny", action="store_true",
                   help="dry run of the cuda suite at toy sizes (figures meaningless); "
                        "writes a file only with --out")
    p.add_argument("--junit", type=Path, default=None,
                   help="a pytest JUnit XML report to include as rows (benchmarks/gpu.sh "
                        "passes the CUDA tests' one); a failed test makes the exit code 1")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the results (default benchmarks/results.json, "
                        "benchmarks/results-cuda.json with --device cuda)")
    args = p.parse_args(argv)
    args.device = resolve_device(args.device)
    suite = CUDA_SUITE if args.device == "cuda" or args.tiny else CPU_SUITE
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(suite)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.device == "cuda" or args.tiny:
        cpu_only = [n for n in names if n not in CUDA_SUITE]
        if cpu_only:
            p.error(f"{', '.join(cpu_only)} run(s) on the CPU only; with --device cuda or "
                    f"--tiny choose from {', '.join(CUDA_SUITE)}")
    if args.out is None and not args.tiny:
        args.out = RESULTS_CUDA if args.device == "cuda" else RESULTS
    args.names = names
    return args


def _kwargs(module: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    """``quick``, and ``device``/``tiny`` for the modules that take them (the cuda suite)."""
    kwargs: dict[str, Any] = {"quick": args.quick}
    params = inspect.signature(module.run).parameters
    if args.device != "cpu" or args.tiny:
        kwargs.update({k: getattr(args, k) for k in ("device", "tiny") if k in params})
    return kwargs


def _value(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 and float(v).is_integer() else f"{v:.3f}"


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; return 1 if one of them crashed or a ``--junit`` test
    failed (a missed target is not)."""
    args = _parse(argv)
    if args.device == "cuda":
        from marginrobust.precision import set_cublas_workspace_config

        # Before any CUDA work: cuBLAS reads it when it creates its handle, and the
        # --deterministic rows need it.
        set_cublas_workspace_config()
    threads = set_threads(args.threads)
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    crashed = False
    tests_ok = True
    if args.junit is not None:
        test_rows, tests_ok = junit_rows(args.junit)
        rows.extend(test_rows)
    start = time.perf_counter()
    for name in args.names:
        kwargs = _kwargs(BENCHMARKS[name], args)
        if name == "schedule":
            kwargs["target"] = args.schedule_target
            kwargs["models"] = [m for m in args.schedule_models.split(",") if m]
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name].run(**kwargs)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            crashed = True
            traceback.print_exc()
            result = row(name, "crashed", math.nan, "-", False, f"{type(exc).__name__}: {exc}")
        seconds[name] = time.perf_counter() - t0
        results = result if isinstance(result, list) else [result]
        for r in results:
            r.setdefault("module", name)  # which module made it, for merging partial runs
        rows.extend(results)
        for r in results:
            print(f"[{seconds[name]:6.0f} s] {r['benchmark']}: {r['figure']} = "
                  f"{_value(r['value'])} ({r['detail']})", file=sys.stderr, flush=True)
        if args.out is not None and (args.device != "cpu" or args.tiny):
            # Written after every module on a GPU run, so a run stopped by its time limit
            # still leaves what it measured (marked incomplete).
            _write(args, _payload(args, threads, rows, seconds,
                                  time.perf_counter() - start, complete=False))
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
          f"{'; quick mode' if args.quick else ''}"
          f"{'; device ' + args.device if args.device != 'cpu' else ''}"
          f"{'; dry run (--tiny)' if args.tiny else ''}")
    print(f"targets missed: {len(missed)}" + "".join(f"\n  - {m}" for m in missed))
    if args.out is None:
        print("no results file written (a --tiny dry run writes one only with --out)")
    else:
        payload = _payload(args, threads, rows, seconds, total, complete=True)
        if args.only and args.out.exists():
            payload = _merge(json.loads(args.out.read_text()), payload, args.names)
            print(f"merged into {args.out}: the rows of {', '.join(args.names)} replaced, "
                  "the others kept")
        _write(args, payload)
    return 1 if crashed or not tests_ok else 0


# How rows written before rows named their module begin: benchmark name prefix → module.
_LEGACY_PREFIXES = (("schedule:", "schedule"), ("certify:", "certify"),
                    ("loss step", "loss"), ("loss alone", "loss"), ("training step", "train"),
                    ("margin statistics", "margins"), ("eval overhead", "eval"),
                    ("eval repeatab", "eval"), ("growth:", "growth"), ("warm start", "warm"),
                    ("distributed:", "distributed"), ("presets", "presets"))


def _module_of(r: dict[str, Any]) -> str | None:
    """The benchmark module a stored row came from (None: unknown)."""
    if r.get("module"):
        return str(r["module"])
    return next((m for prefix, m in _LEGACY_PREFIXES
                 if str(r.get("benchmark", "")).startswith(prefix)), None)


def _merge(old: dict[str, Any], new: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A results file where the modules just run (``names``) replace their earlier rows
    and every other module's rows, seconds and extras stay as they were measured."""
    kept = [r for r in old.get("results", []) if _module_of(r) not in names]
    merged = {**old, **{k: v for k, v in new.items() if k not in ("results", "seconds",
                                                                 "only", "total_s")}}
    merged["results"] = kept + new["results"]
    merged["seconds"] = {**old.get("seconds", {}), **new["seconds"]}
    merged["only"] = sorted(set(old.get("only") or []) | set(names))
    merged["total_s"] = sum(merged["seconds"].values())
    for key in EXTRAS:  # an extra belongs to the module whose rows carried it
        if key not in new and key in old:
            merged[key] = old[key]
    return merged


def _payload(args: argparse.Namespace, threads: int, rows: list[Row],
             seconds: dict[str, float], total: float, complete: bool) -> dict[str, Any]:
    info = machine()
    payload = {"machine": info, "torch": info["torch"], "threads": threads,
               "quick": args.quick, "only": args.names, "total_s": total,
               "seconds": seconds,
               "results": [{k: v for k, v in r.items() if k not in EXTRAS} for r in rows],
               **{k: r[k] for r in rows for k in EXTRAS if k in r}}
    if args.device != "cpu" or args.tiny:
        payload.update(device=args.device, tiny=args.tiny, cudnn=_cudnn(), complete=complete)
    return payload


def _write(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    # Through a temporary file, so a reader never sees half a file.
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    tmp.replace(args.out)


def _cudnn() -> int | None:
    import torch

    return torch.backends.cudnn.version() if torch.cuda.is_available() else None


if __name__ == "__main__":
    sys.exit(main())
