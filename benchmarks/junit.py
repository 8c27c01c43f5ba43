"""Test outcomes as result rows: a pytest JUnit XML report read into the benchmark table.

``benchmarks/gpu.sh`` runs the CUDA tests (``pytest -k cuda``) before the cuda suite and
hands their report to ``python -m benchmarks --junit FILE``, so that results-cuda.json
says which tests ran on the GPU and how they ended, next to the figures.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .common import Row, row

BENCHMARK = "CUDA tests (pytest -k cuda)"


def outcome(case: ET.Element) -> str:
    """``passed``, ``failed``, ``error`` or ``skipped`` for one ``<testcase>``."""
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return "failed" if tag == "failure" else tag
    return "passed"


def junit_rows(path: Path) -> tuple[list[Row], bool]:
    """One row per test and a summary row; and whether every test that ran passed.

    A missing or unreadable report is one failed row (the tests did not finish).
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        return [row(BENCHMARK, "tests run", 0, "all pass", False,
                    f"no readable report at {path}: {type(exc).__name__}")], False
    rows: list[Row] = []
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for case in root.iter("testcase"):
        what = outcome(case)
        counts[what] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        detail = ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                detail = (node.get("message") or "").splitlines()[0][:200] if (
                    node.get("message")) else tag
        rows.append(row(BENCHMARK, name, float(case.get("time", 0.0)), "passes",
                        None if what == "skipped" else what == "passed",
                        f"{what}{': ' + detail if detail else ''} (value: seconds)"))
    ok = counts["failed"] == 0 and counts["error"] == 0
    ran = counts["passed"] + counts["failed"] + counts["error"]
    summary = row(BENCHMARK, "tests passed", counts["passed"], "all that ran", ok,
                  ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {ran} ran")
    return [summary, *rows], ok
