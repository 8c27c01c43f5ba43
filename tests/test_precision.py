"""Precision and determinism policy: flags set inside, the caller's flags back after."""

from __future__ import annotations

import os

import pytest
import torch

from marginrobust.errors import UserError
from marginrobust.precision import (
    CUBLAS_WORKSPACE_VALUE,
    PRECISIONS,
    check_precision,
    current_flags,
    deterministic_algorithms,
    measurement_precision,
    policy_record,
    set_cublas_workspace_config,
    training_precision,
)

ENV = "CUBLAS_WORKSPACE_CONFIG"


@pytest.fixture(autouse=True)
def _restore_torch_flags(monkeypatch):
    """Each test starts from torch's flags as they are and leaves them so, whatever it did."""
    monkeypatch.delenv(ENV, raising=False)
    strings = {p: getattr(_leaf(p), "fp32_precision", None) for p in LEAVES}
    legacy = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    det = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    # A failing test must not leak flags into the others: put them back by hand.
    torch.set_float32_matmul_precision(legacy[0])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = legacy[1:]
    for p, value in strings.items():
        if value is not None:
            _leaf(p).fp32_precision = value
    torch.use_deterministic_algorithms(det[0], warn_only=det[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = det[2:]


LEAVES = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv",
          "mkldnn.rnn")


def _leaf(path):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _tf32_on() -> None:
    """A caller that wants TF32 everywhere (as some training scripts set it)."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _ieee() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def test_measurement_precision_turns_tf32_off_and_restores_the_callers_flags():
    _tf32_on()
    before = current_flags()
    with measurement_precision() as inside:
        assert _ieee() == (False, False, "highest")
        assert not inside.matmul_tf32 and not inside.conv_tf32
    assert current_flags() == before
    assert _ieee() == (True, True, "high")


def test_flags_come_back_after_an_exception():
    _tf32_on()
    before = current_flags()
    with pytest.raises(ZeroDivisionError):
        with measurement_precision():
            raise ZeroDivisionError
    assert current_flags() == before
    with pytest.raises(KeyError):
        with deterministic_algorithms(True):
            assert torch.are_deterministic_algorithms_enabled()
            raise KeyError("x")
    assert current_flags() == before
    assert ENV not in os.environ


@pytest.mark.parametrize("precision, expected", [("fp32", (False, False, "highest")),
                                                 ("tf32", (True, True, "high"))])
def test_training_precision_sets_both_kinds_of_kernel(precision, expected):
    before = current_flags()
    with training_precision(precision):
        assert _ieee() == expected
    assert current_flags() == before


def test_nested_contexts_restore_the_outer_state_at_each_level():
    before = current_flags()
    with training_precision("tf32"):
        outer = current_flags()
        with measurement_precision():
            assert _ieee() == (False, False, "highest")
            with deterministic_algorithms(True):
                assert torch.are_deterministic_algorithms_enabled()
                assert _ieee() == (False, False, "highest")  # precision untouched by it
            assert not torch.are_deterministic_algorithms_enabled()
        assert current_flags() == outer
        assert _ieee() == (True, True, "high")
    assert current_flags() == before


def test_the_newer_per_backend_precision_strings_come_back_too():
    """The per-op precision strings of torch >= 2.9 come back exactly."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is None:
        pytest.skip("this torch has no per-backend precision strings")
    # A caller of the newer API only, in a state where the legacy cuDNN flag cannot be
    # read (conv and RNN differ): the policy must neither fail nor change it.
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    before = current_flags()
    for ctx in (measurement_precision(), training_precision("tf32"), training_precision()):
        with ctx as inside:
            # The CPU's oneDNN matmul is IEEE inside every mode (bf16 would change numbers).
            assert dict(inside.fp32_precision)["mkldnn.matmul"] == "ieee"
        assert current_flags() == before
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"


def test_deterministic_algorithms_sets_and_restores_everything(monkeypatch):
    torch.backends.cudnn.benchmark = True
    before = current_flags()
    with deterministic_algorithms(True) as inside:
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ[ENV] == CUBLAS_WORKSPACE_VALUE == inside.cublas_workspace
    assert current_flags() == before and ENV not in os.environ
    # A value the environment already has is the user's: kept inside and after.
    monkeypatch.setenv(ENV, ":16:8")
    with deterministic_algorithms(True):
        assert os.environ[ENV] == ":16:8"
    assert os.environ[ENV] == ":16:8"


def test_deterministic_off_means_torchs_defaults_inside():
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = True
    before = current_flags()
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert ENV not in os.environ
    assert current_flags() == before
    assert torch.is_deterministic_algorithms_warn_only_enabled()


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_deterministic_mode_raises_on_cuda_for_an_op_without_a_deterministic_kernel():
    """warn_only=False: a non-deterministic op is an error, never a silent difference."""
    x = torch.rand(100, device="cuda")
    with deterministic_algorithms(True), pytest.raises(RuntimeError, match="deterministic"):
        torch.histc(x, bins=10)
    torch.histc(x, bins=10)  # allowed again after


def test_set_cublas_workspace_config_keeps_a_value_already_there(monkeypatch):
    assert set_cublas_workspace_config() is True
    assert os.environ[ENV] == CUBLAS_WORKSPACE_VALUE
    monkeypatch.setenv(ENV, ":16:8")
    assert set_cublas_workspace_config() is False
    assert os.environ[ENV] == ":16:8"


def test_unknown_precision_is_one_sentence():
    assert check_precision("tf32") == "tf32" and PRECISIONS == ("fp32", "tf32")
    with pytest.raises(UserError, match=r"--precision must be fp32 or tf32, not 'bf16'"):
        with training_precision("bf16"):
            pass
    with pytest.raises(UserError):
        policy_record("fp16", True)
    assert policy_record("tf32", False) == {"precision": "tf32", "deterministic": False,
                                            "measurement_precision": "fp32"}


def test_measurement_under_the_policy_gives_identical_numbers_on_cpu(digits):
    """What the trainer measures each epoch, with and without the policy, bit for bit."""
    from marginrobust import create_model, margin_stats
    from marginrobust.margins import log_losses

    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=8, width=0.5).eval()
    x, y = digits.x_train, digits.y_train
    plain = margin_stats(model, x, y, order=4, batch_size=100)
    with torch.no_grad():
        loss = log_losses(model(x), y)
    with training_precision("tf32"), deterministic_algorithms(True):
        with measurement_precision():
            measured = margin_stats(model, x, y, order=4, batch_size=100)
        with torch.no_grad():
            loss_tf32 = log_losses(model(x), y)
    assert measured == plain
    # On the CPU TF32 does not exist: the training-precision loss is the same bits too.
    assert torch.equal(loss, loss_tf32)


