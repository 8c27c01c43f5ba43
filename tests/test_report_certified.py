"""The board's certificate table: one long row per certifier, read from the records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from marginrobust.report.certified import (
    CERTIFIED_COLUMNS,
    certified_links,
    certified_section,
    certified_table,
)
from marginrobust.report.loader import RECORD_DEFAULTS, RunData

N = 40


def record(epoch: int, method: str, acc: float, *, norm: str = "Linf", eps: float = 0.1,
           median: float | None = None, skipped: str | None = None,
           config: str = "{}") -> dict:
    return {**RECORD_DEFAULTS, "checkpoint": f"epoch-{epoch:06d}", "split": "test",
            "method": method, "norm": norm, "eps": eps, "n": N, "seed": 0, "config": config,
            "robust_acc": acc, "median_distance": median, "skipped": skipped,
            "epoch": epoch, "log10_loss": -epoch / 10, "train_acc": 1.0,
            "normalized_margin": 0.01 * epoch}


def run(records: list[dict]) -> RunData:
    info = {"run": {"dataset": "digits", "model": "mlp", "model_kwargs": {},
                    "train": {"schedule": "loss-based"}}}
    return RunData(Path("r"), "r", info, records)


# Median CROWN radii over four checkpoints, against margins 0.1, 0.2, 0.3, 0.4.
CROWN_MEDIANS = (0.02, 0.05, 0.04, 0.09)


@pytest.fixture
def records() -> list[dict]:
    out = []
    for k, epoch in enumerate((10, 20, 30, 40)):
        out += [record(epoch, "certify-lipschitz", 0.0, median=0.01 * k),
                record(epoch, "certify-crown", 0.25 + 0.05 * k, median=CROWN_MEDIANS[k]),
                record(epoch, "certify-exact", None, skipped="too big"),
                record(epoch, "certified", 0.3 + 0.05 * k),
                # Two attack sets: the stronger (lower) one decides what no attack broke.
                record(epoch, "worst", 0.8, config='{"a": 1}'),
                record(epoch, "worst", 0.7, config='{"a": 2}'),
                record(epoch, "autoattack", 0.75)]
    return out


def wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_rows_per_certifier_with_intervals_and_undecided(records):
    table = certified_table([run(records)])
    assert list(table.columns) == list(CERTIFIED_COLUMNS)
    # 4 checkpoints × (lipschitz, crown, exact, any); attacks are not certificates.
    assert len(table) == 16
    assert list(table["certifier"][:4]) == ["lipschitz", "crown", "exact", "any"]
    last = table[table["epoch"] == 40].set_index("certifier")
    assert last.loc["crown", "certified_acc"] == pytest.approx(0.40)
    lo, hi = wilson(0.40, N)
    assert last.loc["crown", "certified_acc_lo"] == pytest.approx(lo, rel=1e-9)
    assert last.loc["crown", "certified_acc_hi"] == pytest.approx(hi, rel=1e-9)
    # No attack broke 0.7 of the points (the stronger set), 0.45 are certified: 0.25 open.
    assert (last["attack_robust_acc"] == 0.7).all()
    assert last["undecided"].to_numpy() == pytest.approx(np.full(4, 0.25))
    assert last.loc["exact", "skipped"] == "too big"
    assert np.isnan(last.loc["exact", "certified_acc"])


def test_margin_link_per_certifier_is_spearman(records):
    table = certified_table([run(records)])
    links = certified_links(table).set_index("certifier")
    # Only certifiers with radii: the skipped exact and the union have none.
    assert sorted(links.index) == ["crown", "lipschitz"]
    want = spearmanr([0.1, 0.2, 0.3, 0.4], CROWN_MEDIANS).statistic
    assert links.loc["crown", "spearman"] == pytest.approx(want)
    assert links.loc["crown", "n_checkpoints"] == 4 and links.loc["crown", "n_fitted"] == 4
    assert links.loc["lipschitz", "spearman"] == pytest.approx(1.0)


def test_section_shows_the_last_checkpoint_and_says_what_did_not_run(records):
    table = certified_table([run(records)])
    section = certified_section(table, certified_links(table))
    summary = section.tables[0].frame
    assert list(summary["epoch"]) == [40]
    assert summary.loc[0, "crown"] == pytest.approx(0.40)
    assert "exact" not in summary.columns
    assert "Not run: exact: too big." in section.note
    assert certified_section(certified_table([]), certified_links(
        certified_table([]))) is None
