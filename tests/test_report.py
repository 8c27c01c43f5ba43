"""The report package on synthetic run folders with known numbers.

Run folders are written by hand as training and the evaluator lay them out on disk
(``run.json``, ``metrics.jsonl``, empty checkpoint files, ``eval/records.jsonl`` and the
per-point ``.npz`` arrays). ``alpha`` and ``beta`` (digits · cnn) have four evaluated
checkpoints each, along which the normalized margin rises while AutoAttack accuracy rises
(alpha) or falls (beta); beta has one more checkpoint never evaluated; ``gamma``
(digits · mlp) has no evaluation at all. Their records have the older layout (no seed,
config or skipped). ``delta`` has the newer one: several settings (n, seed, AutoAttack set)
per checkpoint and a certificate that could not be computed.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import marginrobust.io as mr_io
from marginrobust.errors import UserError
from marginrobust.evaluate.store import ArrayKey
from marginrobust.registry import ATTACKS
from marginrobust.report.board import write_leaderboard
from marginrobust.report.columns import (
    IDENTITY,
    INTEGER_COLUMNS,
    SETTINGS,
    SKIPPED,
    STRING_COLUMNS,
    TRAJECTORY,
    eps_labels,
    is_bound,
)
from marginrobust.report.compare import compare, compare_plot, format_compare
from marginrobust.report.correlations import link_statistics
from marginrobust.report.figures import MEDIAN, Figure, FigureIndex
from marginrobust.report.guard import MARKER
from marginrobust.report.loader import (
    load_all_distances,
    load_distances,
    load_runs,
    pick_distances,
)
from marginrobust.report.methods import minimal_norm_methods
from marginrobust.report.plots import (
    first_last_curves,
    margin_plot,
    robust_vs_eps_plot,
    robust_vs_margin_plot,
    write_plots,
)
from marginrobust.report.publish import publish, update_leaderboard
from marginrobust.report.render import static_text
from marginrobust.report.series import series
from marginrobust.report.tables import build_tables, leaderboard_frame, leaderboard_tables

EPS = {"L2": (0.5, 1.0), "Linf": (8 / 255,)}
CHECKPOINTS = (0, 10, 20, 30)
# Per evaluated checkpoint: AutoAttack and worst-case accuracy (before a per-ε offset).
AA = {"alpha": (0.1, 0.2, 0.3, 0.4), "beta": (0.4, 0.3, 0.2, 0.1)}
WORST = {"alpha": (0.05, 0.25, 0.15, 0.35), "beta": (0.35, 0.25, 0.15, 0.05)}
MARGIN_SLOPE = {"alpha": 1e-4, "beta": 2e-4, "gamma": 3e-4, "delta": 1e-4}
# The evaluation context a record carries (the trajectory at its checkpoint).
CONTEXT = ("epoch", "step", "log10_loss", "train_acc", "test_acc", "normalized_margin",
           "product_margin", "smoothed_margin")
CUSTOM = '{"attacks_to_run":["apgd-ce","apgd-t"],"version":"custom"}'
STANDARD = '{"attacks_to_run":["apgd-ce","apgd-t","fab-t","square"],"version":"standard"}'
NOT_CERTIFIABLE = "the model applies torch.sigmoid, which no certificate supports"
CHROMIUM = Path("/usr/bin/chromium")


def margin(run: str, epoch: int) -> float:
    # Negative before epoch 5 (data not separated yet), rising after.
    return (epoch - 5) * MARGIN_SLOPE[run]


def metrics_row(run: str, epoch: int) -> dict:
    m = margin(run, epoch)
    return {"epoch": epoch, "step": 14 * epoch, "wall_s": 0.5 * epoch,
            "log10_loss": 1.0 - epoch / 10, "train_acc": 0.5 if epoch < 10 else 1.0,
            "test_acc": 0.4 if epoch < 10 else 0.9, "rho": 10.0 + epoch,
            "homogeneity_order": 2, "normalized_margin": m, "product_margin": 100 * m,
            "smoothed_margin": m - 1e-5}


def fmn_distances(i: int) -> np.ndarray:
    d = np.linspace(0.0, 1.2, 10) * (i + 1) / 2
    d[-1] = np.inf  # the attack failed on that point
    return d


def record(run: str, epoch: int, split: str, method: str, norm: str, eps: float,
           robust: float | None, median: float | None = None, least: float | None = None,
           flags: tuple[str, ...] = (), n: int = 10, clean: float = 0.9, **extra) -> dict:
    """One record as the results store writes it (older layout unless ``extra`` adds more)."""
    context = {k: v for k, v in metrics_row(run, epoch).items() if k in CONTEXT}
    return {"checkpoint": f"epoch-{epoch:06d}", "split": split, "method": method, "norm": norm,
            "eps": eps, "n": n, "clean_acc": clean, "robust_acc": robust,
            "median_distance": median, "min_distance": least, "seconds": 0.1,
            **context, "train_wall_s": metrics_row(run, epoch)["wall_s"],
            "flags": list(flags), "run": run, **extra}


def write_records(run_dir: Path, records: list[dict]) -> None:
    lines = []
    for rec in records:
        rec = dict(rec)
        for key in ("median_distance", "min_distance"):  # JSON has no infinity
            if rec[key] is not None and math.isinf(rec[key]):
                rec[key], rec[f"{key}_infinite"] = None, True
        lines.append(json.dumps(rec, allow_nan=False) + "\n")
    (run_dir / "eval").mkdir(exist_ok=True)
    with open(run_dir / "eval" / "records.jsonl", "a") as fh:
        fh.writelines(lines)


def write_arrays(run_dir: Path, checkpoint: str, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(run_dir / "eval" / f"{checkpoint}.npz", **arrays)


def figures(run: str, i: int, epoch: int, split: str, norm: str, j: int) -> list[dict]:
    """The records of one (checkpoint, split, norm, j-th ε)."""
    eps = EPS[norm][j]
    clean = 0.5 if i == 0 else (0.9 if split == "test" else 1.0)
    scale = 1.0 if norm == "L2" else 0.1
    flags = ("a > b", "x broke 1") if (run, i, split) == ("alpha", 2, "test") else ()
    # The attack failed on most of beta's last test points: an infinite median distance.
    median = math.inf if (run, i, split, norm) == ("beta", 3, "test", "Linf") else 0.2 * (i + 1)
    table = [("autoattack", AA[run][i] - 0.01 * j, None, None, flags),
             ("worst", WORST[run][i] - 0.01 * j, None, None, flags[:1]),
             ("certified", 0.0, None, None, ()),
             ("fmn", AA[run][i], scale * median, 0.0, ()),
             ("certify-lipschitz", 0.0, 0.001 * (i + 1), scale * 0.01 * (i + 1), ())]
    return [record(run, epoch, split, method, norm, eps, acc, med, least, fl, clean=clean)
            for method, acc, med, least, fl in table]


def records(run: str, i: int, epoch: int) -> list[dict]:
    out = [r for split in ("test", "train") for norm, budgets in EPS.items()
           for j in range(len(budgets)) for r in figures(run, i, epoch, split, norm, j)]
    if (run, i) == ("alpha", 3):
        # A second minimal-norm attack with a smaller median on test L2: the column keeps it.
        out += [record(run, epoch, "test", "ddn", "L2", eps, 0.3, 0.7, 0.0) for eps in EPS["L2"]]
    return out


def make_folder(root: Path, name: str, model: str, kwargs: dict, schedule: str,
                checkpoints: tuple[int, ...]) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    info = {"run": {"model": model, "model_kwargs": kwargs, "dataset": "digits",
                    "train": {"schedule": schedule, "lr": 0.1, "epochs": checkpoints[-1],
                              "batch_size": 100}},
            "data": {"name": "digits"}, "environment": {}}
    (run / "run.json").write_text(json.dumps(info))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps(metrics_row(name, e)) + "\n" for e in range(checkpoints[-1] + 1)))
    for epoch in checkpoints:
        # Never loaded: the leaderboard only lists checkpoint files.
        (run / "checkpoints" / f"epoch-{epoch:06d}.pt").write_bytes(b"")
    return run


def make_run(root: Path, name: str, model: str, kwargs: dict, schedule: str,
             checkpoints: tuple[int, ...], evaluated: tuple[int, ...]) -> Path:
    run = make_folder(root, name, model, kwargs, schedule, checkpoints)
    for i, epoch in enumerate(evaluated):
        write_records(run, records(name, i, epoch))
        arrays = {f"{s}/fmn/{n}/distances": fmn_distances(i) * (1 if n == "L2" else 0.1)
                  for s in ("test", "train") for n in EPS}
        if (name, i) == ("alpha", 3):
            ddn = fmn_distances(i)
            ddn[:5] *= 0.5
            arrays["test/ddn/L2/distances"] = ddn
        write_arrays(run, f"epoch-{epoch:06d}", arrays)
    return run


# Per delta checkpoint k: AutoAttack accuracy of each setting (n, seed, AutoAttack set).
DELTA = {(10, 0, CUSTOM): lambda k: 0.1 * (k + 1), (10, 0, STANDARD): lambda k: 0.5 - 0.1 * k,
         (20, 7, STANDARD): lambda k: 0.2 + 0.05 * k}


def make_delta(root: Path) -> Path:
    """A run evaluated with three settings, its certificates skipped at (n=10, seed 0)."""
    run = make_folder(root, "delta", "cnn", {"bias": "none", "width": 0.25}, "loss-based",
                      (0, 10, 20))
    recs = []
    for k, epoch in enumerate((0, 10, 20)):
        for (n, seed, config), acc in DELTA.items():
            recs.append(record("delta", epoch, "test", "autoattack", "L2", 0.5, acc(k), n=n,
                               seed=seed, config=config, skipped=None))
            # The worst case over that AutoAttack set: its config names the set.
            worst = json.dumps({"attacks": {"autoattack": json.loads(config)}},
                               sort_keys=True, separators=(",", ":"))
            recs.append(record("delta", epoch, "test", "worst", "L2", 0.5, acc(k) / 2, n=n,
                               seed=seed, config=worst, skipped=None))
        for n, seed in ((10, 0), (20, 7)):
            recs.append(record("delta", epoch, "test", "fmn", "L2", 0.5, 0.3, 0.1 * n + k, 0.0,
                               n=n, seed=seed, config='{"steps":100}', skipped=None))
        for method in ("certified", "certify-lipschitz"):
            recs.append(record("delta", epoch, "test", method, "L2", 0.5, None, n=10, seed=0,
                               config="{}", skipped=NOT_CERTIFIABLE))
    write_records(run, recs)
    for epoch in (0, 10, 20):
        # Per-point distances of each (n, seed), named as the results store names them.
        write_arrays(run, f"epoch-{epoch:06d}", {
            ArrayKey("test", "fmn", "L2", None, "distances", n, seed, '{"steps":100}').to_str():
            np.full(n, float(seed)) for n, seed in ((10, 0), (20, 7))})
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"alpha": make_run(root, "alpha", "cnn", {"bias": "none", "width": 0.5}, "loss-based",
                              CHECKPOINTS, CHECKPOINTS),
            "beta": make_run(root, "beta", "cnn", {"bias": "first", "width": 1.0}, "constant",
                             (*CHECKPOINTS, 40), CHECKPOINTS),
            "gamma": make_run(root, "gamma", "mlp", {}, "loss-based", (0, 5), ())}


@pytest.fixture(scope="module")
def delta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_delta(tmp_path_factory.mktemp("delta"))


@pytest.fixture(scope="module")
def frame(runs: dict[str, Path]) -> pd.DataFrame:
    return leaderboard_frame(list(runs.values()))


@pytest.fixture(scope="module")
def index(runs: dict[str, Path]) -> FigureIndex:
    return leaderboard_tables(list(runs.values())).figures


@pytest.fixture(scope="module")
def written(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_leaderboard(list(runs.values()), tmp_path_factory.mktemp("board"))


def row(frame: pd.DataFrame, run: str, epoch: int) -> pd.Series:
    rows = frame[(frame["run"] == run) & (frame["epoch"] == epoch)]
    assert len(rows) == 1
    return rows.iloc[0]


def copy_run(run: Path, root: Path) -> Path:
    return Path(shutil.copytree(run, root / run.name))


# ---------------------------------------------------------------------------- the frame
def test_eps_labels_are_compact_and_distinct() -> None:
    assert eps_labels([0.5, 1.0, 8 / 255, 0.0314]) == {
        0.5: "0.5", 1.0: "1", 8 / 255: "0.03137", 0.0314: "0.0314"}
    close = eps_labels([0.031372, 0.031374])
    assert len(set(close.values())) == 2 and close[0.031372] == "0.031372"


def test_frame_rows_columns_and_dtypes(frame: pd.DataFrame) -> None:
    assert list(frame.groupby("run", sort=False).size().items()) == [
        ("alpha", 4), ("beta", 5), ("gamma", 2)]
    for col in frame.columns:
        if col in STRING_COLUMNS:
            assert not pd.api.types.is_numeric_dtype(frame[col]), col
        elif col in INTEGER_COLUMNS:
            assert frame[col].dtype == "Int64", col
        else:
            assert frame[col].dtype == np.float64, col
    expected = {f"{p}_{s}_{n}_{e}" for p in ("aa", "cert", "worst") for s in ("test", "train")
                for n, e in (("L2", "0.5"), ("L2", "1"), ("Linf", "0.03137"))}
    expected |= {f"median_dist_{s}_{n}" for s in ("test", "train") for n in EPS}
    expected |= {"clean_test", "clean_train", "min_certified_radius_train_L2", "n_flags", "rho",
                 "homogeneity_order", "normalized_margin", "smoothed_margin", "product_margin",
                 "n", "seed", "settings"}
    assert expected <= set(frame.columns)
    # Test split before train, and within a (split, norm) AutoAttack before certified.
    cols = list(frame.columns)
    assert cols.index("aa_test_L2_0.5") < cols.index("cert_test_L2_0.5") < cols.index(
        "aa_train_L2_0.5")
    # Nothing was skipped, so there is no column saying what was.
    assert "skipped" not in frame.columns


def test_every_robustness_column_has_its_typed_key(runs: dict[str, Path]) -> None:
    tables = leaderboard_tables(list(runs.values()))
    frame, index = tables.frame, tables.figures
    others = {*IDENTITY, *SETTINGS, *TRAJECTORY, "n_flags", SKIPPED}
    figures = [c for c in frame.columns if c not in others and not is_bound(c)]
    # Every figure column is in the index.
    assert figures and set(figures) <= set(index)
    # Each key names its own column again.
    labels = eps_labels(f.eps for f in index.values() if f.eps is not None)
    assert all(f.column(labels) == name for name, f in index.items())
    assert index["aa_train_Linf_0.03137"] == Figure("aa", "train", "Linf", 8 / 255)
    assert index["median_dist_test_L2"] == Figure(MEDIAN, "test", "L2")
    # The queries: budgets in ε order, test split first, the smallest budget per pair.
    assert index.eps_columns(frame, "aa", "test", "L2") == {0.5: "aa_test_L2_0.5",
                                                            1.0: "aa_test_L2_1"}
    assert index.split_norms(frame) == [("test", "L2"), ("test", "Linf"), ("train", "L2"),
                                        ("train", "Linf")]
    assert index.headline(frame.columns) == ["aa_test_L2_0.5", "aa_test_Linf_0.03137",
                                             "aa_train_L2_0.5", "aa_train_Linf_0.03137"]
    assert index.select(frame.columns, ["clean"]) == ["clean_test", "clean_train"]
    assert index.is_accuracy("worst_test_L2_1") and not index.is_accuracy("aa_test_L2_1_lo")
    assert index.measure("normalized_margin") is None


def test_frame_values(frame: pd.DataFrame) -> None:
    a = row(frame, "alpha", 20)
    assert (a["dataset"], a["model"], a["bias"], a["width"], a["schedule"], a["checkpoint"]) == (
        "digits", "cnn", "none", 0.5, "loss-based", "epoch-000020")
    assert a["rho"] == 30.0 and a["homogeneity_order"] == 2 and a["step"] == 280
    assert a["train_wall_s"] == 10.0 and a["normalized_margin"] == margin("alpha", 20)
    assert a["aa_test_L2_0.5"] == 0.3 and a["aa_test_L2_1"] == pytest.approx(0.29)
    assert a["worst_train_Linf_0.03137"] == 0.15 and a["cert_test_L2_1"] == 0.0
    assert a["clean_test"] == 0.9 and a["clean_train"] == 1.0
    assert a["median_dist_test_L2"] == pytest.approx(0.6)
    assert a["median_dist_test_Linf"] == pytest.approx(0.06)
    assert a["min_certified_radius_train_L2"] == pytest.approx(0.03)
    assert a["n_flags"] == 2 and row(frame, "alpha", 10)["n_flags"] == 0
    # Older records: n is known, the point seed was not stored; one setting, id A.
    assert (a["n"], pd.isna(a["seed"]), a["settings"]) == (10, True, "A")
    # ddn found smaller distances than fmn on alpha's last checkpoint: the smaller median wins.
    assert row(frame, "alpha", 30)["median_dist_test_L2"] == 0.7
    assert row(frame, "alpha", 30)["median_dist_train_L2"] == pytest.approx(0.8)
    not_evaluated = row(frame, "beta", 40)
    assert not_evaluated["rho"] == 50.0 and pd.isna(not_evaluated["aa_test_L2_0.5"])
    assert pd.isna(not_evaluated["n"]) and pd.isna(not_evaluated["settings"])
    assert row(frame, "beta", 30)["median_dist_test_Linf"] == math.inf
    g = row(frame, "gamma", 5)
    assert g["normalized_margin"] == 0.0 and math.isnan(g["width"]) and pd.isna(g["bias"])
    assert frame.loc[frame["run"] == "gamma", "clean_test"].isna().all()


def test_run_without_eval_alone(runs: dict[str, Path]) -> None:
    only = leaderboard_frame([runs["gamma"]])
    assert len(only) == 2 and not any(c.startswith("aa_") for c in only.columns)
    assert only["epoch"].tolist() == [0, 5]


def test_bad_run_directories(tmp_path: Path, runs: dict[str, Path]) -> None:
    (tmp_path / "plain").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    for paths, words in (([tmp_path / "plain"], "not a run directory"),
                         ([tmp_path / "missing"], "no run directory"),
                         ([bad], "not valid JSON"), ([], "at least one"),
                         ([runs["alpha"], runs["alpha"]], "given twice")):
        with pytest.raises(UserError, match=words):
            leaderboard_frame(paths)


# ---------------------------------------------------------------------------- damaged files
def test_corrupt_middle_line_of_metrics_is_an_error_naming_file_and_line(
        runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[12] = '{"epoch": 12, "step": 1\n'  # damaged, with epochs after it
    (run / "metrics.jsonl").write_text("".join(lines))
    with pytest.raises(UserError, match=r"metrics\.jsonl line 13 ") as err:
        leaderboard_frame([run])
    assert str(run) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="line 13"):
        write_leaderboard([run], tmp_path / "board")
    assert not (tmp_path / "board").exists()


def test_corrupt_line_skipped_with_a_warning_and_a_count(runs: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[12] = "garbage\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    frame = leaderboard_frame([run], on_corrupt="warn")
    assert "skipped 1 corrupt line(s)" in capsys.readouterr().err
    assert row(frame, "alpha", 30)["rho"] == 40.0  # epochs after the damage are still read


def test_corrupt_middle_line_of_records_is_an_error(runs: dict[str, Path],
                                                    tmp_path: Path) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    path = run / "eval" / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3][:40] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(UserError, match=r"records\.jsonl line 4 "):
        leaderboard_frame([run])
    with pytest.raises(UserError, match="line 4"):
        compare([run])


def test_torn_last_lines_are_tolerated(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 31, "step": 4')  # a killed append: no newline
    with open(run / "eval" / "records.jsonl", "a") as fh:
        fh.write('{"checkpoint": "epoch-0000')
    frame = leaderboard_frame([run])
    assert frame["epoch"].tolist() == list(CHECKPOINTS)
    assert row(frame, "alpha", 30)["aa_test_L2_0.5"] == 0.4
    assert "leaderboard.csv" in write_leaderboard([run], tmp_path / "board")


# ---------------------------------------------------------------------------- settings
def test_settings_are_kept_apart(delta: Path) -> None:
    tables = build_tables(load_runs([delta]))
    frame = tables.frame
    # Per checkpoint: (n=10, seed 0) with each AutoAttack set, and (n=20, seed 7).
    assert len(frame) == 9
    ids = {CUSTOM: "A", STANDARD: "B"}
    for (n, seed, config), acc in DELTA.items():
        rows = frame[(frame["n"] == n) & (frame["seed"] == seed)
                     & (frame["settings"] == ids[config])].sort_values("epoch")
        assert rows["epoch"].tolist() == [0, 10, 20]
        assert rows["aa_test_L2_0.5"].tolist() == pytest.approx([acc(k) for k in range(3)])
        # The worst case taken over that AutoAttack set, not over the other one.
        assert rows["worst_test_L2_0.5"].tolist() == pytest.approx(
            [acc(k) / 2 for k in range(3)])
        # Each row's fmn median is the one of its own (n, seed).
        assert rows["median_dist_test_L2"].tolist() == pytest.approx(
            [0.1 * n + k for k in range(3)])
    settings = tables.settings
    assert list(settings.columns) == ["settings", "method", "config"]
    by = {(r["settings"], r["method"]): r["config"] for r in settings.to_dict("records")}
    assert by[("A", "autoattack")] == CUSTOM and by[("B", "autoattack")] == STANDARD
    assert by[("A", "fmn")] == by[("B", "fmn")] == '{"steps":100}'
    links = link_statistics(frame, tables.figures)
    aa = links[links["column"] == "aa_test_L2_0.5"]
    # One series per setting, never pooled: ρ = +1, −1, +1 on three checkpoints each.
    got = {(r["n"], r["seed"], r["settings"]): (r["n_checkpoints"], r["spearman"])
           for r in aa.to_dict("records")}
    assert got == {(10, 0, "A"): (3, pytest.approx(1.0)), (10, 0, "B"): (3, pytest.approx(-1.0)),
                   (20, 7, "B"): (3, pytest.approx(1.0))}


def test_options_of_one_norm_only_do_not_split_a_setting(tmp_path: Path) -> None:
    # FMN takes its warm-start option under L2 only: its L2 and Linf records spell their
    # options differently and are still one evaluation, one row per checkpoint.
    run = make_folder(tmp_path, "alpha", "cnn", {"width": 0.5}, "loss-based", (0, 10))
    l2, linf = '{"steps":100,"warm_start":false}', '{"steps":100}'
    recs = []
    for epoch in (0, 10):
        for norm, eps, config in (("L2", 0.5, l2), ("Linf", 0.1, linf)):
            recs += [record("alpha", epoch, "test", "autoattack", norm, eps, 0.3, config=CUSTOM),
                     record("alpha", epoch, "test", "fmn", norm, eps, 0.4, 0.2, 0.0,
                            config=config)]
    write_records(run, recs)
    tables = build_tables(load_runs([run]))
    frame = tables.frame
    assert len(frame) == 2 and set(frame["settings"]) == {"A"}
    assert frame[["aa_test_L2_0.5", "aa_test_Linf_0.1"]].notna().all().all()
    assert frame[["median_dist_test_L2", "median_dist_test_Linf"]].notna().all().all()
    fmn = tables.settings[tables.settings["method"] == "fmn"]
    assert sorted(fmn["config"]) == sorted([l2, linf])
    # A second L2 option set is a second setting, as before.
    write_records(run, [record("alpha", 10, "test", "fmn", "L2", 0.5, 0.6, 0.3, 0.0,
                               config='{"steps":200,"warm_start":false}')])
    again = build_tables(load_runs([run])).frame
    assert sorted(again["settings"].tolist()) == ["A", "A", "B"]


def test_skipped_certificate_is_an_empty_cell_with_its_reason(delta: Path,
                                                              tmp_path: Path) -> None:
    frame = leaderboard_frame([delta])
    at_seed_0 = frame[frame["seed"] == 0]
    assert at_seed_0["cert_test_L2_0.5"].isna().all()  # empty, not 0
    assert "min_certified_radius_train_L2" not in frame or frame[
        "min_certified_radius_train_L2"].isna().all()
    assert (at_seed_0["skipped"] == f"certified: {NOT_CERTIFIABLE}; "
            f"certify-lipschitz: {NOT_CERTIFIABLE}").all()
    assert frame.loc[frame["seed"] == 7, "skipped"].isna().all()
    files = write_leaderboard([delta], tmp_path / "board")
    readme = files["README.md"].read_text()
    assert NOT_CERTIFIABLE in readme and "empty cells (not 0)" in readme
    assert "## Evaluation settings" in readme and STANDARD in readme
    back = pd.read_csv(files["leaderboard.csv"])
    assert back.loc[back["seed"] == 0, "cert_test_L2_0.5"].isna().all()
    settings = pd.read_csv(files["settings.csv"])
    assert set(settings["settings"]) == {"A", "B"}


def test_compare_names_the_settings_of_each_column(delta: Path) -> None:
    table = compare([delta])
    labels = [c for c in table.columns if not c.startswith("Δ")]
    assert labels == ["delta@epoch-000020 (n=10, seed=0, settings A)",
                      "delta@epoch-000020 (n=10, seed=0, settings B)",
                      "delta@epoch-000020 (n=20, seed=7, settings B)"]
    assert table.loc["aa_test_L2_0.5", labels].tolist() == pytest.approx(
        [acc(2) for acc in DELTA.values()])
    items = table.attrs["items"]
    assert [(i["n"], i["seed"], i["settings"]) for i in items] == [
        (10, 0, "A"), (10, 0, "B"), (20, 7, "B")]
    assert "n" not in table.index and "settings" not in table.index


# ---------------------------------------------------------------------------- minimal norm
def test_minimal_norm_attacks_come_from_the_registry(runs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    class PluginMinimal:
        minimal_norm = True

    class PluginFixed:
        minimal_norm = False

    ATTACKS.register("plugin-minimal")(PluginMinimal)
    ATTACKS.register("plugin-fixed")(PluginFixed)
    try:
        recs = [{"method": m, "median_distance": d} for m, d in (
            ("fmn", 0.1), ("ddn", 0.1), ("autoattack", None), ("plugin-minimal", 0.2),
            ("plugin-fixed", 0.3), ("certify-lipschitz", 0.4), ("not-installed", 0.5),
            ("not-installed-fixed", None))]
        # Built-in fmn and ddn by their class; a plugin by its attribute; an attack not
        # installed here by the distances its records carry; certificates never.
        assert minimal_norm_methods(recs) == {"fmn", "ddn", "plugin-minimal", "not-installed"}
        run = copy_run(runs["gamma"], tmp_path)
        write_records(run, [record("gamma", 5, "test", "plugin-minimal", "L2", 0.5, 0.4, 0.25),
                            record("gamma", 5, "test", "plugin-fixed", "L2", 0.5, 0.4, 0.01)])
        write_arrays(run, "epoch-000005", {"test/plugin-minimal/L2/distances": np.ones(10),
                                           "test/plugin-fixed/L2/distances": np.zeros(10)})
        frame = leaderboard_frame([run])
        assert row(frame, "gamma", 5)["median_dist_test_L2"] == 0.25
        found = load_distances(run, "epoch-000005", minimal_norm_methods(
            [{"method": "plugin-minimal"}, {"method": "plugin-fixed"}]))
        assert found[("test", "L2", None, None)].attacks == ("plugin-minimal",)
        files = write_leaderboard([run], tmp_path / "board")
        assert "plots/digits_mlp_robust_vs_eps_test_L2.png" in files
    finally:
        for name in ("plugin-minimal", "plugin-fixed"):
            ATTACKS._items.pop(name, None)


# ---------------------------------------------------------------------------- the link
def test_link_statistics(frame: pd.DataFrame, index: FigureIndex) -> None:
    links = link_statistics(frame, index).set_index(["run", "column"])
    assert links.loc[("alpha", "aa_test_L2_0.5"), "spearman"] == pytest.approx(1.0)
    assert links.loc[("beta", "aa_test_L2_0.5"), "spearman"] == pytest.approx(-1.0)
    assert links.loc[("alpha", "median_dist_train_Linf"), "spearman"] == pytest.approx(1.0)
    # An infinite distance ranks above every finite one.
    assert links.loc[("beta", "median_dist_test_Linf"), "spearman"] == pytest.approx(1.0)
    assert links.loc[("alpha", "min_certified_radius_train_L2"), "spearman"] == pytest.approx(1.0)
    # Hand-computed: ranks (1, 3, 2, 4) against (1, 2, 3, 4): 1 - 6·2/(4·15) = 0.8; on the
    # three fitted checkpoints, (2, 1, 3) against (1, 2, 3): 1 - 6·2/(3·8) = 0.5.
    worst = links.loc[("alpha", "worst_test_L2_0.5")]
    assert worst["spearman"] == pytest.approx(0.8)
    assert worst["spearman_fitted"] == pytest.approx(0.5)
    assert (worst["n_checkpoints"], worst["n_fitted"]) == (4, 3)
    assert (worst["n"], worst["settings"]) == (10, "A")
    alpha = frame[frame["run"] == "alpha"]
    assert worst["spearman"] == pytest.approx(
        spearmanr(alpha["normalized_margin"], alpha["worst_test_L2_0.5"]).statistic)
    # A constant column has no ranking; beta's unevaluated checkpoint is not a pair.
    assert math.isnan(links.loc[("alpha", "cert_test_L2_0.5"), "spearman"])
    assert links.loc[("beta", "aa_test_L2_0.5"), "n_checkpoints"] == 4
    assert "gamma" not in links.index.get_level_values("run")


def test_link_needs_three_checkpoints(frame: pd.DataFrame, index: FigureIndex) -> None:
    two = frame[(frame["run"] == "alpha") & (frame["epoch"] >= 20)]
    links = link_statistics(two, index)
    assert (links["n_checkpoints"] == 2).all() and links["spearman"].isna().all()


# ---------------------------------------------------------------------------- the files
def _relative(run: Path, written: dict[str, Path]) -> str:
    """The run folder as the board names it: relative to the board's folder."""
    return os.path.relpath(run, written["leaderboard.csv"].parent)


