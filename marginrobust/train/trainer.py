"""The training loop of the paper: plain SGD on the cross-entropy, measured every epoch.

No file I/O here: checkpoints, metric logs and progress bars are callbacks. The module is
longer than the others (over 500 lines) because the epoch loop, its chunked variant for the
in-epoch alarm and the extended attempts of ``loss-based-fast`` and the exact reduction
across ranks share one state, which splitting would have to pass around.

Started by a launcher (``torchrun``), every rank runs the same loop on a replica of the
model (data parallelism): each global batch of the single-process order is split into
contiguous shares, one per rank; each rank back-propagates its share's part of the
batch's mean loss, and the gradients are summed over the ranks (one float64 all-reduce,
rounded once: :func:`~marginrobust.distributed.all_sum_tensors_`) before the same SGD
step on every rank. The per-epoch measurements are taken on each rank's share of the
sets and reduced exactly, so every rank takes the same accept/rollback decision; the
parameter norms of every epoch are compared across ranks, so replicas that drifted apart
stop the run rather than go unnoticed.

The data-parallel epoch and what the ranks must agree on (shares, gradient sum,
explosion, wall time, replica check) stay beside the single-process loop they have to
match step for step; the run's options are in :mod:`marginrobust.train.config`.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..errors import UserError
from ..io import resolve_device
from ..margins import LN10, margin_stats
from ..models import homogeneity_order, weight_layers
from ..precision import deterministic_algorithms, measurement_precision, training_precision
from .callbacks import Callback, state_keys
from .config import TrainConfig
from .fused_loss import framed_loss, framed_loss_and_log_losses
from .schedules import Schedule, make_schedule

STOP_REASONS = ("epochs", "time", "target", "alpha", "diverged")


class NonHomogeneousWarning(UserWarning):
    """The model is not homogeneous: its normalized margins use a nominal order."""


class Trainer:
    """Gradient descent with the paper's loss-based rate, margin statistics every epoch.

    Args:
        model: A classifier returning logits for inputs in [0, 1].
        x_train, y_train, x_test, y_test: The data (float inputs, int64 labels).
        config: The run's :class:`TrainConfig`.
        callbacks: Hooks receiving the epoch records (checkpoints, logs, progress).

    Under a launcher the trainer joins the job's process group
    (:func:`marginrobust.distributed.init`; a CUDA ``device`` without an index means
    ``cuda:LOCAL_RANK``) and trains data-parallel. Every rank must be given the same
    model, data, config and resume state; the callbacks run on every rank (the file
    writers of :mod:`.run` write on rank 0 only).
    """

    def __init__(self, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor, y_test: torch.Tensor, config: TrainConfig,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.config = config.validate()
        # Under a launcher: this rank's device, and the job's process group.
        self.device = distributed.rank_device(resolve_device(config.device))
        distributed.init(self.device)
        self.world = distributed.world_size() if distributed.is_initialized() else 1
        self.rank = distributed.rank() if self.world > 1 else 0
        self.model = model.to(self.device)
        self.x_train, self.y_train = x_train.to(self.device), y_train.to(self.device)
        self.x_test, self.y_test = x_test.to(self.device), y_test.to(self.device)
        assert config.lr is not None
        self.schedule: Schedule = make_schedule(config.schedule, config.lr, config.lr_up,
                                                config.lr_down, config.alpha_min)
        self.callbacks = list(callbacks)
        # The data order comes from its own generator, so resuming restores it exactly.
        self.generator = torch.Generator().manual_seed(config.seed)
        # The homogeneity order L, measured once (a few forward passes): None when the
        # model is not homogeneous, and then the margins use ``margin_order`` nominally.
        with measurement_precision():
            self.order = homogeneity_order(self.model, self.x_train[:64])
        self.margin_order = self.order if self.order is not None else len(
            weight_layers(self.model))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.schedule.rate,
                                         momentum=0.0, weight_decay=0.0)
        self.epoch = 0
        self.step = 0
        self.grad_evals = 0
        self.wall_s = 0.0
        self.record: dict[str, Any] | None = None
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ measurement
    def measure(self, rollbacks: int = 0, train: dict[str, Any] | None = None) -> dict[str, Any]:
        """The epoch record of the current parameters (fields: docs/science.md, margins).

        ``homogeneous`` says whether ``homogeneity_order`` was measured; when it is
        false, the normalized and smoothed margins divide by ρ^``margin_order`` with a
        nominal order (the number of weight layers) and mean little.
        """
        with measurement_precision():
            if train is None:
                train = self._train_stats()
            test = self._stats(self.x_test, self.y_test)
        log10_lr = self.schedule.log10_lr
        record = {
            "epoch": self.epoch, "step": self.step, "grad_evals": self.grad_evals,
            "wall_s": self.wall_s,
            # η itself leaves the float range once the loss does; log10_lr always holds it.
            "lr": 10.0**log10_lr if abs(log10_lr) < 300 else None,
            "log10_lr": log10_lr, "alpha": self.schedule.alpha, "rollbacks": rollbacks,
            "log10_loss": train["log10_loss"], "log10_mean_loss": train["log10_mean_loss"],
            "train_acc": train["accuracy"], "test_acc": test["accuracy"],
            "test_log10_mean_loss": test["log10_mean_loss"],
        }
        for key in ("rho", "layer_norms", "homogeneity_order", "homogeneous", "margin_order",
                    "q_min", "q_max", "normalized_margin", "product_margin",
                    "smoothed_margin", "near_support"):
            record[key] = train[key]
        if self.world > 1:
            self._check_replicas(record)
        return record

    def _check_replicas(self, record: dict[str, Any]) -> None:
        """Every rank still holds rank 0's parameters: their norms agree bit for bit.

        Each rank computes the norms of its own replica; every step applied the same
        summed gradient on every rank, so a difference means that assumption broke.
        """
        seen = distributed.all_gather_object([record["rho"], *record["layer_norms"]])
        differ = [r for r, norms in enumerate(seen) if norms != seen[0]]
        if differ:
            raise RuntimeError(f"the model replicas diverged by epoch {record['epoch']}: "
                               f"rank {differ[0]}'s parameter norms differ from rank 0's")

    def _train_stats(self) -> dict[str, Any]:
        with measurement_precision():
            return self._stats(self.x_train, self.y_train)

    def _stats(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Margin statistics of the whole set (x, y); each rank measures its own share."""
        self.model.eval()
        bs = self.config.eval_batch_size
        if self.world == 1:
            return margin_stats(self.model, x, y, self.order, bs)
        lo, hi = distributed.share_bounds(len(x), self.world, self.rank)
        return margin_stats(self.model, x[lo:hi], y[lo:hi], self.order, bs, across_ranks=True)

    # ------------------------------------------------------------------ one epoch
    def _epoch_order(self) -> tuple[torch.Tensor, int]:
        """The epoch's data order and batch size. The same on every rank: the generator
        is replicated."""
        n = len(self.x_train)
        bs = self.config.batch_size or n
        return torch.randperm(n, generator=self.generator).to(self.device), bs

    def _step_plan(self) -> float:
        """The loss frame F of the next steps; sets the optimiser's rate (both follow the
        schedule, which may change them within an epoch)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.rate
        return self.schedule.log_frame

    def _explode_limit(self) -> float:
        """A batch's relative loss above this (or not finite) makes the epoch explode.
        The ratio test needs a loss frame: without one the relative loss is the loss."""
        return self.config.explode_ratio if self.schedule.uses_loss_frame else math.inf

    def _run_epoch(self) -> tuple[int, bool]:
        """One pass over the data; returns (steps taken, whether a batch exploded)."""
        perm, bs = self._epoch_order()
        steps, rels = self._run_batches(perm, range(0, len(perm), bs), bs)
        # Read once per epoch: one device sync, none per batch.
        limit = self._explode_limit()
        return steps, bool((~torch.isfinite(rels) | (rels > limit)).any())

    def _run_batches(self, perm: torch.Tensor, starts: range, bs: int
                     ) -> tuple[int, torch.Tensor]:
        """One SGD step on each batch ``perm[i:i + bs]``, i in ``starts``, at the
        schedule's current rate and frame; returns (steps, the batches' relative losses
        mean_b exp(log ℓ_b − F), each taken before its step, left on the device)."""
        if self.world > 1:
            return self._run_batches_shared(perm, starts, bs)
        self.model.train()
        frame = self._step_plan()
        rels = []
        for i in starts:
            idx = perm[i:i + bs]
            logits = self.model(self.x_train[idx])
            # Relative loss mean exp(log ℓ − F): its gradient times α is η ∇(mean loss).
            # One fused autograd node (float64 inside) instead of a dozen small kernels.
            rel = framed_loss(logits, self.y_train[idx], frame)
            self.optimizer.zero_grad(set_to_none=True)
            rel.backward()
            self.optimizer.step()
            rels.append(rel.detach())
        return len(rels), torch.stack(rels)

    def _run_batches_shared(self, perm: torch.Tensor, starts: range, bs: int
                            ) -> tuple[int, torch.Tensor]:
        """:meth:`_run_batches` with every global batch split over the ranks.

        Rank r takes the r-th contiguous share of each batch of the single-process order
        (:func:`~marginrobust.distributed.share_bounds`), and the ranks' gradients are
        summed before every step, so each step is that of the whole batch's mean loss.
        """
        self.model.train()
        frame = self._step_plan()
        params = [p for p in self.model.parameters() if p.requires_grad]
        parts = []
        for i in starts:
            idx = perm[i:i + bs]
            lo, hi = distributed.share_bounds(len(idx), self.world, self.rank)
            self.optimizer.zero_grad(set_to_none=True)
            part = self._share_loss(idx[lo:hi], len(idx), frame)
            if part.requires_grad:  # an empty share has no graph: its gradient is 0
                part.backward()
            distributed.all_sum_tensors_(_grads(params))
            self.optimizer.step()
            parts.append(part.detach())
        # The batches' relative losses summed over the ranks: the same bits on every rank,
        # so every rank sees the same explosion (the measurement below needs them all).
        rel = distributed.all_sum(torch.stack(parts))
        # Buffers (running statistics) follow rank 0, so the replicas stay one model.
        distributed.broadcast_tensors_(list(self.model.buffers()))
        return len(parts), rel

    def _share_loss(self, idx: torch.Tensor, batch: int, frame: float) -> torch.Tensor:
        """This rank's part Σ_{b ∈ share} exp(log ℓ_b − F) / B of the relative loss of a
        global batch of B points (0 for an empty share): the parts sum to the batch mean.

        Differentiated through the log-losses, each point's gradient is w_b·(1/B)
        computed as in one process (there w_b·(g/B) with g = 1), so given the same logits
        the logits' gradients have one process's bits; only their sum over the batch (the
        weight gradients) is formed in another order, part on each rank.
        """
        if len(idx) == 0:
            return torch.zeros((), dtype=torch.float64, device=self.device)
        logits = self.model(self.x_train[idx])
        _, log_l = framed_loss_and_log_losses(logits, self.y_train[idx], frame)
        return torch.exp(log_l - frame).sum() / batch

    # ------------------------------------------------------------------ loop
    def fit(self) -> str:
        """Train until a stop condition; returns the reason (one of ``STOP_REASONS``).

        Warns once (:class:`NonHomogeneousWarning`) when the model is not homogeneous.
        """
        state_keys(self.callbacks)  # refuse colliding resume keys before any work
        # The flags hold for this call only: the caller's torch state is restored after.
        with deterministic_algorithms(self.config.deterministic), \
                training_precision(self.config.precision):
            return self._fit()

    def _fit(self) -> str:
        self._join_replicas()
        if self.order is None and self.rank == 0:
            warnings.warn(self.nominal_order_note(), NonHomogeneousWarning, stacklevel=2)
        for cb in self.callbacks:
            cb.on_train_start(self)
        if self.record is None:
            start = time.perf_counter()
            train = self._train_stats()
            self.schedule.start(train["log10_mean_loss"] * LN10)
            self.record = self.measure(train=train)
            self._add_wall(start)
            self.record["wall_s"] = self.wall_s
            self._emit(self.record)
        reason = self._check_stop()
        while reason is None:
            reason = self._advance_one_epoch()
            if reason is None:
                reason = self._check_stop()
        self.stop_reason = reason
        for cb in self.callbacks:
            cb.on_train_end(self, reason)
        return reason

    def _advance_one_epoch(self) -> str | None:
        """Attempt epochs until one is accepted; a stop reason if none can be."""
        if self.schedule.chunk_steps:
            return self._advance_guarded()
        rollbacks = 0
        while True:
            start = time.perf_counter()
            saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            steps, exploded = self._run_epoch()
            self.grad_evals += steps
            train = None if exploded else self._train_stats()
            if self._judge(start, train, rollbacks, saved):
                return None
            rollbacks += 1
            reason = self._stop_after_rollback()
            if reason is not None:
                return reason

    def _advance_guarded(self) -> str | None:
        """Attempt epochs until one is accepted, each run in guarded chunks
        (:meth:`_run_guarded`), extended by further epochs while the schedule asks
        (:meth:`Schedule.extend`, never past the ``epochs`` budget) and judged by the
        schedule's rule; a stop reason if none can be. A stop inside an attempt leaves the
        run as the attempt found it."""
        rollbacks = 0
        while True:
            attempt = (self._snapshot(), self.schedule.state_dict(),
                       self.generator.get_state())
            epochs = 0
            while True:
                # A chunk redo goes back at most to the start of the epoch it is in.
                here = (attempt[0] if epochs == 0 or self.schedule.guard_aborts
                        else self._snapshot())
                reason, exploded, redone = self._run_guarded(here)
                rollbacks += redone
                if reason is not None:
                    self._restore_attempt(*attempt)
                    return reason
                epochs += 1
                start = time.perf_counter()
                train = None if exploded else self._train_stats()
                if (train is None or self.epoch + epochs >= self.config.epochs
                        or not self.schedule.extend(train["log10_mean_loss"] * LN10)):
                    break
                self._add_wall(start)
            if self._judge(start, train, rollbacks, attempt[0], epochs):
                return None
            rollbacks += 1
            reason = self._stop_after_rollback()
            if reason is not None:
                return reason

    def _judge(self, start: float, train: dict[str, Any] | None, rollbacks: int,
               saved: dict[str, torch.Tensor], epochs: int = 1) -> bool:
        """The schedule's rule on an attempt of ``epochs`` whole epochs whose last epoch
        measured ``train`` (None: it exploded): accepted, the epoch's record is measured
        and emitted (True); rejected, the parameters go back to ``saved`` and the
        callbacks hear of the rollback (False)."""
        log_mean = None if train is None else train["log10_mean_loss"] * LN10
        if self.schedule.end_epoch(log_mean):
            self.epoch += epochs
            self.step += epochs * self._epoch_steps()
            self.record = self.measure(rollbacks, train)
            self._add_wall(start)
            self.record["wall_s"] = self.wall_s
            self._emit(self.record)
            return True
        self.model.load_state_dict(saved)
        self._add_wall(start)
        why = "exploded" if train is None else "loss rose"
        for cb in self.callbacks:
            cb.on_rollback(self, self.epoch + 1, why)
        return False

    def _stop_after_rollback(self) -> str | None:
        """Why training cannot go on after a rollback (α exhausted, out of time), if so."""
        if self.schedule.exhausted:
            return self._exhausted_reason()
        if self._out_of_time():
            return "time"
        return None

    def _epoch_steps(self) -> int:
        """SGD steps of one epoch."""
        n = len(self.x_train)
        bs = self.config.batch_size or n
        return -(-n // bs)

    def _run_guarded(self, saved: dict[str, torch.Tensor]) -> tuple[str | None, bool, int]:
        """One epoch attempt in chunks of ``schedule.chunk_steps`` steps, from the state
        ``saved``; returns (a stop reason or None, whether a batch exploded as the paper
        counts it, guard rollbacks).

        After each chunk its batches' relative losses are read (one device sync). The
        loss of batch i is taken before step i, so it shows what steps 0..i−1 did; batch
        0 shows the attempt's starting point, which no α of this attempt can change, and
        is never held against it. A batch i ≥ 1 above ``schedule.guard_ratio`` (or not
        finite) is an alarm. With ``schedule.guard_aborts`` the attempt ends there, as an
        exploded one. Otherwise the first such batch blames the chunk that took step
        i − 1: the run goes back to that chunk's start (this chunk's, or the one before
        when i opens this chunk), the schedule lowers α (:meth:`Schedule.guard`) and the
        chunks are redone on the same batches. Every step taken counts as a gradient
        evaluation.
        """
        perm, bs = self._epoch_order()
        starts = range(0, len(perm), bs)
        k = self.schedule.chunk_steps
        chunks = [starts[j:j + k] for j in range(0, len(starts), k)]
        snapshots = {0: saved}  # the starts of this chunk and the one before
        limit, guarding, exploded, redone = self._explode_limit(), True, False, 0
        c, start = 0, time.perf_counter()
        # Ending the attempt at an alarm goes back to ``saved``: no chunk copies needed.
        redo = not self.schedule.guard_aborts
        while c < len(chunks):
            if redo and c not in snapshots:
                snapshots[c] = self._snapshot()
            taken, rels = self._run_batches(perm, chunks[c], bs)
            self.grad_evals += taken
            values = rels.tolist()  # the chunk's one sync
            bad = [j for j, v in enumerate(values)
                   if c * k + j > 0 and not v <= self.schedule.guard_ratio]
            if not (guarding and bad):
                exploded |= any(not v <= limit for v in values)
                snapshots.pop(c - 1, None)
                c += 1
                continue
            if self.schedule.guard_aborts:  # the attempt fails here, as an exploded one
                self._add_wall(start)
                return None, True, redone
            c = (c * k + bad[0] - 1) // k
            self.model.load_state_dict(snapshots[c])
            for later in [j for j in snapshots if j > c]:
                del snapshots[later]
            guarding = self.schedule.guard()
            redone += 1
            for cb in self.callbacks:
                cb.on_rollback(self, self.epoch + 1, "chunk exploded")
            # The time so far, taken as every rank took it: the same decision on all.
            self._add_wall(start)
            start = time.perf_counter()
            if self.schedule.exhausted:
                return self._exhausted_reason(), exploded, redone
            if self._out_of_time():
                return "time", exploded, redone
        self._add_wall(start)
        return None, exploded, redone

    def _snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the parameters and buffers, to roll back to."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore_attempt(self, model: dict[str, torch.Tensor], schedule: dict[str, Any],
                         generator: torch.Tensor) -> None:
        """Undo a partly done epoch attempt: the state it started from (a final
        checkpoint then holds a state from which the run continues as it would have)."""
        self.model.load_state_dict(model)
        self.schedule.load_state_dict(schedule)
        self.generator.set_state(generator)

    def _exhausted_reason(self) -> str:
        return self.schedule.exhausted_reason

    def _add_wall(self, start: float) -> None:
        """Add the wall time since ``start``; under a group the slowest rank's, so that
        every rank takes the same time-limit decision and records the same time."""
        elapsed = time.perf_counter() - start
        if self.world > 1:
            elapsed = float(distributed.all_max(elapsed))
        self.wall_s += elapsed

    def _join_replicas(self) -> None:
        """Under a group: every rank starts from rank 0's parameters and buffers, and
        holds the same run state (schedule, data order, counters, config, data).

        Raises:
            UserError: a rank holds another run state than rank 0 (on every rank).
        """
        if self.world == 1:
            return
        distributed.broadcast_tensors_([t.detach() for t in self.model.state_dict().values()])
        states = distributed.all_gather_object(self._fingerprint())
        for r, state in enumerate(states):
            differs = sorted(k for k in state if state[k] != states[0][k])
            if differs:
                raise UserError(f"rank {r} does not start from rank 0's run: its "
                                f"{', '.join(differs)} differ; every rank must be given "
                                "the same data, config and resume state")

    def _fingerprint(self) -> dict[str, Any]:
        """What every rank's copy of the run must agree on (cheap to compare)."""
        config = {k: v for k, v in asdict(self.config).items() if k != "device"}
        # Shapes and labels, not a float sum of the inputs: the bits of a sum may differ
        # between two kinds of GPU; the labels of another subset or order would not agree.
        shapes = [tuple(t.shape) for t in (self.x_train, self.x_test)]
        labels = hashlib.sha256(self.y_train.cpu().numpy().tobytes()
                                + self.y_test.cpu().numpy().tobytes()).hexdigest()
        generator = hashlib.sha256(self.generator.get_state().numpy().tobytes()).hexdigest()
        return {"config": config, "schedule": self.schedule.state_dict(),
                "data order": generator, "data": (shapes, labels),
                "counters": (self.epoch, self.step, self.grad_evals),
                "record": self.record}

    def nominal_order_note(self) -> str:
        """One sentence on the nominal order of a non-homogeneous model ("" if homogeneous)."""
        if self.order is not None:
            return ""
        return (f"the model is not homogeneous, so its normalized and smoothed margins "
                f"divide by rho^{self.margin_order} with the nominal order "
                f"L={self.margin_order} (its number of weight layers) and mean little")

    def _emit(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def _out_of_time(self) -> bool:
        return self.config.max_minutes is not None and self.wall_s >= 60 * self.config.max_minutes

    def _check_stop(self) -> str | None:
        assert self.record is not None
        target = self.config.target_log10_loss
        if target is not None and self.record["log10_loss"] <= target:
            return "target"
        if self.schedule.exhausted:
            return self._exhausted_reason()
        if self.epoch >= self.config.epochs:
            return "epochs"
        if self._out_of_time():
            return "time"
        return None

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (plain types and tensors)."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch, "step": self.step, "grad_evals": self.grad_evals,
            "wall_s": self.wall_s, "record": self.record,
            "config": asdict(self.config),
            "callbacks": {key: cb.state_dict()
                          for key, cb in zip(state_keys(self.callbacks), self.callbacks)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model architecture must match)."""
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.grad_evals, self.wall_s = state["grad_evals"], state["wall_s"]
        self.record = state["record"]
        for key, cb in zip(state_keys(self.callbacks), self.callbacks):
            cb.load_state_dict(state["callbacks"].get(key, {}))


def _grads(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The gradient of every parameter, zeros where backward left none (an empty share):
    every rank must take part in the sum with the same tensors."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params if p.grad is not None]
