"""Results shards: what each rank of a distributed evaluation writes, and their merge into
the run's results store.

Each rank writes only to its own shard, ``RUN_DIR/eval/.shards/rank-K/``, laid out like
a run directory's results (``eval/records.jsonl``, ``eval/<checkpoint>.npz``,
``eval/adversarials/``) and written by a :class:`~.store.ResultsStore` of its own, so
every file of a shard is written atomically or appended durably, exactly as the run's own
store is. The folder is hidden because it holds work in progress, not results: publishing
a run skips it.

:func:`merge_shards` moves every shard into ``RUN_DIR/eval/``: arrays first, then records
(so whenever a record exists, so do its arrays, as in a single process), then the shard
is removed. Merging is idempotent: a merge killed half-way is redone by the next one, and
records the store already holds are not added twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from .store import ADVERSARIALS_DIR, EVAL_DIR, EvalRecord, ResultsStore

SHARDS_DIR = ".shards"
RANK_PREFIX = "rank-"


def shards_dir(run_dir: str | Path) -> Path:
    """The folder of a run's shards: ``RUN_DIR/eval/.shards``."""
    return Path(run_dir) / EVAL_DIR / SHARDS_DIR


def shard_dir(run_dir: str | Path, rank: int) -> Path:
    """The shard of rank ``rank``: ``RUN_DIR/eval/.shards/rank-K``."""
    return shards_dir(run_dir) / f"{RANK_PREFIX}{int(rank)}"


def open_shard(run_dir: str | Path, rank: int) -> ResultsStore:
    """The results store of rank ``rank``'s shard (created on its first write)."""
    return ResultsStore(shard_dir(run_dir, rank))


def list_shards(run_dir: str | Path) -> list[Path]:
    """The shards a run directory holds (left by a running or killed evaluation), in rank
    order."""
    root = shards_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(RANK_PREFIX)
             and p.name[len(RANK_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(RANK_PREFIX):]))


def merge_shards(run_dir: str | Path, order: Sequence[tuple[str, str]] = (),
                 store: ResultsStore | None = None) -> int:
    """Merge every shard of ``run_dir`` into its results store and remove the shards.

    Run it while no rank writes (before a distributed evaluation starts, or after its
    final barrier).

    Args:
        run_dir: The run directory.
        order: The (checkpoint, split) units in the order a single process evaluates
            them: merged records are appended in that order (units not named go last,
            in rank order), so ``records.jsonl`` reads as a single process writes it.
        store: The run's results store, if already open (it is updated in place).

    Returns:
        The number of records the shards held.
    """
    shards = list_shards(run_dir)
    if not shards:
        return 0
    store = store if store is not None else ResultsStore(run_dir)
    records: list[EvalRecord] = []
    for path in shards:
        shard = ResultsStore(path)
        # Arrays before records: a record in the store always has its arrays.
        for npz in sorted(shard.dir.glob("*.npz")):
            arrays = shard.load_arrays(npz.stem)
            if arrays:
                store.save_arrays(npz.stem, arrays)
        for npz in sorted((shard.dir / ADVERSARIALS_DIR).glob("*.npz")):
            adversarials = shard.load_adversarials(npz.stem)
            if adversarials:
                store.save_adversarials(npz.stem, adversarials)
        records.extend(shard.records)
    # One record per figure, even if two shards held the same one (no evaluation of this
    # package writes that, but the store must never hold a figure twice).
    records = list({r.key: r for r in records}.values())
    rank_of = {unit: i for i, unit in enumerate(order)}
    # A stable sort: within a unit the records keep the order the engine gave them.
    records.sort(key=lambda r: rank_of.get((r.checkpoint, r.split), len(rank_of)))
    # A record the store already holds as it is (a merge redone) is not added again, so
    # redoing a merge changes nothing.
    stored = {r.key: r for r in store.records}
    store.add([r for r in records if stored.get(r.key) != r])
    # Only now: a merge killed before this line leaves the shards for the next one.
    for path in shards:
        shutil.rmtree(path)
    shutil.rmtree(shards_dir(run_dir), ignore_errors=True)
    return len(records)