def test_json_is_strict_and_numeric(written: dict[str, Path], frame: pd.DataFrame,
                                    runs: dict[str, Path]) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    rows = json.loads(written["leaderboard.json"].read_text(), parse_constant=refuse)
    assert len(rows) == len(frame) and list(rows[0]) == list(frame.columns)
    for got, (_, want) in zip(rows, frame.iterrows()):
        for col, value in got.items():
            if col == "run_dir":
                assert value == _relative(runs[want["run"]], written)  # not absolute
            elif col in STRING_COLUMNS:
                assert value is None or isinstance(value, str)
            elif pd.isna(want[col]) or math.isinf(want[col]):
                assert value is None, col
            elif col in INTEGER_COLUMNS:
                assert isinstance(value, int) and value == want[col], col
            else:
                assert isinstance(value, float) and value == want[col], col


def test_csv_round_trips(written: dict[str, Path], frame: pd.DataFrame) -> None:
    back = pd.read_csv(written["leaderboard.csv"])
    numeric = [c for c in frame.columns if c not in STRING_COLUMNS]
    pd.testing.assert_frame_equal(back[numeric], frame[numeric].astype("float64"),
                                  check_dtype=False)
    links = pd.read_csv(written["links.csv"])
    assert {"run", "n", "seed", "settings", "column", "spearman",
            "spearman_fitted"} <= set(links.columns)


