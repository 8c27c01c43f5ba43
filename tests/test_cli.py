"""The command line through click's CliRunner: happy paths and one-sentence errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from marginrobust.cli import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_help_on_every_command(run):
    result = run("--help")
    assert result.exit_code == 0
    for name, cmd in main.commands.items():
        sub = run(name, "--help")
        assert sub.exit_code == 0, name
        assert (cmd.help or "").split("\n")[0][:30] in sub.output


def test_lists(run):
    models = run("models")
    assert models.exit_code == 0 and "cnn" in models.output and "vgg16" in models.output
    datasets = run("datasets")
    assert datasets.exit_code == 0 and "digits" in datasets.output


def test_train_and_resume_and_check(run, tmp_path):
    out = tmp_path / "run"
    result = run("train", "--model", "mlp", "--model-opt", "widths=[16]", "--train-subset", 100,
                 "--test-subset", 50, "--epochs", 3, "--out", out, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "stopped (epochs) at epoch 3" in result.output
    again = run("train", "--out", out, "--resume", "--epochs", 5, "--quiet")
    assert again.exit_code == 0 and "at epoch 5" in again.output
    ckpt = sorted((out / "checkpoints").glob("*.pt"))[-1]
    check = run("check-homogeneity", "--checkpoint", ckpt)
    assert check.exit_code == 0 and "order L=2" in check.output
    bad = run("check-homogeneity", "--model", "cnn", "--bias", "all")
    assert bad.exit_code == 1 and "not homogeneous" in bad.output


@pytest.mark.parametrize("args,needle", [
    (["train", "--model", "nope", "--out", "{tmp}/a"], "unknown model 'nope'"),
    (["train", "--dataset", "nope", "--out", "{tmp}/a"], "unknown dataset 'nope'"),
    (["train", "--dataset", "npz:{tmp}/missing.npz", "--out", "{tmp}/a"], "missing.npz"),
    (["train", "--lr", "-1", "--out", "{tmp}/a"], "--lr"),
    (["train", "--width", "0", "--out", "{tmp}/a"], "width"),
    (["train", "--out", "{tmp}/none", "--resume"], "nothing to resume"),
    (["train", "--epochs", "-3", "--out", "{tmp}/a"], "-3"),
    (["train", "--bias", "sometimes", "--out", "{tmp}/a"], "sometimes"),
    (["train", "--model-opt", "widths", "--out", "{tmp}/a"], "key=value"),
    (["train", "--device", "cuda:7", "--out", "{tmp}/a"], "device"),
    (["check-homogeneity", "--checkpoint", "{tmp}/nothing.pt"], "no checkpoint"),
])
def test_errors_are_one_sentence_and_exit_2(run, tmp_path, args, needle):
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1


def test_existing_run_needs_resume(run, tmp_path):
    args = ["train", "--model", "mlp", "--model-opt", "widths=[8]", "--train-subset", 50,
            "--test-subset", 20, "--epochs", 1, "--out", tmp_path / "r", "--quiet"]
    assert run(*args).exit_code == 0
    second = run(*args)
    assert second.exit_code == 2 and "--resume" in second.output
