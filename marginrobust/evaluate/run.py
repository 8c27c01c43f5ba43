"""The runner: every checkpoint of a run directory through the engine, with a results
store, resume and progress, in one process or sharded over the ranks of a job.

The work is a fixed list of units, (checkpoint, split) in checkpoint order, of which
only the unfinished ones are done. Under a launcher (``torchrun``, see
:mod:`marginrobust.distributed`) they are dealt round-robin over the ranks
(:func:`shard_units`); each rank evaluates its units exactly as a single process does
(same points, seeds and stored results to resume from) and writes them to its own shard
(:mod:`.shards`); rank 0 merges the shards into ``RUN_DIR/eval/`` once every rank is
done. Shards a killed evaluation left behind are merged first by the next one, in one
process or several, so either resumes the other.

It sits above training in the data flow (checkpoints → evaluations), so it reads the
checkpoints with :mod:`marginrobust.train.checkpoints`, imported where they are read;
the engine (:mod:`.engine`) reads no file at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from .. import distributed, runlock, stopping
from ..errors import UserError
from ..io import SPLITS, parse_splits
from .engine import Evaluator, PriorResults, UnitRequest
from .points import PointSet, select_points
from .shards import list_shards, merge_shards, open_shard
from .store import ArrayKey, ResultsStore
from .threats import ThreatModel

# The training metrics of a checkpoint that its records carry.
METRIC_KEYS = ("log10_loss", "train_acc", "test_acc", "normalized_margin", "product_margin",
               "smoothed_margin")


class WorkUnit(NamedTuple):
    """One checkpoint (its position in the run's list of files) on one split's points."""

    checkpoint: int
    split: str


def _progress_bar(total: int) -> Any:
    """A progress bar over ``total`` attack runs (anything with update/set_description/close)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="attack", dynamic_ncols=True)


def checkpoint_files(path: str | Path, checkpoints: Iterable[Path] | None = None,
                     ) -> tuple[list[Path], Path]:
    """The checkpoint files to evaluate and the run directory their results go to.

    Args:
        path: A run directory or one checkpoint file.
        checkpoints: With a run directory, these of its checkpoints (default: all).

    Raises:
        UserError: Nothing at ``path``, or a run directory without checkpoints.
    """
    from ..train.checkpoints import list_checkpoints

    path = Path(path)
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return [path], run_dir
    if path.is_dir():
        files = list(checkpoints) if checkpoints is not None else list_checkpoints(path)
        if not files:
            raise UserError(f"{path} holds no checkpoints (expected checkpoints/epoch-*.pt)")
        return files, path
    raise UserError(f"no run directory or checkpoint at {path}")


def shard_units(units: Sequence[WorkUnit], world_size: int, rank: int,
                chained: bool = False) -> list[WorkUnit]:
    """The units rank ``rank`` of ``world_size`` evaluates, in the order of ``units``.

    Units are dealt round-robin in the order given. With ``chained`` (warm starts: a
    checkpoint starts from the previous one's adversarial points of the same split) a
    split's units form one chain that a single rank evaluates in checkpoint order, so
    chains, not units, are dealt: at most one rank per split has work.

    Args:
        units: The units still to do, in the fixed order (checkpoint, then split).
        world_size: Number of ranks.
        rank: This rank.
        chained: Deal whole splits instead of single units.
    """
    if chained:
        splits = list(dict.fromkeys(u.split for u in units))
        items = [[u for u in units if u.split == s] for s in splits]
    else:
        items = [[u] for u in units]
    mine = {u for i, item in enumerate(items) if i % world_size == rank for u in item}
    return [u for u in units if u in mine]


@dataclass(frozen=True)
class _Plan:
    """What rank 0 decides for every rank: the checkpoint files and the units to do."""

    files: list[str]
    units: list[WorkUnit]


