"""The README's Performance table regenerates from the committed benchmark results
(benchmarks/results.json, and the deeper schedule runs beside it in
results-schedule-target-*.json): every number in its value column is a figure of those
files, as printed there."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table_values() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Performance"):]
    section = section[:section.index("\n## ", 4)]
    table = section[section.index("| benchmark | figure | value |"):].split("\n\n")[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    return [(cells[0].strip(), cells[2].strip()) for cells in rows]


def _numbers(text: str) -> list[str]:
    return re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text)


def _committed() -> list[float]:
    files = [ROOT / "benchmarks" / "results.json",
             *sorted((ROOT / "benchmarks").glob("results-schedule-target-*.json"))]
    results = [r for f in files for r in json.loads(f.read_text())["results"]]
    found: list[float] = []
    for r in results:
        if isinstance(r.get("value"), (int, float)):
            found.append(float(r["value"]))
        found += [float(n.replace(",", "")) for n in _numbers(str(r.get("detail", "")))]
    return found


def _matches(shown: str, committed: list[float]) -> bool:
    value = float(shown.replace(",", ""))
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return any(round(c, decimals) == value or abs(c - value) <= 0.5 * 10**-decimals
               for c in committed)


def test_every_performance_figure_is_in_the_committed_results():
    committed = _committed()
    rows = _table_values()
    assert len(rows) >= 15
    for name, cell in rows:
        for shown in _numbers(cell):
            assert _matches(shown, committed), f"{name}: {shown} is in no results file"
