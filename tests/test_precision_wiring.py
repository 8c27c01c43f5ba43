"""The precision policy and the fused loss as the trainer, run files, CLI and board use them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from marginrobust import RunSpec, TrainConfig, Trainer, create_model, train_run
from marginrobust.cli import main
from marginrobust.errors import UserError
from marginrobust.margins import log_losses
from marginrobust.precision import current_flags
from marginrobust.train import trainer as trainer_module


def _tiny(epochs: int = 3, **train) -> RunSpec:
    return RunSpec(model="mlp", model_kwargs={"widths": [16]}, dataset="digits",
                   train_subset=120, test_subset=40,
                   train=TrainConfig(epochs=epochs, batch_size=40, device="cpu", **train))


def _flags():
    # CUBLAS_WORKSPACE_CONFIG is set once for the process on purpose: cuBLAS reads it only
    # when it starts, so it cannot be put back after a run; every torch flag is.
    return dataclasses.replace(current_flags(), cublas_workspace=None)


def test_run_files_record_precision_and_determinism_and_flags_are_restored(tmp_path):
    before = _flags()
    train_run(tmp_path / "a", _tiny(precision="tf32", deterministic=False))
    assert _flags() == before
    train = json.loads((tmp_path / "a" / "run.json").read_text())["run"]["train"]
    assert (train["precision"], train["deterministic"]) == ("tf32", False)
    train_run(tmp_path / "b", _tiny())
    train = json.loads((tmp_path / "b" / "run.json").read_text())["run"]["train"]
    assert (train["precision"], train["deterministic"]) == ("fp32", True)
    assert _flags() == before


@pytest.mark.parametrize("field,value", [("precision", "fp16"), ("deterministic", "yes")])
def test_bad_policy_values_are_one_sentence(field, value):
    with pytest.raises(UserError):
        TrainConfig(**{field: value}).validate()


def test_cli_takes_the_options(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["train", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    ok = runner.invoke(main, ["train", "--model", "mlp", "--model-opt", "widths=[8]",
                              "--train-subset", "50", "--test-subset", "20", "--epochs", "1",
                              "--quiet", "--device", "cpu", "--no-deterministic",
                              "--out", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    train = json.loads((tmp_path / "r" / "run.json").read_text())["run"]["train"]
    assert train["deterministic"] is False


def _train(digits, epochs: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    records: list[dict] = []

    class Keep(trainer_module.Callback):
        def on_epoch_end(self, trainer, record):
            records.append({k: v for k, v in record.items() if k != "wall_s"})

    Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
            TrainConfig(epochs=epochs, batch_size=50, device="cpu"), callbacks=[Keep()]).fit()
    return records, {k: v.clone() for k, v in model.state_dict().items()}


def test_the_fused_loss_trains_exactly_as_the_reference_loss(digits, monkeypatch):
    fused = _train(digits, 12)
    monkeypatch.setattr(trainer_module, "framed_loss",
                        lambda logits, y, frame: torch.exp(log_losses(logits, y) - frame).mean())
    reference = _train(digits, 12)
    assert fused[0] == reference[0]
    for key, value in fused[1].items():
        assert torch.equal(value, reference[1][key]), key
