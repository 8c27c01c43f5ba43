"""The runner: every checkpoint of a run directory through the engine, with a results
store, resume and progress.

It sits above training in the data flow (checkpoints → evaluations), so it reads the
checkpoints with :mod:`marginrobust.train.checkpoints`, imported where they are read;
the engine (:mod:`.engine`) reads no file at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import SPLITS, parse_splits
from .engine import Evaluator, PriorResults
from .points import PointSet, select_points
from .store import ResultsStore

# The training metrics of a checkpoint that its records carry.
METRIC_KEYS = ("log10_loss", "train_acc", "test_acc", "normalized_margin", "product_margin",
               "smoothed_margin")


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


def evaluate_run(evaluator: Evaluator, path: str | Path, splits: Sequence[str] = SPLITS,
                 progress: bool = False, checkpoints: Iterable[Path] | None = None,
                 ) -> ResultsStore:
    """Evaluate every checkpoint of a run directory (or one checkpoint file).

    Results go to ``RUN_DIR/eval/`` (:class:`~.store.ResultsStore`). The points are
    chosen once per (n, seed) and kept in ``points.json``. A rerun with the same settings
    skips every finished figure and reuses the stored per-point arrays; other settings
    (n, seed, attack options) are evaluated and stored beside the earlier figures.

    Args:
        evaluator: The configured engine.
        path: A run directory or one of its checkpoint files.
        splits: Which points to evaluate: ``test``, ``train`` or both.
        progress: Show a bar over the attack runs still to do.
        checkpoints: With a run directory, only these checkpoint files.

    Returns:
        The run's results store, with every record.
    """
    from ..data import load_dataset
    from ..train.checkpoints import load_checkpoint, read_checkpoint

    files, run_dir = checkpoint_files(path, checkpoints)
    splits = parse_splits(splits)
    first = read_checkpoint(files[0])
    run = first.get("run", {})
    spec = first["data"]
    data = load_dataset(spec["name"], run.get("data_dir"), spec.get("train_subset"),
                        spec.get("test_subset"), spec.get("seed", 0))
    threats = evaluator.threats_for(spec["name"])
    store = ResultsStore(run_dir)
    n, seed = evaluator.n, evaluator.seed
    points = select_points(data, n, seed, splits, store.load_points(n, seed))
    store.save_points(n, seed, {s: p.indices for s, p in points.items()})

    done = frozenset(store.done())
    # The bar counts the attack runs still to do, so a resumed evaluation ends full.
    total = sum(len(evaluator._pending_attacks(f.stem, s, len(p.y), threats, done))
                for f in files for s, p in points.items())
    bar = _progress_bar(total) if progress else None
    step = (lambda _label: bar.update(1)) if bar is not None else None
    previous: str | None = None
    try:
        for file in files:
            name = file.stem
            todo = {s: p for s, p in points.items()
                    if not evaluator._expected_keys(name, s, len(p.y), threats) <= store.done()}
            if todo:
                _evaluate_checkpoint(evaluator, store, file, todo, threats, run_dir.name,
                                     previous, bar, step, load_checkpoint)
            previous = name
    finally:
        if bar is not None:
            bar.close()
    return store


def _evaluate_checkpoint(evaluator: Evaluator, store: ResultsStore, file: Path,
                         points: dict[str, PointSet], threats: list[Any], run_name: str,
                         previous: str | None, bar: Any, step: Any, load: Any) -> None:
    """One checkpoint on the points of the splits it still needs, stored split by split."""
    name = file.stem
    model, meta = load(file, evaluator.device)
    metrics = meta.get("metrics") or {}
    context = {"epoch": meta["epoch"], "step": meta["step"], "train_wall_s": meta["wall_s"],
               "run": run_name, **{k: metrics.get(k) for k in METRIC_KEYS}}
    # Read once per checkpoint: the file holds the starts of every split.
    starts = (store.load_adversarials(previous)
              if evaluator.warm_start and previous is not None else {})
    arrays = store.load_arrays(name)
    for split, pts in points.items():
        if bar is not None:
            bar.set_description(f"{name} {split}")
        prior = PriorResults(frozenset(store.done()), store.skipped(), arrays, starts)
        result = evaluator._evaluate(model, pts.x, pts.y, split, name, context, threats,
                                     prior, step)
        # The points first: whenever a checkpoint's results exist, so do the starts the
        # next checkpoint needs, and a resumed run gets the same numbers.
        if result.adversarials:
            store.save_adversarials(name, result.adversarials)
        new = {k: v for k, v in result.arrays.items() if k not in arrays}
        if new:
            store.save_arrays(name, new)
            arrays = {**arrays, **new}
        store.add(result.records)
