"""Learning-rate schedules: the paper's loss-based rate with rollback, and a constant rate.

Both drive the same update. Each batch minimises the *relative* loss
mean_b exp(log ℓ_b − F) with plain SGD at rate ``alpha``, where F is the log of a
reference mean loss (the frame). With F = log 𝓛̄_{t−1} this is exactly a step of
η = α/𝓛̄_{t−1} on the mean loss, yet neither η nor the loss is ever formed, so the
gradient stays representable when 𝓛 is 1e-1000 (docs/science.md: the loss-based rate,
the frame trick).

Every schedule follows the :class:`Schedule` protocol; the trainer asks it what it needs
(``uses_loss_frame``, ``exhausted_reason``, ``chunk_steps``...) rather than testing its
class, so a new schedule needs no change to the trainer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import UserError

SCHEDULES = ("loss-based", "loss-based-capped", "loss-based-fast", "constant")


@runtime_checkable
class Schedule(Protocol):
    """What the trainer needs of a learning-rate schedule.

    Attributes:
        name: The schedule's name (one of ``SCHEDULES`` for the built-in ones).
        log_frame: F, the natural log of the reference mean loss the relative loss is
            taken against (0 when the schedule keeps no frame).
        uses_loss_frame: Whether ``log_frame`` follows the loss; only then is a batch
            loss above ``explode_ratio`` times the frame an explosion.
        exhausted_reason: The stop reason once :attr:`exhausted` (``alpha``, ``diverged``).
        chunk_steps: 0 when nothing is checked inside an epoch; else the number of SGD
            steps between two checks of the batches' relative losses against
            ``guard_ratio`` (:class:`FastLossBasedSchedule`).
        guard_ratio: A batch's relative loss above it, inside an epoch, makes the trainer
            redo the chunk at a lower α (:meth:`guard`); inf when ``chunk_steps`` = 0.
        guard_aborts: Whether such a batch ends the epoch attempt instead, as an
            exploded epoch (False when ``chunk_steps`` = 0).
    """

    name: str
    log_frame: float
    uses_loss_frame: ClassVar[bool]
    exhausted_reason: ClassVar[str]
    chunk_steps: int
    guard_ratio: float
    guard_aborts: bool

    def start(self, log_mean_loss: float) -> None:
        """Take the initial model's mean loss (natural log)."""

    @property
    def rate(self) -> float:
        """The SGD rate applied to the relative loss."""

    @property
    def alpha(self) -> float:
        """The α recorded in the metrics."""

    @property
    def log10_lr(self) -> float:
        """log10 of the step η on the mean loss."""

    def end_epoch(self, log_mean_loss: float | None) -> bool:
        """Judge an epoch by its new mean loss (None: it exploded); True = accept."""

    def extend(self, log_mean_loss: float) -> bool:
        """An attempt that did not explode ended an epoch at ``log_mean_loss``; True =
        run it one more epoch before judging it (the frame may move to that loss)."""

    def guard(self) -> bool:
        """A chunk exploded and is redone (only when ``chunk_steps`` > 0): lower α;
        False once the rest of the epoch attempt is to run unchecked."""

    @property
    def exhausted(self) -> bool:
        """The run cannot make progress any more."""

    def state_dict(self) -> dict[str, Any]:
        """Plain values to carry in a resume checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class LossBasedSchedule:
    """η_t = α_t / 𝓛̄_{t−1}; α grows by ``up`` after an accepted epoch, shrinks by ``down``
    after a rejected one (the epoch is redone from the saved parameters).

    Attributes:
        alpha: Current α (paper: α_0 = 0.1).
        log_frame: F = log 𝓛̄_{t−1}, natural log of the last accepted mean training loss.
        up: Factor after acceptance (paper: 2^{1/5}).
        down: Divisor after a rollback (paper: 2^{1/10}).
        alpha_min: Training stops once α falls below it (paper: 1e-50).
    """

    alpha: float = 0.1
    log_frame: float = 0.0
    up: float = 2 ** (1 / 5)
    down: float = 2 ** (1 / 10)
    alpha_min: float = 1e-50
    name: str = "loss-based"
    # Class-level, not fields: they stay out of state_dict and of equality.
    uses_loss_frame: ClassVar[bool] = True
    exhausted_reason: ClassVar[str] = "alpha"
    chunk_steps: ClassVar[int] = 0
    guard_ratio: ClassVar[float] = math.inf
    guard_aborts: ClassVar[bool] = False

    def start(self, log_mean_loss: float) -> None:
        """Set the frame from the mean loss of the initial model."""
        self.log_frame = log_mean_loss

    @property
    def rate(self) -> float:
        """The SGD rate applied to the relative loss."""
        return self.alpha

    @property
    def log10_lr(self) -> float:
        """log10 η = log10 α − log10 𝓛̄_{t−1}: the paper's step on the mean loss."""
        return math.log10(self.alpha) - self.log_frame / math.log(10)

    def end_epoch(self, log_mean_loss: float | None) -> bool:
        """Judge an epoch by the new mean loss (None: it exploded); True = accept."""
        ok = (log_mean_loss is not None and math.isfinite(log_mean_loss)
              and log_mean_loss <= self.log_frame)
        if ok:
            assert log_mean_loss is not None
            self.log_frame = log_mean_loss
            self.alpha *= self.up
        else:
            self.alpha /= self.down
        return ok

    def extend(self, log_mean_loss: float) -> bool:
        """Never: every attempt is judged after one epoch, as in the paper."""
        return False

    def guard(self) -> bool:
        """Not used: this schedule checks nothing inside an epoch (``chunk_steps`` = 0)."""
        raise NotImplementedError(f"{self.name} checks nothing inside an epoch")

    @property
    def exhausted(self) -> bool:
        """α fell below ``alpha_min``: the run cannot make progress."""
        return self.alpha < self.alpha_min

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class CappedLossBasedSchedule(LossBasedSchedule):
    """The paper's loss-based rate, with α capped below its last rollback (an option; the
    paper's :class:`LossBasedSchedule` stays the default).

    In the paper's walk (×``up`` per accept, ÷``down`` per rollback) α jumps by ``up``
    past the largest stable value after every accepted epoch and needs two rollbacks to
    come back, so about two thirds of the gradient evaluations are thrown away. Here a
    rollback also sets a cap at the reduced α; accepted epochs still multiply α by ``up``
    but never beyond the cap, which rises by ``cap_growth`` per accepted epoch. Near the
    stability edge α then probes upward by ``cap_growth`` (default 2^{1/10}) instead of
    ``up``, and one rollback undoes an overshoot. Rejection is judged exactly as in the
    paper; before the first rollback the cap is infinite and the walk is the paper's.
    ``python -m benchmarks --only schedule`` measures both on digits.

    Attributes:
        cap: Current ceiling on α (inf until the first rollback).
        cap_growth: Factor by which the cap rises after each accepted epoch.
    """

    cap: float = math.inf
    cap_growth: float = 2 ** (1 / 10)
    name: str = "loss-based-capped"

    def end_epoch(self, log_mean_loss: float | None) -> bool:
        """Judge an epoch as the paper does; on rollback, lower the cap to the new α."""
        alpha = self.alpha
        ok = super().end_epoch(log_mean_loss)
        if ok:
            self.cap *= self.cap_growth
            self.alpha = min(alpha * self.up, self.cap)
        else:
            self.cap = self.alpha
        return ok


