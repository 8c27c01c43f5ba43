"""Seeds, schedules at equal compute, the pooled fit and the pages, on synthetic run folders.

Runs are written as training and the evaluator lay them out (``run.json`` with its seeds,
``metrics.jsonl`` with gradient evaluations, ``eval/records.jsonl`` and per-point arrays
named as the results store names them), with numbers chosen so that every answer is known:

* ``cnn-s0``, ``cnn-s1``, ``cnn-s2``: three seeds of one loss-based configuration, 40
  gradient evaluations per epoch (plus a little per seed, so checkpoints line up only by
  nearest count), AutoAttack accuracy 0.30, 0.35, 0.40 at every checkpoint after the first;
* ``cnn-const``: seed 0 of the same model with a constant rate, 14 gradient evaluations
  per epoch, checkpoints at epochs 0, 50, 100. Margins are geometric in gradient
  evaluations (γ̄ = γ₀ · 10^(g/3000)) and the constant run's robustness linear in them, so
  interpolations are exact: at equal gradient evaluations γ̄(loss-based) / γ̄(constant) = 2.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from marginrobust.evaluate.store import ArrayKey
from marginrobust.report.board import write_leaderboard
from marginrobust.report.figures import FigureIndex
from marginrobust.report.labels import group_titles
from marginrobust.report.loader import load_all_distances, load_runs
from marginrobust.report.matched import matched_table
from marginrobust.report.plots import first_last_curves
from marginrobust.report.publish import update_leaderboard
from marginrobust.report.run_groups import run_configs
from marginrobust.report.seeds import seed_table
from marginrobust.report.tables import leaderboard_frame, leaderboard_tables

N = 100
CUSTOM = '{"attacks_to_run":["apgd-ce","apgd-t"],"version":"custom"}'
FMN = '{"steps":100}'
AA = "aa_test_L2_0.5"
CAVEAT = "Fewer than 0.1 is within noise"


def gamma0(schedule: str) -> float:
    return 1e-3 if schedule == "loss-based" else 5e-4


def margin(schedule: str, g: float) -> float:
    return gamma0(schedule) * 10 ** (g / 3000)


def robust(schedule: str, seed: int, g: float) -> float:
    # Multiples of 1/N, so that the stored proportions are whole counts.
    if schedule == "loss-based":
        return round((0.30 + 0.05 * seed) * N) / N if g > 0 else 0.2
    return round((0.1 + g / 10000) * N) / N


def distances(seed: int, k: int) -> np.ndarray:
    d = np.linspace(0.1, 1.0, N) * (1 + 0.1 * k + 0.01 * seed)
    d[:10] = 0.0  # misclassified points
    return d


def make_run(root: Path, name: str, seed: int, schedule: str, per_epoch: float,
             checkpoints: tuple[int, ...], dataset: str = "digits", width: float = 0.5,
             data: dict | None = None) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    spec = {"model": "cnn", "model_kwargs": {"bias": "first", "width": width},
            "dataset": dataset, "train_subset": None, "test_subset": None, "data_seed": seed,
            "init_seed": seed, "checkpoint_decades": 2.0,
            "train": {"schedule": schedule, "lr": 0.1, "epochs": checkpoints[-1],
                      "batch_size": 100, "seed": seed, "precision": "fp32",
                      "deterministic": True, "device": "cpu"}}
    info = {"run": spec, "data": data or {"name": dataset, "n_train": 1347, "n_test": 450},
            "environment": {}}
    (run / "run.json").write_text(json.dumps(info))
    rows = []
    for e in range(checkpoints[-1] + 1):
        g = round(per_epoch * e)
        m = margin(schedule, g)
        rows.append({"epoch": e, "step": 14 * e, "grad_evals": g, "wall_s": 0.1 * e,
                     "log10_loss": 0.5 - e / 5, "train_acc": 0.5 if e == 0 else 1.0,
                     "test_acc": 0.9, "rho": 10.0 + e, "homogeneity_order": 2,
                     "normalized_margin": m, "product_margin": 10 * m,
                     "smoothed_margin": 0.9 * m})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = []
    for k, epoch in enumerate(checkpoints):
        g = rows[epoch]["grad_evals"]
        ckpt = f"epoch-{epoch:06d}"
        d, radii = distances(seed, k), distances(seed, k) / 50
        base = {"checkpoint": ckpt, "split": "test", "norm": "L2", "eps": 0.5, "n": N,
                "seed": 0, "clean_acc": 0.9, "seconds": 0.1, "flags": [], "skipped": None,
                "epoch": epoch, "median_distance": None, "min_distance": None}
        records += [
            {**base, "method": "autoattack", "config": CUSTOM,
             "robust_acc": robust(schedule, seed, g)},
            {**base, "method": "fmn", "config": FMN, "robust_acc": float(np.mean(d > 0.5)),
             "median_distance": float(np.median(d)), "min_distance": 0.0},
            {**base, "method": "certify-lipschitz", "config": "{}", "robust_acc": 0.0,
             "median_distance": float(np.median(radii)), "min_distance": 0.0}]
        np.savez_compressed(run / "eval" / f"{ckpt}.npz", **{
            ArrayKey("test", "fmn", "L2", None, "distances", N, 0, FMN).to_str(): d,
            ArrayKey("test", "certify-lipschitz", "L2", None, "radius", N, 0, "{}").to_str():
                radii})
    (run / "eval" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {f"cnn-s{s}": make_run(root, f"cnn-s{s}", s, "loss-based", 40 + 0.5 * s, (0, 10, 20, 30))
           for s in range(3)}
    out["cnn-const"] = make_run(root, "cnn-const", 0, "constant", 14, (0, 50, 100))
    return out


@pytest.fixture(scope="module")
def frame(runs: dict[str, Path]) -> pd.DataFrame:
    return leaderboard_frame(list(runs.values()))


@pytest.fixture(scope="module")
def index(runs: dict[str, Path]) -> FigureIndex:
    return leaderboard_tables(list(runs.values())).figures


@pytest.fixture(scope="module")
def board(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("board")
    (out / "NOTES.md").write_text(f"## Reading\n\n- {CAVEAT}.\n  - nested caveat\n")
    write_leaderboard(list(runs.values()), out)
    return out


def test_frame_carries_compute_intervals_and_radii(frame: pd.DataFrame) -> None:
    row = frame[(frame["run"] == "cnn-s1") & (frame["epoch"] == 20)].iloc[0]
    assert (row["grad_evals"], row["step"]) == (810, 280) and row["train_wall_s"] == 2.0
    assert frame["grad_evals"].dtype == "Int64"
    ci = sps.binomtest(35, N).proportion_ci(method="wilson")
    assert (row[f"{AA}_lo"], row[f"{AA}_hi"]) == pytest.approx((ci.low, ci.high))
    cols = list(frame.columns)
    assert cols.index(AA) + 1 == cols.index(f"{AA}_lo") and cols.index(f"{AA}_hi") == \
        cols.index(AA) + 2
    d = distances(1, 2)
    assert row["median_dist_test_L2"] == pytest.approx(np.median(d))
    assert row["median_dist_test_L2_lo"] < np.median(d) < row["median_dist_test_L2_hi"]
    radii = d / 50
    assert row["median_certified_radius_test_L2"] == pytest.approx(np.median(radii))
    assert row["half_certified_eps_test_L2"] == pytest.approx(np.sort(radii)[50])
    lo, hi = row["median_certified_radius_test_L2_lo"], row["median_certified_radius_test_L2_hi"]
    assert lo < row["median_certified_radius_test_L2"] < hi
    assert cols.index("median_dist_test_L2_hi") + 1 == cols.index(
        "median_certified_radius_test_L2")
    # Deterministic: read again, the same intervals to the last bit.
    again = leaderboard_frame(list(dict.fromkeys(frame["run_dir"])))
    pd.testing.assert_frame_equal(again, frame)


def test_configurations_and_schedule_pairs(runs: dict[str, Path]) -> None:
    configs = run_configs(load_runs(list(runs.values())))
    assert len({configs[f"cnn-s{s}"].config for s in range(3)}) == 1
    assert configs["cnn-const"].config != configs["cnn-s0"].config
    assert configs["cnn-const"].pair == configs["cnn-s0"].pair != configs["cnn-s1"].pair
    assert configs["cnn-s2"].seed == 2 and configs["cnn-const"].schedule == "constant, lr=0.1"


def test_descriptions_are_told_apart_within_a_dataset_only(tmp_path: Path) -> None:
    digits = make_run(tmp_path, "d", 0, "loss-based", 3.0, (0, 5))
    fashion = make_run(tmp_path, "f", 0, "loss-based", 3.0, (0, 5), dataset="fashion-mnist")
    other = make_run(tmp_path, "o", 0, "loss-based", 3.0, (0, 5))
    info = json.loads((other / "run.json").read_text())
    info["run"]["train"]["precision"] = "tf32"  # not in the description
    (other / "run.json").write_text(json.dumps(info))
    alone = run_configs(load_runs([digits, fashion]))
    assert alone["d"].description == alone["f"].description == (
        "cnn (bias=first, width=0.5); loss-based, lr=0.1")
    both = run_configs(load_runs([digits, fashion, other]))
    assert both["d"].description.endswith("#1") and both["o"].description.endswith("#2")
    assert not both["f"].description.endswith(("#1", "#2"))


def test_three_seeds_give_mean_and_t_interval(frame: pd.DataFrame, index: FigureIndex,
                                              runs: dict[str, Path]) -> None:
    configs = run_configs(load_runs(list(runs.values())))
    seeds = seed_table(frame, index, configs)
    loss = seeds[seeds["config"] == configs["cnn-s0"].description]
    assert loss["position"].tolist() == [1, 2, 3, 4]
    assert (loss["n_seeds"] == 3).all() and (loss["aligned_by"] == "grad_evals").all()
    third = loss[loss["position"] == 3].iloc[0]
    assert third["runs"] == "cnn-s0, cnn-s1, cnn-s2"
    half = sps.t.ppf(0.975, 2) * np.std([0.30, 0.35, 0.40], ddof=1) / math.sqrt(3)
    assert third[AA] == pytest.approx(0.35)
    assert (third[f"{AA}_lo"], third[f"{AA}_hi"]) == pytest.approx((0.35 - half, 0.35 + half))
    assert (third["grad_evals_min"], third["grad_evals_max"]) == (800, 820)
    assert third["grad_evals_mean"] == pytest.approx(810)
    # One seed: n_seeds 1 and no interval.
    const = seeds[seeds["config"] == configs["cnn-const"].description]
    assert (const["n_seeds"] == 1).all() and const[f"{AA}_lo"].isna().all()
    assert const[AA].tolist() == pytest.approx([0.1, 0.17, 0.24])


def test_seeds_align_by_nearest_gradient_evaluations(frame: pd.DataFrame, index: FigureIndex,
                                                     runs: dict[str, Path]) -> None:
    configs = run_configs(load_runs(list(runs.values())))
    # Seed 1 loses its epoch-10 checkpoint: its epoch-20 one must not move to position 2.
    rows = frame[~((frame["run"] == "cnn-s1") & (frame["epoch"] == 10))]
    seeds = seed_table(rows, index, configs)
    loss = seeds[seeds["config"] == configs["cnn-s0"].description].set_index("position")
    assert loss.loc[2, "runs"] == "cnn-s0, cnn-s2" and loss.loc[2, "n_seeds"] == 2
    assert loss.loc[3, "n_seeds"] == 3


def test_schedules_compared_at_equal_compute_and_epochs(frame: pd.DataFrame, index: FigureIndex,
                                                        runs: dict[str, Path]) -> None:
    loaded = load_runs(list(runs.values()))
    metrics = {r.label: pd.DataFrame(r.metrics) for r in loaded}
    matched = matched_table(frame, index, metrics, run_configs(loaded))
    assert set(zip(matched["run_a"], matched["run_b"])) == {("cnn-s0", "cnn-const"),
                                                            ("cnn-const", "cnn-s0")}
    a = matched[(matched["run_a"] == "cnn-s0") & (matched["match"] == "grad_evals")]
    gamma = a[a["quantity"] == "normalized_margin"].set_index("at")
    # Anchors at 0, 400, 800, 1200 gradient evaluations, all within the other run's 1400.
    assert gamma.index.tolist() == [0, 400, 800, 1200]
    assert gamma["ratio"].tolist() == pytest.approx([2.0] * 4, rel=1e-9)
    aa = a[a["quantity"] == AA].set_index("at")
    assert aa.loc[400, "value_b"] == pytest.approx(0.14)  # between checkpoints 0 and 700
    assert aa.loc[400, "difference"] == pytest.approx(0.30 - 0.14)
    by_epoch = matched[(matched["run_a"] == "cnn-s0") & (matched["match"] == "epoch")
                       & (matched["quantity"] == "normalized_margin")].set_index("at")
    # At epoch e the loss-based run has 40e gradient evaluations, the constant one 14e.
    for e in (10, 20, 30):
        assert by_epoch.loc[e, "ratio"] == pytest.approx(2 * 10 ** ((40 - 14) * e / 3000))
    # The constant run as anchor: its checkpoint at 1400 is past the loss-based run's 1200.
    back = matched[(matched["run_a"] == "cnn-const") & (matched["match"] == "grad_evals")]
    assert back["at"].max() == 700


def test_first_fitted_checkpoint_starts_the_robust_vs_eps_curves(frame: pd.DataFrame,
                                                                 runs: dict[str, Path]) -> None:
    loaded = load_runs([runs["cnn-s0"]])
    rows = frame[frame["run"] == "cnn-s0"]
    curves, attacks = first_last_curves(rows, load_all_distances(loaded, {"fmn"}), "test", "L2",
                                        fitted_only=True)
    assert [label for label, _ in curves] == ["cnn-s0 @ epoch 10 (first fitted)",
                                              "cnn-s0 @ epoch 30"]
    assert attacks == ["fmn"]


def test_titles_say_what_folder_data_are(tmp_path: Path) -> None:
    run = make_run(tmp_path, "cifar", 0, "loss-based", 40, (0, 10),
                   dataset="imagefolder:cifar10-jpeg.tar.xz", width=0.5,
                   data={"name": "imagefolder", "n_train": 2000, "n_test": 500})
    frame = leaderboard_frame([run])
    titles = group_titles(frame, load_runs([run]))
    assert titles[("imagefolder:cifar10-jpeg.tar.xz", "cnn")] == (
        "imagefolder:cifar10-jpeg.tar.xz (JPEG), 2000 train / 500 test · cnn (width 0.5)")


def test_board_files_and_sections(board: Path) -> None:
    for name in ("seeds.csv", "matched.csv", "pooled.csv", "links.csv"):
        assert (board / name).exists(), name
    links = pd.read_csv(board / "links.csv")
    assert {"spearman_p", "spearman_lo", "spearman_hi", "spearman_fitted_p",
            "margin_time_fitted", "note"} <= set(links.columns)
    radius = links[links["column"] == "median_certified_radius_test_L2"]
    assert radius["note"].str.contains("near-tautological").all()
    pooled = pd.read_csv(board / "pooled.csv")
    row = pooled[pooled["column"] == AA].iloc[0]
    assert row["n_obs"] == 11 and row["n_runs"] == 4 and isinstance(row["conclusion"], str)
    readme = (board / "README.md").read_text()
    for heading in ("## Across seeds", "## Schedules at equal compute",
                    "## Margin or training time: the pooled fit", "## Statistics"):
        assert heading in readme
    assert "default_rng(2020)" in readme and "2,000 resamples" in readme
    assert "0.35 [" in readme  # a figure with its interval
    assert f"`{AA}` (n=100, seed=0, settings=A; 11 fitted checkpoints of 4 run(s))" in readme
    assert "plots/digits_cnn_robust_vs_grad_evals_test_L2.png" in readme
    assert "plots/digits_cnn_margins_vs_grad_evals.png" in readme
    assert "plots/digits_cnn_seeds.png" in readme  # three seeds: their means and bands


def test_html_carries_the_notes_and_attack_sets(board: Path) -> None:
    page = (board / "index.html").read_text()
    assert f"<li>{CAVEAT}.\n<ul>\n<li>nested caveat</li>\n</ul>\n</li>" in page
    assert "<h2>Reading</h2>" in page
    header = '<th data-column="aa_test_L2_0.5" title="AutoAttack custom: apgd-ce, apgd-t'
    assert header in page
    assert '<span class="src">AutoAttack custom: apgd-ce, apgd-t</span>' in page
    assert "smallest median minimal distance among: fmn" in page
    assert "<h2>Statistics</h2>" in page


def test_board_regenerates_byte_for_byte(runs: dict[str, Path], tmp_path: Path) -> None:
    first = tmp_path / "first"
    update_leaderboard(list(runs.values()), first)
    clone = Path(shutil.copytree(first, tmp_path / "elsewhere" / "clone"))
    update_leaderboard([], clone)

    def contents(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert contents(clone) == contents(first)
