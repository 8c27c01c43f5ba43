"""Checkpoints: trajectory policy, atomic writes, safe loading, exact resume after a kill."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import kill_after_epochs

from marginrobust import RunSpec, TrainConfig, load_checkpoint, read_metrics, train_run
from marginrobust.errors import UserError
from marginrobust.train.checkpoints import (
    FORMAT,
    atomic_write,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
)

SPEC = dict(model="mlp", model_kwargs={"widths": [32]}, dataset="digits", train_subset=200,
            test_subset=50)


def test_trajectory_checkpoints_follow_the_decade_policy(tmp_path):
    spec = RunSpec(**SPEC, train=TrainConfig(epochs=12, batch_size=50, device="cpu"),
                   checkpoint_decades=1.0, checkpoint_epochs=[5])
    trainer = train_run(tmp_path / "run", spec)
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == list(range(13))
    epochs = [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path / "run")]
    # Expected from the policy: initial, each new integer decade of log10 loss, epoch 5, last.
    expected, threshold = {0, 5, 12}, None
    for r in rows:
        if threshold is None:
            threshold = math.ceil(r["log10_loss"]) - 1
        elif r["log10_loss"] <= threshold:
            expected.add(r["epoch"])
            threshold = math.ceil(r["log10_loss"]) - 1
    assert set(epochs) == expected
    model, meta = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert meta["epoch"] == trainer.epoch == 12
    assert meta["metrics"]["log10_loss"] == rows[-1]["log10_loss"]
    assert meta["model_info"]["name"] == "mlp" and meta["data"]["name"] == "digits"
    assert meta["schedule"]["alpha"] == trainer.schedule.alpha
    # Each checkpoint rebuilds its model alone and reproduces its recorded margin.
    from marginrobust import load_dataset, margin_stats

    data = load_dataset("digits", train_subset=200, test_subset=50)
    stats = margin_stats(model, data.x_train, data.y_train)
    assert stats["normalized_margin"] == pytest.approx(rows[-1]["normalized_margin"], rel=1e-6)
    raw = torch.load(list_checkpoints(tmp_path / "run")[0], weights_only=True)
    assert raw["format"] == FORMAT and raw["kind"] == "initial"


def test_an_asked_for_epoch_inside_an_extended_attempt_is_saved_at_its_end(tmp_path):
    # loss-based-fast accepts attempts of 1-4 epochs: its records may skip epochs.
    spec = RunSpec(**{**SPEC, "train_subset": 300, "test_subset": 100},
                   train=TrainConfig(epochs=40, batch_size=25, lr=30.0, device="cpu",
                                     schedule="loss-based-fast"),
                   checkpoint_decades=0.0, checkpoint_epochs=list(range(1, 41)))
    train_run(tmp_path / "run", spec)
    recorded = [r["epoch"] for r in read_metrics(tmp_path / "run")]
    assert max(b - a for a, b in zip(recorded, recorded[1:])) > 1
    saved = [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path / "run")]
    assert saved == recorded  # every record ends a span holding an asked-for epoch


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    target = tmp_path / "ckpt.pt"
    save_checkpoint({"format": FORMAT, "x": torch.ones(3)}, target)

    def dies(fh):
        fh.write(b"partial bytes")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert torch.equal(read_checkpoint(target)["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_carrying_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Evil()}, path)
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(UserError, match="not a marginrobust checkpoint"):
        load_checkpoint(other)
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "marginrobust.cli", *args]


TRAIN = ["train", "--model", "cnn", "--width", "0.5", "--dataset", "digits", "--train-subset",
         "300", "--test-subset", "50", "--batch-size", "50", "--quiet", "--device", "cpu"]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = "15"
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(*TRAIN, "--epochs", epochs, "--out", str(full)), check=True, env=env,
                   capture_output=True)
    kill_after_epochs(_cli(*TRAIN, "--epochs", epochs, "--out", str(killed)), killed, 4, env)
    done_before = len(read_metrics(killed))
    assert done_before < int(epochs) + 1
    subprocess.run(_cli("train", "--out", str(killed), "--resume", "--quiet"), check=True,
                   env=env, capture_output=True)
    assert _strip(read_metrics(killed)) == _strip(read_metrics(full))
    a = [p.name for p in list_checkpoints(full)]
    assert a == [p.name for p in list_checkpoints(killed)]
    for name in a:
        ma, _ = load_checkpoint(full / "checkpoints" / name)
        mb, _ = load_checkpoint(killed / "checkpoints" / name)
        for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    csv_lines = (killed / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == int(epochs) + 2
    assert json.loads((killed / "run.json").read_text())["run"]["model"] == "cnn"


TORCH_WORDS = ("PyTorch", "torch.load", "Pytorch", "miniz", "WeightsUnpickler", "allowlist",
               "safe_globals", "central directory")


def _refusal(path) -> str:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as info:
            read_checkpoint(path)
    assert not caught, [str(w.message) for w in caught]
    text = str(info.value)
    assert "\n" not in text and not [w for w in TORCH_WORDS if w in text], text
    return text


def test_refusals_say_what_is_wrong_in_our_words(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"format": FORMAT, "x": torch.ones(1000)}, good)
    data = good.read_bytes()
    cases = {"truncated.pt": data[: len(data) // 2], "empty.pt": b"",
             "text.pt": b"not a checkpoint\n"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        text = _refusal(tmp_path / name)
        assert text == (f"{tmp_path / name} is not a marginrobust checkpoint: it is truncated "
                        "or not a torch file")
    import pickle

    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert "truncated or not a torch file" in _refusal(tmp_path / "pickle.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Evil()}, evil)
    text = _refusal(evil)
    assert text.startswith(f"{evil} carries Python objects or code (")
    assert text.endswith("which weights_only loading refuses; only checkpoints written by "
                         "marginrobust load")
