"""Run every benchmark: ``python -m benchmarks``; prints a table, writes benchmarks/results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate

from . import bench_train
from .common import machine

BENCHMARKS = [bench_train]


def main() -> None:
    rows = []
    for module in BENCHMARKS:
        result = module.run()
        results = result if isinstance(result, list) else [result]
        rows.extend(results)
        for r in results:
            print(f"{r['benchmark']}: {r['figure']} = {r['value']:.3f} ({r['detail']})",
                  file=sys.stderr)
    info = machine()
    print(tabulate([[r["benchmark"], r["figure"], f"{r['value']:.3f}", r["target"],
                     "yes" if r["ok"] else "NO", r["detail"]] for r in rows],
                   headers=["benchmark", "figure", "value", "target", "met", "detail"],
                   tablefmt="github"))
    print(f"\nmachine: {info}")
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps({"machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
