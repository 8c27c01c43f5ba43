"""A run folder: run.json records what decides reproducibility; files follow the umask."""

from __future__ import annotations

import os
import platform

import pytest
import torch

from marginrobust import RunSpec, TrainConfig, train_run
from marginrobust.errors import UserError
from marginrobust.train.checkpoints import list_checkpoints, read_checkpoint
from marginrobust.train.run import read_run

SPEC = dict(model="mlp", model_kwargs={"widths": [16]}, dataset="digits", train_subset=100,
            test_subset=50)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train_run(out, RunSpec(**SPEC, train=TrainConfig(epochs=2, batch_size=50, device="cpu")))
    return out


def test_run_json_records_what_decides_reproducibility(run_dir):
    env = read_run(run_dir)["environment"]
    assert env["torch"] == str(torch.__version__)
    assert env["python"] == platform.python_version()
    assert env["threads"] == torch.get_num_threads()
    assert env["machine"] == platform.machine()
    assert env["device"] == "cpu"
    assert env["torch_build"] == (f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu")
    assert isinstance(env["cpu"], str) and env["cpu"]
    assert "cpu_capability" in env
    # Every checkpoint carries the same record.
    assert read_checkpoint(list_checkpoints(run_dir)[-1])["environment"] == env
    assert read_run(run_dir)["stopped"]["reason"] == "epochs"


def test_every_run_file_gets_the_umask_permissions(run_dir):
    mask = os.umask(0o022)
    os.umask(mask)
    files = [run_dir / n for n in ("run.json", "metrics.jsonl", "metrics.csv", "resume.pt")]
    files += list_checkpoints(run_dir)
    assert len(files) > 4
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_a_damaged_run_json_is_one_sentence(tmp_path):
    assert read_run(tmp_path) is None
    (tmp_path / "run.json").write_text('{"run": ')
    with pytest.raises(UserError, match="run.json is not valid JSON"):
        read_run(tmp_path)


@pytest.mark.parametrize("field,value,message", [
    ("scale", float("inf"), "--scale must be a positive number, not inf"),
    ("scale", -2.0, "--scale must be a positive number, not -2.0"),
    ("checkpoint_decades", float("nan"), "--checkpoint-decades must be 0"),
])
def test_bad_run_numbers_are_one_sentence(tmp_path, field, value, message):
    spec = RunSpec(**SPEC, train=TrainConfig(epochs=1, device="cpu"), **{field: value})
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as info:
        train_run(tmp_path / "run", spec)
    assert "\n" not in str(info.value)
