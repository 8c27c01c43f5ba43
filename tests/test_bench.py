"""marginrobust bench: presets, one-command flow, and resumption of a killed bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from conftest import kill_after_epochs

from marginrobust.cli import main
from marginrobust.cli.pipeline import default_out, spec_from_preset
from marginrobust.evaluate.store import ResultsStore
from marginrobust.presets import PRESETS, preset_for
from marginrobust.train import read_metrics

TINY = ["bench", "--model", "mlp", "--model-opt", "widths=[16]", "--train-subset", "200",
        "--test-subset", "60", "--epochs", "14", "--batch-size", "50", "--attacks", "pgd,fmn",
        "--n", "12", "--norms", "Linf", "--quiet", "--device", "cpu", "--no-leaderboard"]


def test_presets_cover_datasets_and_devices():
    for name in ("digits", "fashion-mnist", "mnist", "cifar10", "imagefolder"):
        assert (name, "cpu") in PRESETS and (name, "cuda") in PRESETS
    assert preset_for("imagefolder:/x/y.tar.xz", "cpu") == PRESETS[("imagefolder", "cpu")]
    assert preset_for("cifar10", "cuda").model == "vgg16"
    spec, preset = spec_from_preset(preset_for("digits", "cpu"), "digits",
                                    {"epochs": 7, "bias": "first", "model": None})
    assert spec.train.epochs == 7 and spec.model_kwargs["bias"] == "first"
    assert spec.model == PRESETS[("digits", "cpu")].model
    assert str(default_out(spec)) == "runs/digits-cnn-loss-based-first"


def test_bench_help_says_what_the_gpu_presets_cost():
    from marginrobust.presets import CUDA_COST, describe_presets

    # The cost was measured for the cifar10 cuda preset's sizes: a change of them must
    # change the sentence too.
    cifar = PRESETS[("cifar10", "cuda")]
    assert f"about 50 min for {cifar.epochs})" in CUDA_COST and f"n={cifar.n}" in CUDA_COST
    assert cifar.aa_attacks == "standard" and "AutoAttack standard" in CUDA_COST
    assert describe_presets().endswith(CUDA_COST)
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0 and "cuda presets take hours" in result.output


def test_data_seed_holds_the_subsets_while_the_seed_changes():
    preset = preset_for("fashion-mnist", "cpu")
    one, _ = spec_from_preset(preset, "fashion-mnist", {"seed": 1, "data_seed": 0})
    two, _ = spec_from_preset(preset, "fashion-mnist", {"seed": 2, "data_seed": 0})
    default, _ = spec_from_preset(preset, "fashion-mnist", {"seed": 2})
    assert (one.data_seed, two.data_seed, default.data_seed) == (0, 0, 2)
    assert (one.init_seed, two.init_seed, one.train.seed, two.train.seed) == (1, 2, 1, 2)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def _robust(run):
    return sorted((r.checkpoint, r.split, r.method, r.norm, r.eps, r.robust_acc)
                  for r in ResultsStore(run).records)


def test_killed_bench_finishes_on_rerun_with_the_same_numbers(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "marginrobust"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([*cli, *TINY, "--out", str(full)], check=True, env=env, capture_output=True)
    kill_after_epochs([*cli, *TINY, "--out", str(killed)], killed, 4, env)
    rerun = subprocess.run([*cli, *TINY, "--out", str(killed)], env=env, capture_output=True,
                           text=True, check=True)
    assert "training: resumed" in rerun.stdout
    assert _strip(read_metrics(killed)) == _strip(read_metrics(full))
    assert _robust(killed) == _robust(full) and _robust(full)
    again = subprocess.run([*cli, *TINY, "--out", str(killed)], env=env, capture_output=True,
                           text=True, check=True)
    assert "training: already trained" in again.stdout
    stopped = json.loads((killed / "run.json").read_text())["stopped"]
    assert stopped["epoch"] == 14


def test_bench_refuses_a_different_run_in_the_same_folder(tmp_path):
    out = tmp_path / "r"
    first = CliRunner().invoke(main, [*TINY, "--out", str(out)])
    assert first.exit_code == 0, first.output
    other = CliRunner().invoke(main, [*TINY, "--out", str(out), "--bias", "all"])
    assert other.exit_code == 2 and "different run" in other.output


def test_bench_offline_cifar10_fails_with_one_sentence(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_url", no_network)
    result = CliRunner().invoke(main, ["bench", "--model", "cnn", "--dataset", "cifar10",
                                       "--data-dir", str(tmp_path / "data"), "--no-leaderboard",
                                       "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "cifar-10" in error[0].lower() and str(tmp_path) in error[0]


def test_leaderboard_and_compare_commands(tmp_path):
    run = tmp_path / "r"
    assert CliRunner().invoke(main, [*TINY, "--out", str(run)]).exit_code == 0
    board = tmp_path / "board"
    result = CliRunner().invoke(main, ["leaderboard", str(run), "--out", str(board)])
    assert result.exit_code == 0, result.output
    assert (board / "runs" / "r" / "eval" / "records.jsonl").exists()
    assert not (board / "runs" / "r" / "checkpoints").exists()
    rows = json.loads((board / "leaderboard.json").read_text())
    assert rows and all(isinstance(r["normalized_margin"], float) for r in rows)
    again = CliRunner().invoke(main, ["leaderboard", "--out", str(board)])
    assert again.exit_code == 0
    ckpts = sorted((run / "checkpoints").glob("*.pt"))
    cmp = CliRunner().invoke(main, ["compare", str(ckpts[0]), str(ckpts[-1]), "--format", "json",
                                    "--plot", str(tmp_path / "c.png")])
    assert cmp.exit_code == 0, cmp.output
    assert (tmp_path / "c.png").stat().st_size > 1000
    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    empty = CliRunner().invoke(main, ["leaderboard", "--out", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no runs" in empty.output