def evaluate_run(evaluator: Evaluator, path: str | Path, splits: Sequence[str] = SPLITS,
                 progress: bool = False, checkpoints: Iterable[Path] | None = None,
                 ) -> ResultsStore:
    """Evaluate every checkpoint of a run directory (or one checkpoint file).

    Results go to ``RUN_DIR/eval/`` (:class:`~.store.ResultsStore`). The points are
    chosen once per (n, seed) and kept in ``points.json``. A rerun with the same settings
    skips every finished figure and reuses the stored per-point arrays; other settings
    (n, seed, attack options) are evaluated and stored beside the earlier figures.

    Started by a launcher (``torchrun --nproc_per_node N -m marginrobust eval``), every
    rank calls this: the unfinished (checkpoint, split) units are shared out
    (:func:`shard_units`), each rank computing on its own device
    (:func:`marginrobust.distributed.rank_device`) and writing its own shard, and rank 0
    merges the shards. The records equal those of one process apart from their
    ``seconds``. Shards left by a killed evaluation are merged before anything else.

    Args:
        evaluator: The configured engine.
        path: A run directory or one of its checkpoint files.
        splits: Which points to evaluate: ``test``, ``train`` or both.
        progress: Show a bar over the attack runs still to do (under a launcher: rank 0's
            share, on rank 0 only).
        checkpoints: With a run directory, only these checkpoint files.

    Returns:
        The run's results store, with every record (on every rank: each returns once
        rank 0 has merged the shards).
    """
    files, run_dir = checkpoint_files(path, checkpoints)
    splits = parse_splits(splits)
    device = evaluator.device
    # The evaluator's device means "this rank's GPU" under a launcher (cuda → cuda:K).
    evaluator.device = distributed.rank_device(device)
    try:
        # One writer per run: a second evaluation (or a training) of it is refused.
        with runlock.hold(run_dir):
            joined = distributed.init(evaluator.device)
            return _evaluate(evaluator, files, run_dir, splits, progress, joined)
    finally:
        evaluator.device = device


def _evaluate(evaluator: Evaluator, files: list[Path], run_dir: Path,
              splits: tuple[str, ...], progress: bool, joined: bool) -> ResultsStore:
    """:func:`evaluate_run` once the process group (if any) is joined."""
    main = distributed.is_main_process()
    order = [(f.stem, s) for f in files for s in splits]
    plan, setup = None, None
    if main:
        # Before anything reads the store: what a killed evaluation left is results too.
        if list_shards(run_dir):
            merge_shards(run_dir, order)
        setup = _Setup.load(evaluator, files, run_dir, splits, save_points=True)
        plan = _Plan([str(f) for f in files], setup.pending(evaluator, files, splits))
    # Also the barrier after points.json is written: the other ranks read it below. They
    # load the dataset only now, so a dataset is downloaded once, by rank 0.
    plan = distributed.broadcast_object(plan)
    files = [Path(f) for f in plan.files]
    if setup is None:
        setup = _Setup.load(evaluator, files, run_dir, splits, save_points=False)
    world, rank = distributed.world_size(), distributed.rank()
    mine = shard_units(plan.units, world, rank, chained=evaluator.warm_start)
    sink = open_shard(run_dir, rank) if joined else setup.store
    bar = None
    if progress and main:
        # The bar counts the attack runs still to do, so a resumed evaluation ends full.
        done = frozenset(setup.store.done())
        bar = _progress_bar(sum(len(evaluator.pending_attacks(
            setup.request(files[u.checkpoint].stem, u.split), done)) for u in mine))
    label = f"rank {rank} of {world}: " if joined and world > 1 else ""
    try:
        _run_units(evaluator, setup, sink, files, mine, run_dir.name, bar, label)
    finally:
        if bar is not None:
            bar.close()
    if not joined:
        return setup.store
    distributed.barrier()
    if main:
        merge_shards(run_dir, order)
    distributed.barrier()
    return ResultsStore(run_dir)


@dataclass
class _Setup:
    """What every unit of a run needs: the results store, threat models and points."""

    store: ResultsStore
    threats: list[ThreatModel]
    points: dict[str, PointSet]

    @classmethod
    def load(cls, evaluator: Evaluator, files: list[Path], run_dir: Path,
             splits: tuple[str, ...], save_points: bool) -> _Setup:
        """The run's data and points (chosen once per (n, seed), then read back)."""
        from ..data import load_dataset
        from ..train.checkpoints import read_checkpoint

        first = read_checkpoint(files[0])
        run = first.get("run", {})
        spec = first["data"]
        data = load_dataset(spec["name"], run.get("data_dir"), spec.get("train_subset"),
                            spec.get("test_subset"), spec.get("seed", 0))
        store = ResultsStore(run_dir)
        n, seed = evaluator.n, evaluator.seed
        points = select_points(data, n, seed, splits, store.load_points(n, seed))
        if save_points:
            store.save_points(n, seed, {s: p.indices for s, p in points.items()})
        return cls(store, evaluator.threats_for(spec["name"]), points)

    def request(self, checkpoint: str, split: str) -> UnitRequest:
        """The engine's view of one unit: this checkpoint on this split's points."""
        return UnitRequest(checkpoint, split, len(self.points[split].y), tuple(self.threats))

    def pending(self, evaluator: Evaluator, files: list[Path],
                splits: tuple[str, ...]) -> list[WorkUnit]:
        """The units with a figure still to compute (skipped figures are tried again)."""
        done = self.store.done()
        return [WorkUnit(i, s) for i, f in enumerate(files) for s in splits
                if not evaluator.expected_keys(self.request(f.stem, s)) <= done]


