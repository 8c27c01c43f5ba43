"""The training procedure of docs/science.md (the loss-based rate, the frame trick): rollback."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from marginrobust import Callback, TrainConfig, Trainer, create_model
from marginrobust.errors import UserError
from marginrobust.train.schedules import (
    CappedLossBasedSchedule,
    ConstantSchedule,
    LossBasedSchedule,
    make_schedule,
)


def test_loss_based_rule_accepts_decrease_and_rolls_back_otherwise():
    s = LossBasedSchedule(alpha=0.1)
    s.start(math.log(2.0))
    assert s.end_epoch(math.log(1.5))
    assert s.alpha == pytest.approx(0.1 * 2 ** (1 / 5))
    assert s.log_frame == math.log(1.5)
    a = s.alpha
    assert not s.end_epoch(math.log(1.6))           # loss rose: roll back
    assert s.alpha == pytest.approx(a / 2 ** (1 / 10))
    assert s.log_frame == math.log(1.5)             # the frame stays at the accepted loss
    assert not s.end_epoch(None)                    # exploded batch
    assert not s.end_epoch(math.nan)
    assert s.end_epoch(math.log(1.5))               # equal loss is accepted (≤)
    # η = α / 𝓛̄_{t-1}
    assert s.log10_lr == pytest.approx(math.log10(s.alpha) - math.log10(1.5))


def test_capped_rule_keeps_alpha_below_its_last_rollback():
    s = make_schedule("loss-based-capped", 0.1)
    assert isinstance(s, CappedLossBasedSchedule) and s.cap == math.inf
    s.start(math.log(2.0))
    assert s.end_epoch(math.log(1.9))               # no rollback yet: the paper's walk
    assert s.alpha == pytest.approx(0.1 * 2 ** (1 / 5))
    a = s.alpha
    assert not s.end_epoch(math.log(1.95))          # rollback: α and cap drop together
    assert s.alpha == pytest.approx(a / 2 ** (1 / 10)) and s.cap == s.alpha
    assert s.log_frame == math.log(1.9)             # judged exactly as the paper does
    cap = s.cap
    assert s.end_epoch(math.log(1.8))               # accept: α ≤ cap · cap_growth < α·up
    assert s.cap == pytest.approx(cap * 2 ** (1 / 10))
    assert s.alpha == pytest.approx(s.cap) and s.alpha < cap * 2 ** (1 / 5)
    for _ in range(5):                              # long runs of accepts: the cap leads
        s.end_epoch(s.log_frame)
    assert s.alpha == pytest.approx(cap * 2 ** (6 / 10))
    restored = CappedLossBasedSchedule()
    restored.load_state_dict(s.state_dict())
    assert restored == s


def test_alpha_floor_exhausts_schedule():
    s = LossBasedSchedule(alpha=1e-49)
    s.start(0.0)
    while s.end_epoch(1.0) is False and not s.exhausted:
        pass
    assert s.exhausted and s.alpha < 1e-50


def test_constant_schedule_never_rolls_back_on_finite_loss():
    s = make_schedule("constant", 0.01)
    assert isinstance(s, ConstantSchedule)
    assert s.end_epoch(5.0) and s.rate == 0.01 and not s.exhausted
    assert not s.end_epoch(math.inf) and s.exhausted


def test_bad_schedule_values_are_user_errors():
    with pytest.raises(UserError):
        make_schedule("cosine", 0.1)
    with pytest.raises(UserError):
        make_schedule("constant", -1.0)


class Recorder(Callback):
    def __init__(self):
        self.records, self.rollbacks, self.snapshots = [], [], []

    def on_epoch_end(self, trainer, record):
        self.records.append(record)
        self.snapshots.append(copy.deepcopy(trainer.model.state_dict()))

    def on_rollback(self, trainer, epoch, reason):
        self.rollbacks.append((epoch, reason, copy.deepcopy(trainer.model.state_dict())))


def test_trainer_rolls_back_to_exact_parameters(digits):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    rec = Recorder()
    # α_0 = 1e4 blows the first attempts up; each is undone before α shrinks.
    cfg = TrainConfig(epochs=2, batch_size=100, lr=1e4, device="cpu")
    trainer = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test, cfg,
                      [rec])
    trainer.fit()
    assert rec.rollbacks, "expected rolled-back epochs"
    first_epoch_rollbacks = [r for r in rec.rollbacks if r[0] == 1]
    for _, _, state in first_epoch_rollbacks:
        for k, v in state.items():
            assert torch.equal(v, rec.snapshots[0][k])
    assert rec.records[1]["rollbacks"] == len(first_epoch_rollbacks)
    assert rec.records[1]["alpha"] == pytest.approx(
        1e4 / 2 ** (len(first_epoch_rollbacks) / 10) * 2 ** (1 / 5))
    assert rec.records[1]["log10_mean_loss"] <= rec.records[0]["log10_mean_loss"]
    assert trainer.grad_evals > trainer.step


@pytest.mark.parametrize("schedule", ["loss-based", "loss-based-capped", "loss-based-fast"])
def test_accepted_epochs_never_increase_the_loss(digits, schedule):
    torch.manual_seed(1)
    model = create_model("cnn", in_chans=1, img_size=8, width=0.25)
    rec = Recorder()
    Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
            TrainConfig(epochs=15, batch_size=50, device="cpu", schedule=schedule),
            [rec]).fit()
    losses = [r["log10_loss"] for r in rec.records]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert rec.records[-1]["train_acc"] > 0.9


def test_frame_trick_keeps_training_at_log10_loss_below_minus_1000(trained_mlp, digits):
    """A float32 model far past the float range keeps taking finite, non-zero steps."""
    model = copy.deepcopy(trained_mlp)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(300.0)
    rec = Recorder()
    trainer = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                      TrainConfig(epochs=4, batch_size=100, device="cpu"), [rec])
    before = copy.deepcopy(model.state_dict())
    trainer.fit()
    first, last = rec.records[0], rec.records[-1]
    assert first["log10_loss"] < -1000
    assert last["epoch"] == 4
    assert last["log10_loss"] < first["log10_loss"]
    for r in rec.records:
        for key in ("log10_loss", "smoothed_margin", "normalized_margin", "q_min", "log10_lr"):
            assert math.isfinite(r[key]) and r[key] != 0.0
    moved = sum(float((model.state_dict()[k] - before[k]).abs().sum()) for k in before)
    assert moved > 0
    # The constant rate, by contrast, is frozen there: its gradient underflows.
    frozen = copy.deepcopy(trained_mlp)
    with torch.no_grad():
        for p in frozen.parameters():
            p.mul_(300.0)
    start = copy.deepcopy(frozen.state_dict())
    Trainer(frozen, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
            TrainConfig(epochs=2, schedule="constant", lr=0.01, device="cpu")).fit()
    assert all(torch.equal(frozen.state_dict()[k], start[k]) for k in start)


def test_stops_on_target_and_time(digits):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    t = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                TrainConfig(epochs=500, batch_size=0, target_log10_loss=2.0, device="cpu"))
    assert t.fit() == "target" and t.record["log10_loss"] <= 2.0
    t = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                TrainConfig(epochs=10**6, batch_size=0, max_minutes=0.02, device="cpu"))
    assert t.fit() == "time" and t.epoch < 10**6


def test_invalid_config_is_user_error():
    with pytest.raises(UserError):
        TrainConfig(epochs=-1).validate()
    with pytest.raises(UserError):
        TrainConfig(schedule="cosine").validate()


def test_capped_schedule_resumes_exactly_after_its_cap_is_set(digits):
    """A run stopped after rollbacks and continued from its state equals one run through."""
    def trainer(epochs):
        torch.manual_seed(0)
        model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
        cfg = TrainConfig(epochs=epochs, batch_size=100, lr=1e3, device="cpu",
                          schedule="loss-based-capped")
        return Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test, cfg)

    through = trainer(8)
    through.fit()
    first = trainer(4)
    first.fit()
    assert math.isfinite(first.schedule.cap), "expected a rollback to set the cap"
    second = trainer(8)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    second.fit()
    assert second.schedule == through.schedule
    assert second.grad_evals == through.grad_evals > second.step
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k])


@pytest.mark.parametrize("field,value,message", [
    ("explode_ratio", -5.0, "--explode-ratio must be > 1, not -5"),
    ("explode_ratio", math.nan, "--explode-ratio must be > 1, not nan"),
    ("explode_ratio", math.inf, "--explode-ratio must be > 1, not inf"),
    ("lr", math.nan, "--lr must be a positive number, not nan"),
    ("lr", math.inf, "--lr must be a positive number, not inf"),
    ("lr", 0.0, "--lr must be a positive number, not 0"),
    ("max_minutes", math.nan, "--max-minutes must be a positive number of minutes"),
    ("max_minutes", math.inf, "--max-minutes must be a positive number of minutes"),
    ("target_log10_loss", math.nan, "--target-log10-loss must be a finite number, not nan"),
    ("target_log10_loss", -math.inf, "--target-log10-loss must be a finite number, not -inf"),
    ("epochs", -1, "--epochs must be a whole number, 0 or more, not -1"),
    ("epochs", 2.5, "--epochs must be a whole number, 0 or more, not 2.5"),
    ("batch_size", -3, "--batch-size must be a whole number, 0 (full batch) or more, not -3"),
    ("schedule", "cosine",
     "--schedule must be one of loss-based, loss-based-capped, loss-based-fast, constant"),
    ("lr_up", 0.5, "lr_up must be >= 1, not 0.5"),
    ("lr_down", 1.0, "lr_down must be > 1, not 1"),
    ("alpha_min", math.nan, "alpha_min must be 0 or more, not nan"),
])
def test_validate_names_only_the_offending_value(field, value, message):
    with pytest.raises(UserError) as info:
        TrainConfig(device="cpu", **{field: value}).validate()
    text = str(info.value)
    assert text.startswith(message), text
    # One sentence about one value: no other option is named.
    assert "\n" not in text and text.count(" must ") == 1


def test_validate_accepts_the_meaningful_extremes():
    for cfg in (TrainConfig(target_log10_loss=-1e4), TrainConfig(alpha_min=0.0),
                TrainConfig(epochs=0, batch_size=0, max_minutes=1e-3)):
        assert cfg.validate().lr == 0.1


class Counter(Callback):
    """Counts accepted epochs in steps of ``step``; the count must survive a resume."""

    def __init__(self, step, key=None):
        self.step, self.count = step, 0
        if key is not None:
            self.state_key = key

    def on_epoch_end(self, trainer, record):
        self.count += self.step

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state.get("count", 0)


def _small_trainer(digits, epochs, callbacks=(), **model_opts):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(16,), **model_opts)
    cfg = TrainConfig(epochs=epochs, batch_size=100, device="cpu")
    return Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test, cfg,
                   list(callbacks))


def test_two_callbacks_of_one_class_keep_their_own_state_across_a_resume(digits):
    first = _small_trainer(digits, 3, [Counter(1), Counter(10)])
    first.fit()
    state = copy.deepcopy(first.state_dict())
    assert set(state["callbacks"]) == {"Counter", "Counter#2"}
    a, b = Counter(1), Counter(10)
    second = _small_trainer(digits, 5, [a, b])
    second.load_state_dict(state)
    second.fit()
    # Epochs 0..5 were seen once each, across the two processes.
    assert (a.count, b.count) == (6, 60)


def test_explicit_state_keys_are_used_and_may_not_collide(digits):
    t = _small_trainer(digits, 1, [Counter(1, key="fast"), Counter(10, key="slow")])
    t.fit()
    assert t.state_dict()["callbacks"] == {"fast": {"count": 2}, "slow": {"count": 20}}
    clash = _small_trainer(digits, 1, [Counter(1, key="same"), Counter(10, key="same")])
    with pytest.raises(UserError, match="share the state key 'same'"):
        clash.fit()


class StartSeen(Callback):
    def __init__(self):
        self.record_at_start = "unset"

    def on_train_start(self, trainer):
        self.record_at_start = trainer.record


def test_on_train_start_runs_before_the_initial_measurement(digits):
    seen = StartSeen()
    t = _small_trainer(digits, 1, [seen])
    t.fit()
    assert seen.record_at_start is None           # fresh run: nothing measured yet
    again = StartSeen()
    resumed = _small_trainer(digits, 2, [again])
    resumed.load_state_dict(copy.deepcopy(t.state_dict()))
    resumed.fit()
    assert again.record_at_start["epoch"] == 1    # resumed: the last accepted record


def test_a_non_homogeneous_model_warns_once_and_marks_its_order_nominal(digits):
    import warnings

    from marginrobust.train import NonHomogeneousWarning

    rec = Recorder()
    t = _small_trainer(digits, 2, [rec], bias="all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit()
    ours = [w for w in caught if issubclass(w.category, NonHomogeneousWarning)]
    assert len(ours) == 1
    text = str(ours[0].message)
    assert "not homogeneous" in text and "nominal order L=2" in text and "mean little" in text
    assert all(r["homogeneous"] is False and r["homogeneity_order"] is None
               and r["margin_order"] == 2 for r in rec.records)
    # A homogeneous model: no warning, and its measured order is the one used.
    rec = Recorder()
    t = _small_trainer(digits, 1, [rec])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonHomogeneousWarning)
        t.fit()
    assert all(r["homogeneous"] is True and r["homogeneity_order"] == r["margin_order"] == 2
               for r in rec.records)


def test_every_schedule_follows_the_protocol_without_new_state():
    from marginrobust.train.schedules import SCHEDULES, Schedule

    expected = {"loss-based": (True, "alpha", 0), "loss-based-capped": (True, "alpha", 0),
                "loss-based-fast": (True, "alpha", 2), "constant": (False, "diverged", 0)}
    for name in SCHEDULES:
        s = make_schedule(name, 0.1)
        assert isinstance(s, Schedule)
        assert (s.uses_loss_frame, s.exhausted_reason, s.chunk_steps) == expected[name]
        # Class-level answers stay out of the resume state (checkpoints are unchanged).
        assert not {"uses_loss_frame", "exhausted_reason"} & set(s.state_dict())