@dataclass
class FastLossBasedSchedule(LossBasedSchedule):
    """The paper's step η = α/𝓛 and its test that no accepted point raises the loss, with
    far less work thrown away (an option; :class:`LossBasedSchedule` stays the default).

    Within an epoch, SGD's loss rises and falls by more than an epoch's progress, so in
    the paper's walk most rollbacks undo epochs that made progress but ended on an
    upswing (docs/science.md: what ``loss-based-fast`` changes). Here an attempt whose
    full-set mean loss ended above the last accepted one is not thrown away at once: it
    is *extended* by another epoch from where it stands (:meth:`extend`), with the frame,
    and so η = α/𝓛, taken from the loss just measured, up to ``extend_max`` times. The
    attempt is accepted at the first epoch end at or below the last accepted loss, and
    counts every epoch it ran; it is rolled back whole (α ← α/``down``) only when it
    exploded or its extensions ran out. A cheap alarm ends an exploding attempt early:
    after every ``chunk_steps`` SGD steps the trainer reads the batches' relative losses
    mean_b exp(log ℓ_b − F), computed by the steps anyway, and a value above
    ``guard_ratio`` (or not finite) makes the attempt an exploded one. α rises by ``up``
    after an attempt accepted at its first epoch and is kept after an extended one; with
    failures now rare, ``up`` and ``down`` (2^{1/20} and 2^{1/5}) hold α where about one
    attempt in five fails.

    Attributes:
        log_accepted: The natural log of the last accepted full-set mean loss: the bound
            an attempt must meet (``log_frame`` follows the loss inside an extension).
        extend_max: Extensions of one attempt at most (0: the paper's epoch rule).
        extended: Extensions of the current attempt so far.
        chunk_steps: SGD steps between alarm checks (an epoch's last chunk may be shorter).
        guard_ratio: A batch's relative loss above it is an alarm (10 measured best on
            the digits MLP: in a run of the paper's schedule 1 of 259 accepted epochs had
            such a batch, 293 of 592 rolled-back ones did).
        guard_aborts: An alarm ends the attempt at once, as an exploded epoch (rolled
            back whole, α ← α/``down``, a new data order), instead of redoing the chunk.
        guard_down_power: A chunk redo divides α by ``down`` to this power.
        guard_holds: After an accepted epoch with chunk redos, keep α (no ×``up``).
        guard_redos: At most this many chunk redos per epoch attempt; then the attempt
            runs to its end unguarded and the epoch rule decides (a batch whose relative
            loss is high at every α must not drive α to ``alpha_min``).
        guarded: Chunk redos in the current epoch attempt.
    """

    up: float = 2 ** (1 / 20)
    down: float = 2 ** (1 / 5)
    log_accepted: float = 0.0
    extend_max: int = 3
    extended: int = 0
    chunk_steps: int = 2  # type: ignore[misc]
    guard_ratio: float = 10.0  # type: ignore[misc]
    guard_aborts: bool = True  # type: ignore[misc]
    guard_down_power: int = 1
    guard_holds: bool = False
    guard_redos: int = 8
    guarded: int = 0
    name: str = "loss-based-fast"

    def start(self, log_mean_loss: float) -> None:
        """Set the frame and the bound from the mean loss of the initial model."""
        self.log_frame = self.log_accepted = log_mean_loss

    def extend(self, log_mean_loss: float) -> bool:
        """An attempt ended an epoch at ``log_mean_loss`` (finite: it did not explode);
        True = run it one more epoch from there, with the frame at that loss. False when
        the loss meets the bound (the attempt is to be accepted) or no extension is left
        (it is to be rolled back)."""
        if not (math.isfinite(log_mean_loss) and log_mean_loss > self.log_accepted
                and self.extended < self.extend_max):
            return False
        self.extended += 1
        self.log_frame = log_mean_loss
        return True

    def end_epoch(self, log_mean_loss: float | None) -> bool:
        """Judge an attempt by its last epoch's mean loss (None: it exploded) against the
        last accepted one; True = accept. α rises by ``up`` only after an attempt
        accepted at its first epoch (and, with ``guard_holds``, no chunk redo)."""
        alpha, holds = self.alpha, self.extended or (self.guarded and self.guard_holds)
        self.log_frame = self.log_accepted  # the paper's rule, against the bound
        ok = super().end_epoch(log_mean_loss)
        self.log_accepted = self.log_frame
        if ok and holds:
            self.alpha = alpha
        self.extended = self.guarded = 0
        return ok

    def guard(self) -> bool:
        """A chunk exploded and is redone: α ← α/``down``^``guard_down_power``; False
        once ``guard_redos`` rollbacks were spent in this epoch attempt."""
        self.alpha /= self.down ** self.guard_down_power
        self.guarded += 1
        return self.guarded < self.guard_redos


