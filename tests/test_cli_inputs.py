"""Every user input error is one sentence and exit code 2: each option fed extreme and
malformed values (huge, negative, NaN, infinite, wrong type, wrong syntax)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from marginrobust.cli import main

TRAIN = ["train", "--model", "mlp", "--model-opt", "widths=[8]", "--train-subset", "50",
         "--test-subset", "20", "--epochs", "1", "--quiet", "--device", "cpu",
         "--out", "{tmp}/t"]

BAD_TRAIN = [
    ("--epochs", "-1"), ("--epochs", "1e3"), ("--epochs", "many"),
    ("--batch-size", "-5"), ("--batch-size", "nan"),
    ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "1e400"),
    ("--lr", "fast"),
    ("--width", "0"), ("--width", "-2"), ("--width", "nan"), ("--width", "1e400"),
    ("--train-subset", "0"), ("--train-subset", "-3"), ("--test-subset", "x"),
    ("--seed", "-1"), ("--seed", "1.5"),
    ("--checkpoint-decades", "-1"), ("--checkpoint-decades", "nan"),
    ("--max-minutes", "-1"), ("--max-minutes", "nan"), ("--max-minutes", "1e400"),
    ("--target-log10-loss", "nan"), ("--target-log10-loss", "-inf"),
    ("--explode-ratio", "-5"), ("--explode-ratio", "1"), ("--explode-ratio", "nan"),
    ("--scale", "0"), ("--scale", "-1"), ("--scale", "nan"), ("--scale", "1e400"),
    ("--checkpoint-epochs", "a,b"), ("--checkpoint-epochs", "-4"),
    ("--device", "tpu"), ("--device", "cuda:7"),
    ("--bias", "sometimes"), ("--schedule", "cosine"),
    ("--model-opt", "widths=oops"), ("--model-opt", "widths=[-1]"),
    ("--model-opt", "widths=[1e400]"), ("--model-opt", "=3"), ("--model-opt", "noequals"),
    ("--model-opt", "widht=3"),
    ("--model", "nosuch"), ("--dataset", "nosuch"), ("--dataset", "npz:{tmp}/missing.npz"),
    ("--init-from", "{tmp}/missing.pt"),
]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _assert_one_sentence(result) -> None:
    line = one_error_line(result)
    # One sentence: no torch or Python internals quoted at the user.
    assert "torch" not in line.lower() or "torch.load" not in line


@pytest.mark.parametrize("option,value", BAD_TRAIN)
def test_train_rejects(tmp_path, option, value):
    args = [a.format(tmp=tmp_path) for a in TRAIN]
    if option in args:  # replace the value given by the base command
        i = args.index(option)
        args[i + 1] = value.format(tmp=tmp_path)
    else:
        args += [option, value.format(tmp=tmp_path)]
    if option == "--model-opt":  # the base command's widths would hide the bad one
        i = args.index("--model-opt")
        args[i + 1] = value
    _assert_one_sentence(_invoke(args))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    result = _invoke([a.format(tmp=out.parent) for a in TRAIN[:-1]] + [str(out)])
    assert result.exit_code == 0, result.output
    return out


BAD_EVAL = [
    ("--eps-l2", "1e400"), ("--eps-l2", "-1"), ("--eps-l2", "nan"), ("--eps-l2", "inf"),
    ("--eps-l2", "abc"), ("--eps-linf", "8/0"), ("--eps-linf", "1/x"), ("--eps-linf", ",,"),
    ("--n", "0"), ("--n", "-4"), ("--n", "1e9x"),
    ("--split", "both"), ("--split", "val"), ("--split", "test,test"), ("--split", ""),
    ("--attacks", "nosuch"), ("--attacks", ","), ("--norms", "L3"), ("--norms", ","),
    ("--aa-attacks", "nosuch"), ("--aa-version", "turbo"), ("--eval-seed", "-1"),
    ("--device", "tpu"),
]


@pytest.mark.parametrize("option,value", BAD_EVAL)
def test_eval_rejects(trained_run, option, value):
    args = ["eval", str(trained_run), "--quiet", "--device", "cpu", "--attacks",
            "autoattack" if option.startswith("--aa-") else "pgd"]
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    _assert_one_sentence(_invoke(args))


def test_eval_rejects_missing_and_empty_paths(tmp_path):
    _assert_one_sentence(_invoke(["eval", str(tmp_path / "nothing"), "--quiet"]))
    _assert_one_sentence(_invoke(["eval", str(tmp_path), "--quiet"]))


@pytest.mark.parametrize("option,value", [
    ("--n", "0"), ("--width", "nan"), ("--epochs", "-1"), ("--split", "both"),
    ("--eps-l2", "1e400"), ("--lr", "inf"), ("--explode-ratio", "-5"),
    ("--model-opt", "widths=oops"), ("--dataset", "nosuch"),
])
def test_bench_rejects(tmp_path, option, value):
    args = ["bench", "--model", "mlp", "--model-opt", "widths=[8]", "--epochs", "1",
            "--quiet", "--device", "cpu", "--no-leaderboard", "--out", str(tmp_path / "b")]
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    _assert_one_sentence(_invoke(args))


def test_check_homogeneity_and_compare_and_leaderboard_reject(tmp_path):
    _assert_one_sentence(_invoke(["check-homogeneity", "--n", "0"]))
    _assert_one_sentence(_invoke(["check-homogeneity", "--model-opt", "widht=2"]))
    _assert_one_sentence(_invoke(["compare", str(tmp_path / "none")]))
    _assert_one_sentence(_invoke(["leaderboard", str(tmp_path / "none"),
                                  "--out", str(tmp_path / "lb")]))


def test_leaderboard_refuses_a_folder_it_did_not_write(trained_run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = _invoke(["leaderboard", str(trained_run), "--out", str(foreign)])
    _assert_one_sentence(result)
    assert "--force" in result.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_bad_run_json_is_one_sentence(trained_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "run.json").write_text(json.dumps({"run": {}})[:-3])
    _assert_one_sentence(_invoke(["leaderboard", str(broken), "--out", str(tmp_path / "lb")]))
    _assert_one_sentence(_invoke(["compare", str(broken)]))
