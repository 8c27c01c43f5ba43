"""``--schedule loss-based-fast`` (docs/science.md): the paper's rule judged per chunk of
steps; no accepted epoch raises the loss, a rolled-back chunk is undone exactly, and a run
interrupted mid-epoch resumes bit for bit."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from marginrobust import Callback, TrainConfig, Trainer, create_model
from marginrobust.train.schedules import FastLossBasedSchedule, make_schedule


def test_an_attempt_is_judged_against_the_last_accepted_loss_and_extended_first():
    s = make_schedule("loss-based-fast", 0.1)
    assert isinstance(s, FastLossBasedSchedule) and s.chunk_steps == 2
    assert s.guard_ratio == 10.0 and s.guard_aborts and s.extend_max == 3
    assert (s.up, s.down) == (2 ** (1 / 20), 2 ** (1 / 5))
    s.start(math.log(2.0))
    assert not s.extend(math.log(1.5))               # below the bound: to be accepted
    assert s.end_epoch(math.log(1.5))
    assert s.alpha == pytest.approx(0.1 * 2 ** (1 / 20))
    assert s.log_frame == s.log_accepted == math.log(1.5)
    a = s.alpha
    # Above the bound: extended three times, the frame following the measured loss.
    for k, loss in enumerate([1.6, 1.7, 1.55], 1):
        assert s.extend(math.log(loss)) and s.extended == k
        assert s.log_frame == math.log(loss) and s.log_accepted == math.log(1.5)
    assert not s.extend(math.log(1.52))               # no extension left
    assert not s.end_epoch(math.log(1.52))            # rolled back: α/down, frame back
    assert s.alpha == pytest.approx(a / 2 ** (1 / 5)) and s.log_frame == math.log(1.5)
    assert s.extended == 0
    a = s.alpha
    assert s.extend(math.log(1.6)) and not s.extend(math.log(1.5))
    assert s.end_epoch(math.log(1.5)) and s.alpha == a  # equal is accepted; α held
    assert not s.extend(math.inf) and not s.extend(math.nan)
    assert not s.end_epoch(None) and not s.end_epoch(math.nan)
    a = s.alpha
    assert s.guard() and s.guarded == 1
    assert s.alpha == pytest.approx(a / 2 ** (1 / 5))
    restored = FastLossBasedSchedule()
    restored.load_state_dict(s.state_dict())
    assert restored == s
    # The walk is the schedule's own unless asked for: the paper's for the others.
    assert (make_schedule("loss-based", 0.1).up, make_schedule("loss-based", 0.1).down) == (
        2 ** (1 / 5), 2 ** (1 / 10))
    assert make_schedule("loss-based-fast", 0.1, up=1.5).up == 1.5


def test_guard_options_deeper_cut_hold_and_a_bounded_number_of_redos():
    s = FastLossBasedSchedule(alpha=1.0, guard_down_power=2, guard_holds=True, guard_redos=2)
    s.start(0.0)
    assert s.guard() and s.alpha == pytest.approx(s.down ** -2)
    assert not s.guard()  # the second of two: the rest of the attempt runs unchecked
    a = s.alpha
    assert s.end_epoch(-1.0) and s.alpha == a       # the guard fired: α is kept
    assert s.end_epoch(-2.0) and s.alpha == pytest.approx(a * s.up)


# The variant that redoes the exploded chunk instead of ending the attempt.
REDO = {"guard_aborts": False, "chunk_steps": 3, "guard_ratio": 3.0, "extend_max": 0}
# The paper's epoch rule and walk: no extension.
PAPER = {"extend_max": 0, "up": 2 ** (1 / 5), "down": 2 ** (1 / 10)}


def _trainer(digits, epochs, lr=1.0, callbacks=(), schedule=None, **cfg):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    # 300 points in batches of 25: 12 steps, six chunks of 2 (four of 3 with REDO).
    config = TrainConfig(epochs=epochs, batch_size=25, lr=lr, device="cpu",
                         schedule="loss-based-fast", **cfg)
    t = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                config, list(callbacks))
    for k, v in (schedule or {}).items():
        setattr(t.schedule, k, v)
    return t


class Recorder(Callback):
    """Records, the parameters of each accepted epoch, the resume state there, and the
    rollbacks by kind."""

    def __init__(self):
        self.records, self.states, self.rollbacks, self.whys = [], [], 0, []

    def on_epoch_end(self, trainer, record):
        self.records.append(record)
        self.states.append(copy.deepcopy(trainer.state_dict()))

    def on_rollback(self, trainer, epoch, why):
        self.rollbacks += 1
        self.whys.append(why)


def test_no_accepted_epoch_raises_the_summed_loss_and_the_guard_redoes_chunks(digits):
    rec = Recorder()
    t = _trainer(digits, 12, lr=30.0, callbacks=[rec], schedule=REDO)
    t.fit()
    losses = [r["log10_loss"] for r in rec.records]
    assert len(losses) == 13
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    guards = rec.whys.count("chunk exploded")
    epochs = len(rec.whys) - guards
    assert guards > 0 and t.grad_evals > t.step
    # A rolled-back epoch costs its 12 steps, a guard rollback at most two chunks of 3.
    assert t.grad_evals - t.step <= 12 * epochs + 6 * guards
    assert t.step == 12 * 12
    assert sum(r["rollbacks"] for r in rec.records) == rec.rollbacks


def test_extended_attempts_never_raise_the_loss_and_count_every_epoch(digits):
    rec = Recorder()
    t = _trainer(digits, 40, lr=30.0, callbacks=[rec])
    assert t.fit() == "epochs" and t.epoch == 40   # never past the budget
    epochs = [r["epoch"] for r in rec.records]
    losses = [r["log10_loss"] for r in rec.records]
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    # Some attempts ran several epochs before they met the bound: their records jump.
    jumps = [b - a for a, b in zip(epochs, epochs[1:])]
    assert max(jumps) > 1 and max(jumps) <= 1 + t.schedule.extend_max
    assert t.step == 12 * t.epoch
    for r in rec.records:
        assert r["step"] == 12 * r["epoch"]
    # Work thrown away: only whole attempts rolled back (an alarm cuts them short).
    assert t.grad_evals - t.step <= 12 * (1 + t.schedule.extend_max) * rec.rollbacks


def test_without_a_guard_the_chunked_epochs_are_the_papers_bit_for_bit(digits):
    fast = _trainer(digits, 8, lr=30.0, schedule={**PAPER, "guard_ratio": math.inf})
    fast.fit()
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    paper = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                    TrainConfig(epochs=8, batch_size=25, lr=30.0, device="cpu"))
    paper.fit()
    assert paper.grad_evals > paper.step  # epochs were rolled back
    assert (fast.grad_evals, fast.step, fast.schedule.alpha, fast.schedule.log_frame) == (
        paper.grad_evals, paper.step, paper.schedule.alpha, paper.schedule.log_frame)
    for k, v in paper.model.state_dict().items():
        assert torch.equal(v, fast.model.state_dict()[k])


def test_an_attempts_first_batch_is_never_held_against_it_and_redos_are_bounded(digits):
    rec = Recorder()
    # Every batch is "exploded" at ratio 0: the guard fires at the attempt's second batch
    # (the first shows the starting point) until its 3 redos are spent.
    t = _trainer(digits, 2, callbacks=[rec],
                 schedule={**REDO, "guard_ratio": 0.0, "guard_redos": 3})
    assert t.fit() == "epochs"
    attempts = t.epoch + rec.whys.count("loss rose") + rec.whys.count("exploded")
    assert rec.whys.count("chunk exploded") == 3 * attempts
    # Each redo went back to the attempt's start and cost its first chunk's 3 steps.
    assert t.grad_evals == 12 * attempts + 9 * attempts


class FlagOnce:
    """Wraps ``_run_batches``: the first time a chunk opens at step ``at``, its first
    batch reads as not finite (as if the step before had exploded)."""

    def __init__(self, trainer, at):
        self.trainer, self.run, self.at, self.done = trainer, trainer._run_batches, at, False
        self.states = {}  # the parameters where each chunk first began

    def __call__(self, perm, starts, bs):
        self.states.setdefault(starts.start, copy.deepcopy(self.trainer.model.state_dict()))
        steps, rels = self.run(perm, starts, bs)
        if not self.done and starts.start == self.at * bs:
            self.done = True
            rels = rels.clone()
            rels[0] = math.nan
        return steps, rels


class StateAtRollback(Callback):
    def __init__(self):
        self.at = []

    def on_rollback(self, trainer, epoch, why):
        self.at.append((why, copy.deepcopy(trainer.model.state_dict())))


def test_a_chunk_opening_on_an_explosion_blames_the_chunk_before(digits):
    seen = StateAtRollback()
    t = _trainer(digits, 1, callbacks=[seen], schedule={**REDO, "guard_ratio": math.inf})
    flag = t._run_batches = FlagOnce(t, 6)  # chunk 2 opens at step 6: chunk 1 took step 5
    t.fit()
    assert seen.at and seen.at[0][0] == "chunk exploded"
    # Back to chunk 1's start (step 3), not chunk 2's (step 6).
    back, chunk1, chunk2 = seen.at[0][1], flag.states[3 * 25], flag.states[6 * 25]
    assert all(torch.equal(v, chunk1[k]) for k, v in back.items())
    assert any(not torch.equal(v, chunk2[k]) for k, v in back.items())
    rolled = [r for r in seen.at if r[0] == "chunk exploded"]
    assert len(rolled) == 1
    # Chunks 1 and 2 were redone: 6 steps more than the accepted epochs' (plus whole
    # rolled-back epochs, if any).
    epochs = len(seen.at) - 1
    assert t.grad_evals == t.step + 6 + 12 * epochs


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


@pytest.mark.parametrize("variant", [{}, REDO], ids=["aborts", "redoes"])
def test_a_run_interrupted_mid_epoch_resumes_bit_for_bit(digits, variant):
    through = _trainer(digits, 8, lr=30.0, schedule=variant)
    through.fit()
    rec = Recorder()
    killed = _trainer(digits, 8, lr=30.0, callbacks=[rec, KillAtRollback(5)], schedule=variant)
    with pytest.raises(Interrupt):
        killed.fit()
    # Killed after chunks of its next epoch were accepted: the last resume state is older.
    assert 0 < len(rec.records) < 9 and killed.grad_evals > rec.records[-1]["grad_evals"]
    resumed = _trainer(digits, 8, lr=30.0, schedule=variant)
    resumed.load_state_dict(copy.deepcopy(rec.states[-1]))
    resumed.fit()
    assert resumed.schedule == through.schedule
    assert (resumed.epoch, resumed.step, resumed.grad_evals) == (
        through.epoch, through.step, through.grad_evals)
    assert resumed.grad_evals > resumed.step
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


class KillInExtension:
    """Wraps ``schedule.extend``: the ``n``-th extension granted stops the run, inside an
    attempt that has run an epoch past its start."""

    def __init__(self, schedule, n):
        self.extend, self.n, self.seen = schedule.extend, n, 0

    def __call__(self, log_mean_loss):
        granted = self.extend(log_mean_loss)
        self.seen += granted
        if self.seen == self.n:
            raise Interrupt
        return granted


def test_a_run_interrupted_inside_an_extension_resumes_bit_for_bit(digits):
    through = _trainer(digits, 30, lr=30.0)
    through.fit()
    rec = Recorder()
    killed = _trainer(digits, 30, lr=30.0, callbacks=[rec])
    killed.schedule.extend = KillInExtension(killed.schedule, 4)
    with pytest.raises(Interrupt):
        killed.fit()
    assert 0 < len(rec.records) and killed.grad_evals > rec.records[-1]["grad_evals"]
    resumed = _trainer(digits, 30, lr=30.0)
    resumed.load_state_dict(copy.deepcopy(rec.states[-1]))
    resumed.fit()
    assert resumed.schedule == through.schedule
    assert (resumed.epoch, resumed.step, resumed.grad_evals) == (
        through.epoch, through.step, through.grad_evals)
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


def test_a_stop_inside_an_epoch_leaves_the_last_accepted_state(digits):
    rec = Recorder()
    # α_min just below α_0: the first rollback exhausts the schedule mid-epoch.
    t = _trainer(digits, 50, lr=30.0, callbacks=[rec], alpha_min=29.0, schedule=REDO)
    assert t.fit() == "alpha"
    last = rec.states[-1]
    assert t.schedule.state_dict() == last["schedule"]
    assert torch.equal(t.generator.get_state(), last["generator"])
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, last["model"][k])


def test_with_guard_aborts_an_alarm_ends_the_attempt_as_an_exploded_epoch(digits):
    rec = Recorder()
    # Ratio 0: every attempt raises the alarm in its first chunk and is rolled back whole;
    # α_min is passed after the 5th rollback.
    t = _trainer(digits, 3, callbacks=[rec], alpha_min=1.001 * 2 ** (-5 / 5),
                 schedule={"guard_ratio": 0.0, "chunk_steps": 3})
    start = copy.deepcopy(t.model.state_dict())
    assert t.fit() == "alpha"
    assert rec.whys == ["exploded"] * 5 and t.epoch == 0
    assert t.grad_evals == 5 * 3  # each attempt stopped after its first chunk of 3 steps
    for k, v in start.items():
        assert torch.equal(v, t.model.state_dict()[k])