@dataclass
class ConstantSchedule:
    """A fixed step η on the mean loss; no frame, no rollback (paper's baseline).

    An epoch that produces a non-finite loss is still rolled back, and the run stops.
    """

    lr: float = 0.01
    log_frame: float = 0.0
    name: str = "constant"
    diverged: bool = False
    uses_loss_frame: ClassVar[bool] = False
    exhausted_reason: ClassVar[str] = "diverged"
    chunk_steps: ClassVar[int] = 0
    guard_ratio: ClassVar[float] = math.inf
    guard_aborts: ClassVar[bool] = False

    def start(self, log_mean_loss: float) -> None:
        """Nothing to set: the frame stays at 0, so the relative loss is the loss."""

    @property
    def rate(self) -> float:
        return self.lr

    @property
    def alpha(self) -> float:
        return self.lr

    @property
    def log10_lr(self) -> float:
        return math.log10(self.lr)

    def end_epoch(self, log_mean_loss: float | None) -> bool:
        ok = log_mean_loss is not None and math.isfinite(log_mean_loss)
        self.diverged = not ok
        return ok

    def extend(self, log_mean_loss: float) -> bool:
        """Never: every epoch is judged on its own."""
        return False

    def guard(self) -> bool:
        """Not used: this schedule checks nothing inside an epoch (``chunk_steps`` = 0)."""
        raise NotImplementedError("constant checks nothing inside an epoch")

    @property
    def exhausted(self) -> bool:
        return self.diverged

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


# The α walk (factor after an accepted attempt, divisor after a rollback) by schedule.
PAPER_WALK = (2 ** (1 / 5), 2 ** (1 / 10))
DEFAULT_WALK = {"loss-based": PAPER_WALK, "loss-based-capped": PAPER_WALK,
                "loss-based-fast": (2 ** (1 / 20), 2 ** (1 / 5)), "constant": PAPER_WALK}


def make_schedule(name: str, lr: float, up: float | None = None, down: float | None = None,
                  alpha_min: float = 1e-50) -> Schedule:
    """Build a schedule by name; ``lr`` is α_0 for ``loss-based`` and η for ``constant``.

    ``up``, ``down`` and ``alpha_min`` only concern the loss-based schedules; None takes
    the schedule's own walk (``DEFAULT_WALK``).
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"the learning rate must be a positive number, not {lr}")
    walk = DEFAULT_WALK.get(name, PAPER_WALK)
    kw = {"alpha": lr, "up": walk[0] if up is None else up,
          "down": walk[1] if down is None else down, "alpha_min": alpha_min}
    if name == "loss-based":
        return LossBasedSchedule(**kw)
    if name == "loss-based-capped":
        return CappedLossBasedSchedule(**kw)
    if name == "loss-based-fast":
        return FastLossBasedSchedule(**kw)
    if name == "constant":
        return ConstantSchedule(lr=lr)
    raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, not {name!r}")
