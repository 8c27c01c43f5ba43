"""Degenerate data and threat-model values through the CLI: exit code 2, one sentence naming
the fault, no traceback, and no run folder left behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import one_error_line
from PIL import Image

from marginrobust.cli import main


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _train(tmp_path: Path, dataset: str):
    out = tmp_path / "run"
    result = _invoke(["train", "--dataset", dataset, "--model", "mlp", "--model-opt",
                      "widths=[8]", "--epochs", "1", "--quiet", "--device", "cpu",
                      "--data-dir", str(tmp_path / "data"), "--out", str(out)])
    return result, out


def _npz(path: Path, **arrays: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.integers(1, 256, (6, 4, 4), np.uint8), "y_train": np.arange(6) % 3,
            "x_test": rng.integers(1, 256, (3, 4, 4), np.uint8), "y_test": np.arange(3)}
    base.update(arrays)
    np.savez(path, **base)
    return f"npz:{path}"


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_test": np.zeros((0, 4, 4), np.uint8), "y_test": np.zeros(0, np.int64)},
     "x_test and y_test in .* are empty"),
    ({"x_train": np.zeros((0, 4, 4), np.uint8), "y_train": np.zeros(0, np.int64)},
     "x_train and y_train in .* are empty"),
    ({"y_train": np.array([0, 1, 2, 0, 1, 12])}, "skip 3, 4, 5, 6, 7, ...: they run up to 12"),
    ({"y_train": np.array([0, 1, 2, 0, 1, -1])}, "y_train holds the negative label -1"),
])
def test_train_refuses_degenerate_npz_before_making_the_run(tmp_path: Path, arrays: dict,
                                                              message: str) -> None:
    result, out = _train(tmp_path, _npz(tmp_path / "d.npz", **arrays))
    line = one_error_line(result)
    assert re.search(message, line), line
    assert not out.exists()


def test_train_names_the_empty_class_folder(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for split, classes in (("train", ("ant", "bee", "cow")), ("test", ("ant", "bee", "cow"))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            if not (split == "train" and c == "cow"):
                Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(root / split / c / "0.png")
    result, out = _train(tmp_path, f"imagefolder:{root}")
    line = one_error_line(result)
    assert "train/cow holds no images" in line and "found no class folders" not in line
    assert not out.exists()


def test_train_takes_the_class_count_from_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    _npz(path)
    with np.load(path) as f:
        arrays = dict(f)
    np.savez(path, **arrays, num_classes=np.array(5))
    result, out = _train(tmp_path, f"npz:{path}")
    assert result.exit_code == 0, result.output
    assert '"num_classes": 5' in (out / "run.json").read_text()


# --------------------------------------------------------------------------- evaluation

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A one-epoch digits MLP run on 50 training and 20 test images."""
    out = tmp_path_factory.mktemp("run") / "r"
    result = _invoke(["train", "--model", "mlp", "--model-opt", "widths=[8]", "--train-subset",
                      "50", "--test-subset", "20", "--epochs", "1", "--quiet", "--device", "cpu",
                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--eps-linf", "2", "a Linf epsilon of 2 reaches every input in [0, 1] (the whole box)"),
    ("--eps-linf", "0.1,255/255", "a Linf epsilon of 1 reaches every input"),
    ("--eps-linf", "0", "epsilon must be positive, got '0' in --eps-linf"),
    ("--eps-l2", "0", "epsilon must be positive, got '0' in --eps-l2"),
    ("--eps-l2", "0.5,0/7", "epsilon must be positive, got '0/7' in --eps-l2"),
])
def test_eval_refuses_budgets_outside_the_threat_model(small_run, option, value, message):
    before = sorted(p.relative_to(small_run) for p in small_run.rglob("*"))
    result = _invoke(["eval", str(small_run), "--quiet", "--device", "cpu", "--attacks", "fmn",
                      "--norms", "L2,Linf", option, value])
    assert message in one_error_line(result)
    assert sorted(p.relative_to(small_run) for p in small_run.rglob("*")) == before


def test_bench_refuses_a_zero_budget_before_training(tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = _invoke(["bench", "--model", "mlp", "--model-opt", "widths=[8]", "--epochs", "1",
                      "--quiet", "--device", "cpu", "--no-leaderboard", "--out", str(out),
                      "--eps-l2", "0"])
    assert "epsilon must be positive, got '0' in --eps-l2" in one_error_line(result)
    assert not out.exists()


def test_eval_with_n_above_a_split_uses_the_smallest_split_for_both(small_run):
    # The CLI prints each warning as one "Warning: ..." line; pytest records them instead.
    with pytest.warns(UserWarning) as said:
        result = _invoke(["eval", str(small_run), "--quiet", "--device", "cpu", "--attacks",
                          "fmn", "--norms", "L2", "--eps-l2", "0.5", "--split", "test,train",
                          "--n", "100000", "--no-certify"])
    assert result.exit_code == 0, result.output
    about_n = [str(w.message) for w in said if "n=100000" in str(w.message)]
    assert about_n == ["n=100000 (--n) is more than the 20 test points of digits; evaluating "
                       "20 points per split, stored as n=20"]
    records = [json.loads(line) for line in
               (small_run / "eval" / "records.jsonl").read_text().splitlines()]
    assert records and {(r["split"], r["n"]) for r in records} == {("test", 20), ("train", 20)}
