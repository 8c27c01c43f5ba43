"""README figures regenerate from committed files: each is checked against the JSON it came from.

The "Logit scale" table (How evaluation works) comes from
``python -m benchmarks.attack_strength`` → benchmarks/results-attack-strength.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ATTACK_STRENGTH = ROOT / "benchmarks" / "results-attack-strength.json"

# README row label → the JSON's attack; README column header → the JSON's variant.
ROW_ATTACKS = {"PGD": "pgd", "APGD-CE alone": "apgd-ce"}
COLUMN_VARIANTS = (("raw model", "raw"), ("spread 1", "spread1"), ("now", "now"))


def _bullet(text: str, title: str) -> list[str]:
    """The lines of the README bullet that starts with ``* **title**``."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"* **{title}")]
    assert len(starts) == 1, f"README: expected one bullet '{title}', found {len(starts)}"
    out = [lines[starts[0]]]
    for line in lines[starts[0] + 1:]:
        if line.startswith(("* ", "#")) or (line and not line.startswith(" ")):
            break
        out.append(line)
    return out


def _table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the first Markdown table among ``lines``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines if line.strip().startswith("|")]
    assert len(rows) >= 3, "README: the Logit scale bullet has no table"
    header, rule, body = rows[0], rows[1], rows[2:]
    assert all(set(c) <= set("-: ") for c in rule), f"README: not a table rule: {rule}"
    return header, body


@pytest.fixture(scope="module")
def strength() -> dict:
    return json.loads(ATTACK_STRENGTH.read_text())


@pytest.fixture(scope="module")
def logit_scale_bullet() -> list[str]:
    return _bullet(README.read_text(), "Logit scale.")


def test_attack_strength_json_is_a_full_run(strength: dict) -> None:
    assert strength["quick"] is False
    assert strength["command"] == "python -m benchmarks.attack_strength"
    assert strength["threads"] == 1
    setup = strength["setup"]
    assert setup["seeds"] == [0, 1, 2, 3] and setup["epochs"] == [10, 120]
    assert setup["points"]["n"] == 200
    # Every mean is the mean of the per-seed figures it summarises.
    for attack, variants in strength["means"].items():
        for variant, norms in variants.items():
            for norm, by_epoch in norms.items():
                for epoch, mean in by_epoch.items():
                    vals = [r["robust"][attack][variant][norm] for r in strength["per_seed"]
                            if r["epoch"] == int(epoch)]
                    assert len(vals) == len(setup["seeds"])
                    assert mean == pytest.approx(sum(vals) / len(vals), abs=1e-12)


def test_logit_scale_setup_matches_json(logit_scale_bullet: list[str], strength: dict) -> None:
    prose = " ".join(" ".join(logit_scale_bullet).split())
    setup = strength["setup"]
    epochs = " / ".join(str(e) for e in setup["epochs"])
    for phrase in (f"{setup['points']['n']} digits test points",
                   f"width {setup['model']['width']:g}, bias `{setup['model']['bias']}`",
                   f"{len(setup['seeds'])} seeds", f"epoch {epochs}"):
        assert phrase in prose, f"README Logit scale: {phrase!r} not found"


def test_logit_scale_table_equals_json_means(logit_scale_bullet: list[str],
                                             strength: dict) -> None:
    header, body = _table(logit_scale_bullet)
    columns: dict[int, str] = {}
    for i, cell in enumerate(header[1:], start=1):
        found = [v for key, v in COLUMN_VARIANTS if key in cell]
        assert len(found) == 1, f"README: column header {cell!r} names no single variant"
        columns[i] = found[0]
    assert sorted(columns.values()) == sorted(v for _, v in COLUMN_VARIANTS)
    budgets = strength["setup"]["budgets"]
    epochs = [str(e) for e in strength["setup"]["epochs"]]
    seen = set()
    for row in body:
        m = re.fullmatch(r"(.+), (Linf|L2) ([0-9.]+)", row[0])
        assert m, f"README: row label {row[0]!r} is not 'ATTACK, NORM EPS'"
        attack, norm = ROW_ATTACKS[m.group(1)], m.group(2)
        assert float(m.group(3)) == budgets[norm], f"README row {row[0]!r}: budget"
        assert (attack, norm) not in seen, f"README: row {row[0]!r} twice"
        seen.add((attack, norm))
        assert len(row) == len(header), f"README row {row[0]!r}: {len(row)} cells"
        for i, variant in columns.items():
            expected = " / ".join(f"{strength['means'][attack][variant][norm][e]:.3f}"
                                  for e in epochs)
            assert row[i] == expected, (f"README row {row[0]!r}, column {header[i]!r}: "
                                        f"{row[i]!r}, the JSON gives {expected!r}")
    # Every (attack, norm) the JSON measured is in the table.
    assert seen == {(a, n) for a in strength["means"] for n in budgets}, \
        f"README table rows {sorted(seen)} differ from the JSON's"
