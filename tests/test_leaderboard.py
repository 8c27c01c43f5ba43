"""Leaderboard, plots and compare on a synthetic results store with known numbers.

Three runs are written by hand (``run.json``, ``metrics.jsonl``, empty checkpoint files,
records through :class:`ResultsStore`): ``alpha`` and ``beta`` (digits · cnn) have four
evaluated checkpoints each, along which the normalized margin rises while AutoAttack accuracy
rises (alpha) or falls (beta); beta has one more checkpoint never evaluated; ``gamma``
(digits · mlp) has no evaluation at all.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from marginrobust.compare import compare, compare_plot, format_compare
from marginrobust.errors import UserError
from marginrobust.leaderboard import (
    STRING_COLUMNS,
    eps_labels,
    leaderboard_frame,
    link_statistics,
    write_leaderboard,
)
from marginrobust.plots import (
    load_distances,
    margin_plot,
    robust_vs_eps_plot,
    robust_vs_margin_plot,
    write_plots,
)
from marginrobust.results import EvalRecord, ResultsStore

EPS = {"L2": (0.5, 1.0), "Linf": (8 / 255,)}
CHECKPOINTS = (0, 10, 20, 30)
# Per evaluated checkpoint: AutoAttack and worst-case accuracy (before a per-ε offset).
AA = {"alpha": (0.1, 0.2, 0.3, 0.4), "beta": (0.4, 0.3, 0.2, 0.1)}
WORST = {"alpha": (0.05, 0.25, 0.15, 0.35), "beta": (0.35, 0.25, 0.15, 0.05)}
MARGIN_SLOPE = {"alpha": 1e-4, "beta": 2e-4, "gamma": 3e-4}
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


def context(run: str, epoch: int) -> dict:
    ctx = {k: v for k, v in metrics_row(run, epoch).items()
           if k in EvalRecord.__dataclass_fields__}
    return {**ctx, "train_wall_s": metrics_row(run, epoch)["wall_s"], "run": run}


def figures(run: str, i: int, epoch: int, split: str, norm: str, j: int) -> list[EvalRecord]:
    """The records of one (checkpoint, split, norm, j-th ε)."""
    eps = EPS[norm][j]
    clean = 0.5 if i == 0 else (0.9 if split == "test" else 1.0)
    scale = 1.0 if norm == "L2" else 0.1
    flags = ["a > b", "x broke 1"] if (run, i, split) == ("alpha", 2, "test") else []
    # The attack failed on most of beta's last test points: an infinite median distance.
    median = math.inf if (run, i, split, norm) == ("beta", 3, "test", "Linf") else 0.2 * (i + 1)
    table = [("autoattack", AA[run][i] - 0.01 * j, None, None, flags),
             ("worst", WORST[run][i] - 0.01 * j, None, None, flags[:1]),
             ("certified", 0.0, None, None, []),
             ("fmn", AA[run][i], scale * median, 0.0, []),
             ("certify-lipschitz", 0.0, 0.001 * (i + 1), scale * 0.01 * (i + 1), [])]
    return [EvalRecord(f"epoch-{epoch:06d}", split, method, norm, eps, 10, clean, acc, median,
                       least, flags=flags, **context(run, epoch))
            for method, acc, median, least, flags in table]


def records(run: str, i: int, epoch: int) -> list[EvalRecord]:
    out = [r for split in ("test", "train") for norm, budgets in EPS.items()
           for j in range(len(budgets)) for r in figures(run, i, epoch, split, norm, j)]
    if (run, i) == ("alpha", 3):
        # A second minimal-norm attack with a smaller median on test L2: the column keeps it.
        out += [EvalRecord("epoch-000030", "test", "ddn", "L2", eps, 10, 0.9, 0.3, 0.7, 0.0,
                           **context(run, epoch)) for eps in EPS["L2"]]
    return out


def make_run(root: Path, name: str, model: str, kwargs: dict, schedule: str,
             checkpoints: tuple[int, ...], evaluated: tuple[int, ...]) -> Path:
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
    store = ResultsStore(run)
    for i, epoch in enumerate(evaluated):
        store.add(records(name, i, epoch))
        arrays = {f"{s}/fmn/{n}/distances": fmn_distances(i) * (1 if n == "L2" else 0.1)
                  for s in ("test", "train") for n in EPS}
        if (name, i) == ("alpha", 3):
            ddn = fmn_distances(i)
            ddn[:5] *= 0.5
            arrays["test/ddn/L2/distances"] = ddn
        store.save_arrays(f"epoch-{epoch:06d}", arrays)
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
def frame(runs: dict[str, Path]) -> pd.DataFrame:
    return leaderboard_frame(list(runs.values()))


@pytest.fixture(scope="module")
def written(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_leaderboard(list(runs.values()), tmp_path_factory.mktemp("board"))


def row(frame: pd.DataFrame, run: str, epoch: int) -> pd.Series:
    rows = frame[(frame["run"] == run) & (frame["epoch"] == epoch)]
    assert len(rows) == 1
    return rows.iloc[0]


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
        else:
            assert frame[col].dtype == np.float64, col
    expected = {f"{p}_{s}_{n}_{e}" for p in ("aa", "cert", "worst") for s in ("test", "train")
                for n, e in (("L2", "0.5"), ("L2", "1"), ("Linf", "0.03137"))}
    expected |= {f"median_dist_{s}_{n}" for s in ("test", "train") for n in EPS}
    expected |= {"clean_test", "clean_train", "min_certified_radius_train_L2", "n_flags", "rho",
                 "homogeneity_order", "normalized_margin", "smoothed_margin", "product_margin"}
    assert expected <= set(frame.columns)
    # Test split before train, and within a (split, norm) AutoAttack before certified.
    cols = list(frame.columns)
    assert cols.index("aa_test_L2_0.5") < cols.index("cert_test_L2_0.5") < cols.index(
        "aa_train_L2_0.5")


def test_frame_values(frame: pd.DataFrame) -> None:
    a = row(frame, "alpha", 20)
    assert (a["dataset"], a["model"], a["bias"], a["width"], a["schedule"], a["checkpoint"]) == (
        "digits", "cnn", "none", 0.5, "loss-based", "epoch-000020")
    assert a["rho"] == 30.0 and a["homogeneity_order"] == 2.0 and a["step"] == 280.0
    assert a["train_wall_s"] == 10.0 and a["normalized_margin"] == margin("alpha", 20)
    assert a["aa_test_L2_0.5"] == 0.3 and a["aa_test_L2_1"] == pytest.approx(0.29)
    assert a["worst_train_Linf_0.03137"] == 0.15 and a["cert_test_L2_1"] == 0.0
    assert a["clean_test"] == 0.9 and a["clean_train"] == 1.0
    assert a["median_dist_test_L2"] == pytest.approx(0.6)
    assert a["median_dist_test_Linf"] == pytest.approx(0.06)
    assert a["min_certified_radius_train_L2"] == pytest.approx(0.03)
    assert a["n_flags"] == 2.0 and row(frame, "alpha", 10)["n_flags"] == 0.0
    # ddn found smaller distances than fmn on alpha's last checkpoint: the smaller median wins.
    assert row(frame, "alpha", 30)["median_dist_test_L2"] == 0.7
    assert row(frame, "alpha", 30)["median_dist_train_L2"] == pytest.approx(0.8)
    not_evaluated = row(frame, "beta", 40)
    assert not_evaluated["rho"] == 50.0 and not_evaluated["aa_test_L2_0.5"] != not_evaluated[
        "aa_test_L2_0.5"]
    assert row(frame, "beta", 30)["median_dist_test_Linf"] == math.inf
    g = row(frame, "gamma", 5)
    assert g["normalized_margin"] == 0.0 and math.isnan(g["width"]) and pd.isna(g["bias"])
    assert frame.loc[frame["run"] == "gamma", "clean_test"].isna().all()


def test_run_without_eval_alone(runs: dict[str, Path]) -> None:
    only = leaderboard_frame([runs["gamma"]])
    assert len(only) == 2 and not any(c.startswith("aa_") for c in only.columns)
    assert only["epoch"].tolist() == [0.0, 5.0]


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


# ---------------------------------------------------------------------------- the link
def test_link_statistics(frame: pd.DataFrame) -> None:
    links = link_statistics(frame).set_index(["run", "column"])
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
    alpha = frame[frame["run"] == "alpha"]
    assert worst["spearman"] == pytest.approx(
        spearmanr(alpha["normalized_margin"], alpha["worst_test_L2_0.5"]).statistic)
    # A constant column has no ranking; beta's unevaluated checkpoint is not a pair.
    assert math.isnan(links.loc[("alpha", "cert_test_L2_0.5"), "spearman"])
    assert links.loc[("beta", "aa_test_L2_0.5"), "n_checkpoints"] == 4
    assert "gamma" not in links.index.get_level_values("run")


def test_link_needs_three_checkpoints(frame: pd.DataFrame) -> None:
    two = frame[(frame["run"] == "alpha") & (frame["epoch"] >= 20)]
    links = link_statistics(two)
    assert (links["n_checkpoints"] == 2).all() and links["spearman"].isna().all()


# ---------------------------------------------------------------------------- the files
def test_json_is_strict_and_numeric(written: dict[str, Path], frame: pd.DataFrame) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    rows = json.loads(written["leaderboard.json"].read_text(), parse_constant=refuse)
    assert len(rows) == len(frame) and list(rows[0]) == list(frame.columns)
    for got, (_, want) in zip(rows, frame.iterrows()):
        for col, value in got.items():
            if col in STRING_COLUMNS:
                assert value is None or isinstance(value, str)
            elif pd.isna(want[col]) or math.isinf(want[col]):
                assert value is None, col
            else:
                assert isinstance(value, float) and value == want[col], col


def test_csv_round_trips(written: dict[str, Path], frame: pd.DataFrame) -> None:
    back = pd.read_csv(written["leaderboard.csv"])
    numeric = [c for c in frame.columns if c not in STRING_COLUMNS]
    pd.testing.assert_frame_equal(back[numeric], frame[numeric], check_dtype=False)
    links = pd.read_csv(written["links.csv"])
    assert {"run", "column", "spearman", "spearman_fitted"} <= set(links.columns)


def test_markdown_and_plots(written: dict[str, Path]) -> None:
    text = written["README.md"].read_text()
    for heading in ("## digits · cnn", "## digits · mlp", "### Robustness on test points",
                    "### Robustness on train points", "## Margin–robustness link"):
        assert heading in text
    headers = [line for line in text.splitlines() if line.startswith("| run ")]
    assert len(headers) == 5  # cnn: trajectory, test, train; mlp: trajectory; links
    assert any("aa_test_L2_0.5" in h and "median_dist_test_Linf" in h for h in headers)
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


def test_plots_skip_cleanly(frame: pd.DataFrame, tmp_path: Path) -> None:
    gamma = frame[frame["run"] == "gamma"]
    written = write_plots(gamma, tmp_path)
    assert [p.name for p in written[("digits", "mlp")]] == ["digits_mlp_margins.png"]
    assert robust_vs_eps_plot([], "nothing", tmp_path / "none.png") is None
    # Without AutoAttack, robustness against the margin falls back to the worst case.
    cnn = frame[frame["model"] == "cnn"]
    no_aa = cnn.drop(columns=[c for c in cnn.columns if c.startswith("aa_")])
    assert robust_vs_margin_plot(no_aa, "test", "L2", tmp_path / "w.png") == tmp_path / "w.png"
    no_metrics = gamma.assign(run_dir=str(tmp_path))
    assert margin_plot(no_metrics, tmp_path / "m.png") is None
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "m.png").exists()


def test_load_distances_keeps_the_smallest(runs: dict[str, Path]) -> None:
    found = load_distances(runs["alpha"], "epoch-000030")
    distances, attacks = found[("test", "L2")]
    assert attacks == ["ddn", "fmn"]
    expected = fmn_distances(3)
    expected[:5] *= 0.5
    np.testing.assert_array_equal(distances, expected)
    assert found[("train", "L2")][1] == ["fmn"]
    assert load_distances(runs["gamma"], "epoch-000000") == {}


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
                                            tmp_path: Path) -> None:
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
    assert len(links["rows"]) == len(link_statistics(frame))
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
