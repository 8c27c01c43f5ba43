"""``--schedule loss-based-fast`` (docs/science.md): the paper's rule judged per chunk of
steps; no accepted epoch raises the loss, a rolled-back chunk is undone exactly, and a run
interrupted mid-epoch resumes bit for bit."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from marginrobust import Callback, TrainConfig, Trainer, create_model
from marginrobust.margins import LN10
from marginrobust.train.schedules import FastLossBasedSchedule, make_schedule


def test_chunk_rule_is_the_papers_epoch_rule():
    s = make_schedule("loss-based-fast", 0.1)
    assert isinstance(s, FastLossBasedSchedule) and s.chunk_steps == 7
    s.start(math.log(2.0))
    assert s.end_chunk(math.log(1.5))
    assert s.alpha == pytest.approx(0.1 * 2 ** (1 / 5)) and s.log_frame == math.log(1.5)
    a = s.alpha
    assert not s.end_chunk(math.log(1.6))           # loss rose: the chunk is rolled back
    assert s.alpha == pytest.approx(a / 2 ** (1 / 10)) and s.log_frame == math.log(1.5)
    assert not s.end_chunk(None) and not s.end_chunk(math.nan)
    assert s.end_chunk(math.log(1.5), last=True)    # equal loss is accepted (≤)
    with pytest.raises(NotImplementedError):
        s.end_epoch(0.0)
    restored = FastLossBasedSchedule()
    restored.load_state_dict(s.state_dict())
    assert restored == s


def _trainer(digits, epochs, lr=1.0, callbacks=(), **cfg):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    # 300 points in batches of 25: 12 steps, two chunks of 7 and 5.
    config = TrainConfig(epochs=epochs, batch_size=25, lr=lr, device="cpu",
                         schedule="loss-based-fast", **cfg)
    return Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                   config, list(callbacks))


class Recorder(Callback):
    """Records, the parameters of each accepted epoch, and the resume state there."""

    def __init__(self):
        self.records, self.states, self.rollbacks = [], [], 0

    def on_epoch_end(self, trainer, record):
        self.records.append(record)
        self.states.append(copy.deepcopy(trainer.state_dict()))

    def on_rollback(self, trainer, epoch, why):
        self.rollbacks += 1


def test_no_accepted_epoch_raises_the_summed_loss_and_chunks_roll_back(digits):
    rec = Recorder()
    t = _trainer(digits, 12, lr=30.0, callbacks=[rec])
    t.fit()
    losses = [r["log10_loss"] for r in rec.records]
    assert len(losses) == 13
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert rec.rollbacks > 0 and t.grad_evals > t.step
    # The rollbacks cost chunks, not epochs: 7 or 5 steps each.
    assert (t.grad_evals - t.step) <= 7 * rec.rollbacks
    assert t.step == 12 * 12
    assert sum(r["rollbacks"] for r in rec.records) == rec.rollbacks


def test_the_chunk_check_has_the_bits_of_the_epoch_measurement(digits):
    t = _trainer(digits, 2)
    t.fit()
    stats = t._train_stats()
    assert t._train_log_mean_loss() == stats["log10_mean_loss"] * LN10
    assert t.schedule.log_frame == t.record["log10_mean_loss"] * LN10


class Interrupt(Exception):
    pass


class KillAtRollback(Callback):
    """Stops the run at its ``n``-th chunk rollback: in the middle of an epoch."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_rollback(self, trainer, epoch, why):
        self.seen += 1
        if self.seen == self.n:
            raise Interrupt


def test_a_run_interrupted_mid_epoch_resumes_bit_for_bit(digits):
    through = _trainer(digits, 8, lr=30.0)
    through.fit()
    rec = Recorder()
    killed = _trainer(digits, 8, lr=30.0, callbacks=[rec, KillAtRollback(5)])
    with pytest.raises(Interrupt):
        killed.fit()
    # Killed after chunks of its next epoch were accepted: the last resume state is older.
    assert 0 < len(rec.records) < 9 and killed.grad_evals > rec.records[-1]["grad_evals"]
    resumed = _trainer(digits, 8, lr=30.0)
    resumed.load_state_dict(copy.deepcopy(rec.states[-1]))
    resumed.fit()
    assert resumed.schedule == through.schedule
    assert (resumed.epoch, resumed.step, resumed.grad_evals) == (
        through.epoch, through.step, through.grad_evals)
    assert resumed.grad_evals > resumed.step
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


def test_a_stop_inside_an_epoch_leaves_the_last_accepted_state(digits):
    rec = Recorder()
    # α_min just below α_0: the first rollback exhausts the schedule mid-epoch.
    t = _trainer(digits, 50, lr=30.0, callbacks=[rec], alpha_min=29.0)
    assert t.fit() == "alpha"
    last = rec.states[-1]
    assert t.schedule.state_dict() == last["schedule"]
    assert torch.equal(t.generator.get_state(), last["generator"])
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, last["model"][k])