# ---------------------------------------------------------------------- on a GPU
CUDA_SPEC = dict(model="cnn", model_kwargs={"width": 0.5}, dataset="digits", train_subset=300,
                 test_subset=50)


def _run(out, epochs: int, device: str, resume: bool = False):
    from marginrobust import RunSpec, TrainConfig, train_run

    with training_precision("fp32"), deterministic_algorithms(True):
        if resume:
            return train_run(out, resume=True, overrides={"epochs": epochs})
        spec = RunSpec(**CUDA_SPEC, train=TrainConfig(epochs=epochs, batch_size=50,
                                                      device=device))
        return train_run(out, spec)


def _weights(trainer):
    return {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path, device):
    """Deterministic kernels, fp32: 3 epochs + resume 3 == 6 straight == 6 again (on the
    CPU it also shows that no op of a training run lacks a deterministic kernel)."""
    from marginrobust import read_metrics

    set_cublas_workspace_config()
    straight = _weights(_run(tmp_path / "a", 6, device))
    again = _weights(_run(tmp_path / "b", 6, device))
    _run(tmp_path / "c", 3, device)
    resumed = _weights(_run(tmp_path / "c", 6, device, resume=True))
    for key, value in straight.items():
        assert torch.equal(value, again[key]), key
        assert torch.equal(value, resumed[key]), key

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    assert strip(read_metrics(tmp_path / "c")) == strip(read_metrics(tmp_path / "a"))


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.slow),
    pytest.param("cuda", marks=CUDA)])
def test_float32_margins_equal_the_cpu_float64_ones(device):
    """Under the measurement precision, float32 margins (cuda; the CPU's as a check of the
    test itself) agree with the CPU's float64 ones to 1e-6."""
    import copy
    import math

    from marginrobust import TrainConfig, Trainer, create_model, load_dataset, margin_stats

    data = load_dataset("digits", train_subset=300, test_subset=50, seed=0)
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=8, width=0.5)
    trainer = Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                      TrainConfig(epochs=100, batch_size=50, device=device))
    with training_precision("tf32"):  # trained however; measured exactly
        trainer.fit()
    order = trainer.order
    with measurement_precision():
        f32 = margin_stats(trainer.model, data.x_train, data.y_train, order)
    cpu64 = copy.deepcopy(trainer.model).cpu().double()
    ref = margin_stats(cpu64, data.x_train.double(), data.y_train, order)
    assert ref["log10_loss"] < -3  # trained well past fitting: the loss is a margin figure
    for key in ("q_min", "q_max", "normalized_margin", "product_margin", "smoothed_margin",
                "log10_loss", "log10_mean_loss", "rho"):
        assert math.isclose(f32[key], ref[key], rel_tol=1e-6), (key, f32[key], ref[key])
    assert f32["accuracy"] == ref["accuracy"] == 1.0