def test_csv_writes_counts_as_integers_and_no_machine_paths(written: dict[str, Path],
                                                            runs: dict[str, Path]) -> None:
    text = written["leaderboard.csv"].read_text()
    head, first = text.splitlines()[:2]
    cells = dict(zip(head.split(","), first.split(",")))
    assert (cells["epoch"], cells["step"], cells["homogeneity_order"], cells["n"],
            cells["n_flags"]) == ("0", "0", "2", "10", "0")
    assert cells["run_dir"] == _relative(runs["alpha"], written) and cells["seed"] == ""
    assert not cells["run_dir"].startswith("/")
    epochs = pd.read_csv(io.StringIO(text), dtype=str)["epoch"]
    assert not epochs.str.contains(r"\.").any()
    root = str(written["README.md"].parent.parent)
    for name in ("leaderboard.csv", "leaderboard.json", "links.csv", "README.md", "index.html"):
        assert root not in written[name].read_text(), name
    links = pd.read_csv(written["links.csv"], dtype=str)
    assert not links["n_checkpoints"].str.contains(r"\.").any()


def test_markdown_and_plots(written: dict[str, Path]) -> None:
    text = written["README.md"].read_text()
    for heading in ("## digits · cnn", "## digits · mlp", "### Robustness on test points",
                    "### Robustness on train points", "## Evaluation settings",
                    "## Margin–robustness link", "## Certified robustness by certifier",
                    "### Margin and certified radius"):
        assert heading in text
    headers = [line for line in text.splitlines() if line.startswith("| run ")]
    # cnn: trajectory, test, train; mlp: trajectory; links; certified: summary, links
    assert len(headers) == 7
    assert any("aa_test_L2_0.5" in h and "median_dist_test_Linf" in h for h in headers)
    assert any(re.search(r"\|\s+n \| settings\s+\|", h) for h in headers)
    assert "| alpha " in text and "0.03137" in text
    assert "No checkpoint of these runs is evaluated yet." in text
    pngs = {k: p for k, p in written.items() if k.endswith(".png")}
    assert {f"plots/digits_cnn_{kind}_{tag}.png" for kind in
            ("robust_vs_epoch", "robust_vs_margin", "robust_vs_eps")
            for tag in ("test_L2", "test_Linf", "train_L2", "train_Linf")} < set(pngs)
    assert {"plots/digits_cnn_margins.png", "plots/digits_mlp_margins.png"} < set(pngs)
    for rel, path in pngs.items():
        assert f"]({rel})" in text, rel
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (written["README.md"].parent / "plots").iterdir()) == sorted(
        Path(k).name for k in pngs)