def _run_units(evaluator: Evaluator, setup: _Setup, sink: ResultsStore, files: list[Path],
               units: list[WorkUnit], run_name: str, bar: Any, label: str) -> None:
    """Evaluate ``units`` in order, storing each in ``sink`` (the run's store, or this
    rank's shard) as soon as it is done."""
    from ..train.checkpoints import load_checkpoint

    store = setup.store
    step = (lambda _label: bar.update(1)) if bar is not None else None
    model: _LoadedModel | None = None
    arrays = _CheckpointArrays("", {})
    stopping.note(f"after 0 of {len(units)} units (checkpoint × split) to do")
    for done_units, unit in enumerate(units, 1):
        file = files[unit.checkpoint]
        name = file.stem
        if model is None or model.index != unit.checkpoint:
            module, meta = load_checkpoint(file, evaluator.device)
            model = _LoadedModel(unit.checkpoint, module, _context(meta, run_name))
        if arrays.checkpoint != name:
            # Read once per checkpoint, then kept up to date with what its units add.
            arrays = _CheckpointArrays(name, _both(store, sink, ResultsStore.load_arrays, name))
        # The previous file of the run, evaluated or not: as a single process does.
        previous = files[unit.checkpoint - 1].stem if unit.checkpoint > 0 else None
        starts = (_both(store, sink, ResultsStore.load_adversarials, previous)
                  if evaluator.warm_start and previous is not None else {})
        done = store.done() | sink.done() if sink is not store else store.done()
        skipped = {**store.skipped(), **sink.skipped()}
        prior = PriorResults(frozenset(done), skipped, arrays.arrays, starts)
        if bar is not None:
            bar.set_description(f"{label}{name} {unit.split}")
        pts = setup.points[unit.split]
        result = evaluator.evaluate_unit(model.module, pts.x, pts.y,
                                         setup.request(name, unit.split), model.context,
                                         prior, step)
        # The points first: whenever a checkpoint's results exist, so do the starts the
        # next checkpoint needs, and a resumed run gets the same numbers.
        if result.adversarials:
            sink.save_adversarials(name, result.adversarials)
        new = {k: v for k, v in result.arrays.items() if k not in arrays.arrays}
        if new:
            sink.save_arrays(name, new)
            arrays = _CheckpointArrays(name, {**arrays.arrays, **new})
        sink.add(result.records)
        stopping.note(f"after {done_units} of {len(units)} units (checkpoint × split) to do; "
                      "each finished one is stored")


@dataclass
class _LoadedModel:
    """The model of the checkpoint at ``index`` of the run's files, with its record
    fields (epoch, margins...)."""

    index: int
    module: nn.Module
    context: dict[str, Any]


@dataclass
class _CheckpointArrays:
    """The per-point arrays stored so far for ``checkpoint``."""

    checkpoint: str
    arrays: dict[ArrayKey, np.ndarray]


def _both(store: ResultsStore, sink: ResultsStore,
          read: Callable[[ResultsStore, str], dict[ArrayKey, np.ndarray]], checkpoint: str,
          ) -> dict[ArrayKey, np.ndarray]:
    """What the run's store and this rank's shard hold of a checkpoint (the shard's wins)."""
    if sink is store:
        return read(store, checkpoint)
    return {**read(store, checkpoint), **read(sink, checkpoint)}


def _context(meta: dict[str, Any], run_name: str) -> dict[str, Any]:
    """The record fields a checkpoint's metadata fills in."""
    metrics = meta.get("metrics") or {}
    return {"epoch": meta["epoch"], "step": meta["step"], "train_wall_s": meta["wall_s"],
            "run": run_name, **{k: metrics.get(k) for k in METRIC_KEYS}}
