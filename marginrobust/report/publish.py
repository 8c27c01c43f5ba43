"""Publish runs into a board folder and rebuild its leaderboard from all published runs.

A published run is a copy of a run's results in ``leaderboard_dir/runs/<name>``:
``run.json``, ``metrics.jsonl``, ``metrics.csv`` and ``eval/`` without the adversarial
points (inputs for warm starts, not results) — never checkpoints. Copies get the
permissions of the user's umask, whatever the source files had.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import runlock
from ..errors import UserError
from ..evaluate.store import ADVERSARIALS_DIR, EVAL_DIR
from ..io import RUN_FILE
from .board import write_leaderboard
from .guard import check_board_folder
from .loader import load_runs

RUNS_DIR = "runs"
RESULT_FILES = (RUN_FILE, "metrics.jsonl", "metrics.csv")


def _copy_results(src: Path, dest: Path) -> None:
    """Copy ``src``'s results into the new folder ``dest`` (files with umask permissions)."""
    dest.mkdir(parents=True)
    for name in RESULT_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    evaluation = src / EVAL_DIR
    if not evaluation.is_dir():
        return
    for path in sorted(evaluation.rglob("*")):
        rel = path.relative_to(evaluation)
        # Adversarial points are not results; hidden files are a writer's temporary files.
        if rel.parts[0] == ADVERSARIALS_DIR or any(p.startswith(".") for p in rel.parts):
            continue
        target = dest / EVAL_DIR / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def publish(run_dir: Path | str, leaderboard_dir: Path | str) -> Path:
    """Copy a run's results (no checkpoints) to ``leaderboard_dir/runs/<name>``.

    The copy replaces an earlier one of the same name; it is made beside it and renamed
    into place, so a killed publish leaves the earlier copy or the new one.

    Args:
        run_dir: The run folder.
        leaderboard_dir: The board folder.

    Returns:
        The published folder.

    Raises:
        UserError: ``run_dir`` is not a run folder.
    """
    src = Path(run_dir)
    if not (src / RUN_FILE).is_file():
        raise UserError(f"{src} is not a run directory (no {RUN_FILE})")
    dest = Path(leaderboard_dir) / RUNS_DIR / src.resolve().name
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    _copy_results(src, tmp)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def published_runs(leaderboard_dir: Path | str) -> list[Path]:
    """The published run folders of a board, by name.

    Args:
        leaderboard_dir: The board folder.
    """
    folder = Path(leaderboard_dir) / RUNS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def update_leaderboard(run_dirs: Sequence[Path | str], leaderboard_dir: Path | str,
                       force: bool = False, on_corrupt: str = "error") -> dict[str, Path]:
    """Publish runs into ``leaderboard_dir/runs`` and rebuild the leaderboard from all of them.

    Nothing is copied or written before every check passed: the board folder may be written
    into (see :func:`marginrobust.report.guard.check_board_folder`), and every given run
    folder reads cleanly.

    Args:
        run_dirs: Runs to publish (none: rebuild from the published runs). Runs already in
            ``leaderboard_dir/runs`` are used in place.
        leaderboard_dir: The board folder.
        force: Write even into a non-empty folder the leaderboard did not write.
        on_corrupt: ``error`` or ``warn``, for damaged lines of the runs' JSON-lines files.

    Returns:
        ``{path relative to leaderboard_dir: path}`` of every file written.

    Raises:
        UserError: The folder may not be written into, a run is missing or damaged, two
            runs share a name, or the board holds no runs.
    """
    board = Path(leaderboard_dir)
    check_board_folder(board, force)
    with runlock.hold(board, "leaderboard"):
        return _update_locked(run_dirs, board, on_corrupt)


def _update_locked(run_dirs: Sequence[Path | str], board: Path,
                   on_corrupt: str) -> dict[str, Path]:
    """:func:`update_leaderboard` once the folder is checked and locked."""
    runs = [Path(r) for r in run_dirs]
    if runs:
        load_runs(runs, on_corrupt)  # every run reads cleanly before anything is copied
    names = [r.resolve().name for r in runs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise UserError(f"two runs are named {twice!r}; a board holds one run per name")
    published = (board / RUNS_DIR).resolve()
    for run in runs:
        if run.resolve().parent != published:
            publish(run, board)
    found = published_runs(board)
    if not found:
        raise UserError(f"{board} holds no runs yet; give run directories to add")
    # The check above passed; what was just published is the leaderboard's own.
    return write_leaderboard(found, board, force=True, on_corrupt=on_corrupt)