def test_html_is_self_contained(written: dict[str, Path]) -> None:
    page = written["index.html"].read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    for rel in (k for k in written if k.endswith(".png")):
        assert f'<img src="{rel}"' in page
    # Style sheet and script are package data files, inlined as they are.
    assert static_text("style.css") in page and static_text("sort.js") in page
    assert page.startswith("<!DOCTYPE html>") and "$" not in page.replace(
        static_text("sort.js"), "")


# ---------------------------------------------------------------------------- the folder
def test_a_foreign_folder_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("my project\n")
    for write in (lambda: write_leaderboard([runs["gamma"]], folder),
                  lambda: update_leaderboard([runs["gamma"]], folder)):
        with pytest.raises(UserError) as err:
            write()
        message = str(err.value)
        assert str(folder) in message and "--force" in message and "\n" not in message
    # Nothing was written or published.
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]
    assert (folder / "README.md").read_text() == "my project\n"
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UserError, match="is a file"):
        write_leaderboard([runs["gamma"]], file, force=True)


def test_own_folder_is_rewritten_and_stale_files_removed(runs: dict[str, Path],
                                                         tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    (board / "NOTES.md").write_text("Hand-written notes.\n")  # allowed in a new board
    first = write_leaderboard([runs["alpha"], runs["gamma"]], board)
    marker = json.loads((board / MARKER).read_text())
    assert marker["files"] == sorted(first) and "NOTES.md" not in marker["files"]
    (board / "mine.txt").write_text("kept")
    second = write_leaderboard([runs["gamma"]], board)
    # alpha's figures are gone with alpha; what the leaderboard did not write stays.
    assert not (board / "plots" / "digits_cnn_margins.png").exists()
    assert (board / "mine.txt").read_text() == "kept" and (board / "NOTES.md").exists()
    assert sorted(p.relative_to(board).as_posix() for p in board.rglob("*") if p.is_file()) == \
        sorted([*second, MARKER, "NOTES.md", "mine.txt"])
    assert "Hand-written notes." in (board / "README.md").read_text()


def test_a_board_without_marker_regenerates_with_force(runs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    # Like a board committed before the marker existed: generated files, runs, no marker.
    board = tmp_path / "leaderboard"
    publish(runs["alpha"], board)
    (board / "README.md").write_text("# Leaderboard\n\n8 run(s).\n")
    (board / "plots").mkdir()
    (board / "plots" / "old.png").write_bytes(b"png")
    with pytest.raises(UserError, match="--force"):
        update_leaderboard([], board)
    files = update_leaderboard([], board, force=True)
    assert "1 run(s)" in (board / "README.md").read_text()
    assert (board / MARKER).exists() and (board / "plots" / "old.png").exists()
    again = update_leaderboard([runs["beta"]], board)  # now its own: no force needed
    assert set(files) <= set(again) and (board / "runs" / "beta" / "run.json").exists()
    assert "2 run(s)" in (board / "README.md").read_text()


def test_a_copied_board_regenerates_byte_for_byte(runs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    first = tmp_path / "first"
    update_leaderboard([runs["alpha"], runs["gamma"]], first)
    clone = Path(shutil.copytree(first, tmp_path / "elsewhere" / "clone"))
    update_leaderboard([], clone)

    def contents(board: Path) -> dict[str, bytes]:
        return {p.relative_to(board).as_posix(): p.read_bytes()
                for p in sorted(board.rglob("*")) if p.is_file()}

    assert contents(clone) == contents(first)


def test_board_files_get_the_umask_permissions(runs: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    for path in run.rglob("*"):
        if path.is_file():
            path.chmod(0o600)  # as older versions wrote them
    old = os.umask(0o022)
    monkeypatch.setattr(mr_io, "_UMASK", None)  # read the umask set here
    try:
        board = tmp_path / "board"
        update_leaderboard([run], board)
    finally:
        os.umask(old)
    files = [p for p in board.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".png", ".csv", ".json", ".md", ".html", ".jsonl", ".npz"} <= kinds
    modes = {p.relative_to(board).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes


def test_publish_copies_results_only(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["alpha"], tmp_path)
    (run / "eval" / "adversarials").mkdir()
    (run / "eval" / "adversarials" / "epoch-000000.npz").write_bytes(b"x")
    (run / "eval" / ".records.jsonl.x.tmp").write_text("")
    (run / "metrics.csv").write_text("epoch\n0\n")
    dest = publish(run, tmp_path / "board")
    assert dest == tmp_path / "board" / "runs" / "alpha"
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["eval/epoch-000000.npz", "eval/epoch-000010.npz", "eval/epoch-000020.npz",
                   "eval/epoch-000030.npz", "eval/records.jsonl", "metrics.csv",
                   "metrics.jsonl", "run.json"]
    assert publish(run, tmp_path / "board") == dest  # replaces the earlier copy
    assert sorted(p.name for p in dest.parent.iterdir()) == ["alpha"]
    with pytest.raises(UserError, match="not a run directory"):
        publish(tmp_path, tmp_path / "board")


def test_update_leaderboard_checks_every_run_before_copying(runs: dict[str, Path],
                                                            tmp_path: Path) -> None:
    bad = copy_run(runs["beta"], tmp_path)
    lines = (bad / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = "{\n"
    (bad / "metrics.jsonl").write_text("".join(lines))
    board = tmp_path / "board"
    with pytest.raises(UserError, match="line 3"):
        update_leaderboard([runs["alpha"], bad], board)
    assert not board.exists()
    other = tmp_path / "other" / "alpha"
    shutil.copytree(runs["alpha"], other)
    with pytest.raises(UserError, match="two runs are named 'alpha'"):
        update_leaderboard([runs["alpha"], other], board)
    with pytest.raises(UserError, match="no runs yet"):
        update_leaderboard([], tmp_path / "empty")


# ---------------------------------------------------------------------------- the plots
def test_plots_skip_cleanly(frame: pd.DataFrame, index: FigureIndex, runs: dict[str, Path],
                            tmp_path: Path) -> None:
    loaded = load_runs([runs["gamma"]])
    metrics = {r.label: pd.DataFrame(r.metrics) for r in loaded}
    gamma = frame[frame["run"] == "gamma"]
    written = write_plots(gamma, index, metrics, {}, tmp_path)
    assert [p.name for p in written[("digits", "mlp")]] == ["digits_mlp_margins.png"]
    assert robust_vs_eps_plot([], "nothing", tmp_path / "none.png") is None
    # Without AutoAttack, robustness against the margin falls back to the worst case.
    cnn = frame[frame["model"] == "cnn"]
    no_aa = cnn.drop(columns=[c for c in cnn.columns if c.startswith("aa_")])
    out = robust_vs_margin_plot(no_aa, index, "test", "L2", tmp_path / "w.png")
    assert out == tmp_path / "w.png"
    assert margin_plot(gamma, {}, tmp_path / "m.png") is None
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "m.png").exists()


def test_plots_draw_one_line_per_setting(delta: Path, tmp_path: Path) -> None:
    loaded = load_runs([delta])
    tables = build_tables(loaded)
    metrics = {r.label: pd.DataFrame(r.metrics) for r in loaded}
    written = write_plots(tables.frame, tables.figures, metrics,
                          load_all_distances(loaded, {"fmn"}), tmp_path)
    names = {p.name for p in written[("digits", "cnn")]}
    assert {"digits_cnn_margins.png", "digits_cnn_robust_vs_epoch_test_L2.png",
            "digits_cnn_robust_vs_margin_test_L2.png"} <= names
    labels = [label for label, _ in series(tables.frame)]
    assert labels == ["delta (n=10, seed=0, settings A)", "delta (n=10, seed=0, settings B)",
                      "delta (n=20, seed=7, settings B)"]


def test_load_distances_keeps_the_smallest(runs: dict[str, Path]) -> None:
    # Arrays of the first layout: no n, seed or config in their names.
    found = load_distances(runs["alpha"], "epoch-000030", {"fmn", "ddn"})
    distances = found[("test", "L2", None, None)]
    assert distances.attacks == ("ddn", "fmn")
    expected = fmn_distances(3)
    expected[:5] *= 0.5
    np.testing.assert_array_equal(distances.values, expected)
    assert found[("train", "L2", None, None)].attacks == ("fmn",)
    assert load_distances(runs["gamma"], "epoch-000000", {"fmn"}) == {}
    # Only the minimal-norm methods count.
    only = load_distances(runs["alpha"], "epoch-000030", {"ddn"})
    assert only[("test", "L2", None, None)].attacks == ("ddn",)
    # A row of that time (n known, seed not) finds them.
    assert pick_distances(found, "test", "L2", 10, None) is distances


def test_distances_of_each_setting_stay_apart(delta: Path, tmp_path: Path) -> None:
    found = load_distances(delta, "epoch-000020", {"fmn"})
    assert set(found) == {("test", "L2", 10, 0), ("test", "L2", 20, 7)}
    assert pick_distances(found, "test", "L2", 20, 7).values.tolist() == [7.0] * 20
    assert pick_distances(found, "test", "L2", 20, None) is None
    loaded = load_runs([delta])
    frame = build_tables(loaded).frame
    curves, attacks = first_last_curves(frame, load_all_distances(loaded, {"fmn"}), "test", "L2")
    assert attacks == ["fmn"]
    assert [(label, len(d)) for label, d in curves] == [
        ("delta (n=10, seed=0, settings A) @ epoch 0", 10),
        ("delta (n=10, seed=0, settings A) @ epoch 20", 10),
        ("delta (n=10, seed=0, settings B) @ epoch 0", 10),
        ("delta (n=10, seed=0, settings B) @ epoch 20", 10),
        ("delta (n=20, seed=7, settings B) @ epoch 0", 20),
        ("delta (n=20, seed=7, settings B) @ epoch 20", 20)]
    assert compare_plot([delta], tmp_path / "cmp.png") == tmp_path / "cmp.png"


# ---------------------------------------------------------------------------- compare
def test_compare_rows_and_differences(runs: dict[str, Path], frame: pd.DataFrame) -> None:
    ckpt = runs["beta"] / "checkpoints" / "epoch-000010.pt"
    table = compare([runs["alpha"], ckpt])
    first, second = "alpha@epoch-000030", "beta@epoch-000010"
    assert list(table.columns) == [first, second, f"Δ {second}"]
    assert table.index.name == "metric" and (table.dtypes == np.float64).all()
    a, b = row(frame, "alpha", 30), row(frame, "beta", 10)
    for metric in ("epoch", "normalized_margin", "aa_test_L2_0.5", "median_dist_test_L2"):
        assert table.loc[metric, first] == a[metric] and table.loc[metric, second] == b[metric]
        assert table.loc[metric, f"Δ {second}"] == pytest.approx(b[metric] - a[metric])
    assert "run_dir" not in table.index and "rho" in table.index
    items = table.attrs["items"]
    assert [(i["label"], i["model"], i["bias"]) for i in items] == [
        (first, "cnn", "none"), (second, "cnn", "first")]


def test_compare_errors_and_duplicates(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    for paths, words in (([tmp_path / "nope"], "no run directory or checkpoint"),
                         ([tmp_path / "notes.txt"], "not a checkpoint"),
                         ([tmp_path], "not a run directory"), ([], "at least one")):
        with pytest.raises(UserError, match=words):
            compare(paths)
    twice = compare([runs["alpha"], runs["alpha"]])
    assert list(twice.columns)[:2] == ["alpha@epoch-000030#1", "alpha@epoch-000030#2"]


def test_format_compare(runs: dict[str, Path]) -> None:
    table = compare([runs["alpha"], runs["beta"] / "checkpoints" / "epoch-000010.pt"])
    text = format_compare(table, "table")
    assert "beta@epoch-000010" in text and "normalized_margin" in text and "Δ" in text
    back = pd.read_csv(io.StringIO(format_compare(table, "csv")), index_col="metric")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    data = json.loads(format_compare(table, "json"),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert [i["label"] for i in data["items"]] == list(table.columns[:2])
    by_metric = {m["metric"]: m for m in data["metrics"]}
    assert by_metric["aa_test_L2_0.5"]["alpha@epoch-000030"] == 0.4
    with pytest.raises(UserError, match="unknown format"):
        format_compare(table, "xml")


def test_compare_plot(runs: dict[str, Path], tmp_path: Path) -> None:
    out = compare_plot([runs["alpha"], runs["beta"] / "checkpoints" / "epoch-000000.pt"],
                       tmp_path / "cmp.png")
    assert out == tmp_path / "cmp.png" and out.stat().st_size > 1000
    assert compare_plot([runs["gamma"]], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------------------- the page
class _Tables(HTMLParser):
    """Every table of a page: column names and, per cell, (data-value, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.sorted_by: dict[str, tuple[str, str]] = {}
        self._table: str | None = None
        self._row: list[list] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = {"columns": [], "rows": []}
        elif tag == "th" and self._table:
            self.tables[self._table]["columns"].append(a["data-column"])
            if a.get("aria-sort"):
                self.sorted_by[self._table] = (a["data-column"], a["aria-sort"])
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append([a.get("data-value"), ""])

    def handle_data(self, data: str) -> None:
        if self._row:
            self._row[-1][1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._table and self._row:
            self.tables[self._table]["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def rendered(page: Path, fragment: str, profile: Path) -> _Tables:
    """The DOM of ``page`` after its scripts ran, as dumped by headless Chromium."""
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=2000",
         "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=60, check=True)
    parser = _Tables()
    parser.feed(result.stdout)
    return parser


def column(table: dict, name: str) -> list[float | None]:
    i = table["columns"].index(name)
    return [None if r[i][0] is None else float(r[i][0]) for r in table["rows"]]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_html_renders_and_sorts_in_chromium(written: dict[str, Path], frame: pd.DataFrame,
                                            index: FigureIndex, tmp_path: Path) -> None:
    page = written["index.html"]
    dom = rendered(page, "", tmp_path / "profile")
    test = dom.tables["g0-test"]
    runs = [r[0][1] for r in test["rows"]]
    i = runs.index("alpha") + 2  # alpha's checkpoints in epoch order: 0, 10, 20, 30
    assert column(test, "epoch")[i] == 20.0
    assert column(test, "aa_test_L2_0.5")[i] == row(frame, "alpha", 20)["aa_test_L2_0.5"]
    assert column(test, "normalized_margin")[i] == margin("alpha", 20)
    beta_last = runs.index("beta") + 3
    assert column(test, "median_dist_test_Linf")[beta_last] == math.inf
    assert test["rows"][beta_last][test["columns"].index("median_dist_test_Linf")][1] == "∞"
    links = dom.tables["links"]
    assert len(links["rows"]) == len(link_statistics(frame, index))
    assert not dom.sorted_by

    dom = rendered(page, "#sort=normalized_margin:desc", tmp_path / "profile")
    trajectory = dom.tables["g0-trajectory"]
    cnn = frame[frame["model"] == "cnn"]
    assert column(trajectory, "normalized_margin") == sorted(cnn["normalized_margin"],
                                                             reverse=True)
    assert dom.sorted_by["g0-trajectory"] == ("normalized_margin", "descending")
    # Missing values sort last whatever the direction; the unevaluated checkpoint is absent
    # from the robustness table, so its clean accuracy column stays complete.
    dom = rendered(page, "#sort=min_certified_radius_train_L2:asc", tmp_path / "profile")
    radii = column(dom.tables["g0-trajectory"], "min_certified_radius_train_L2")
    present = [r for r in radii if r is not None]
    assert present == sorted(present) and radii[len(present):] == [None]
