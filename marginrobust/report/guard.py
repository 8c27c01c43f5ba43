"""Which folders the leaderboard may write into: its own, empty ones, or any with force.

A board folder written by :func:`marginrobust.report.board.write_leaderboard` carries a
marker file, :data:`MARKER`, listing the files it wrote. Writing into a folder that exists,
holds anything besides a hand-written ``NOTES.md``, and has no marker is refused unless
forced: the leaderboard must never overwrite a folder it did not write (a committed board,
a project folder given by mistake).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import write_json
from ..runlock import LOCK_FILE

MARKER = ".marginrobust-board.json"
# The folder of figures inside a board, written by the leaderboard alone.
PLOTS_DIR = "plots"
WRITER = "marginrobust leaderboard"
# Entries a board folder may hold before the leaderboard first writes there: the notes
# it reads, not writes.
# What a board folder may hold that the leaderboard did not write: its notes, and the
# lock of whoever writes it now.
INPUTS = frozenset({"NOTES.md", LOCK_FILE})


def read_marker(out_dir: str | Path) -> dict[str, Any] | None:
    """The marker of a board folder, or None when there is none (or it is not one of ours).

    Args:
        out_dir: The folder.
    """
    path = Path(out_dir) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("written_by") != WRITER:
        return None
    return marker


def check_board_folder(out_dir: str | Path, force: bool = False) -> None:
    """Refuse a folder the leaderboard may not write into.

    Args:
        out_dir: The board folder.
        force: Write even into a folder the leaderboard did not write.

    Raises:
        UserError: ``out_dir`` is a file, or a non-empty folder without the marker and
            ``force`` is not given.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder for the leaderboard")
    if force or not out.exists() or read_marker(out) is not None:
        return
    if any(entry.name not in INPUTS for entry in out.iterdir()):
        raise UserError(f"{out} is not empty and was not written by the leaderboard (it has no "
                        f"{MARKER}); choose another folder, or pass --force to write into it")


def _inside(out: Path, rel: str) -> Path | None:
    """``out / rel`` when ``rel`` is a plain relative path inside ``out``, else None."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return out / path


def finish_board(out_dir: str | Path, files: Iterable[str]) -> list[str]:
    """Record the files just written and remove those the previous write left behind.

    Files the previous marker lists but this write did not produce (a figure whose data is
    gone) are deleted, and so is any file in ``plots/`` of a board folder the leaderboard
    wrote before, so a rewritten board holds exactly what a fresh one would. Nothing else
    that the leaderboard did not write is touched.

    Args:
        out_dir: The board folder.
        files: Paths relative to ``out_dir`` of every file written now.

    Returns:
        The stale files removed (relative paths).
    """
    out = Path(out_dir)
    new = sorted(set(files))
    old = set(map(str, (read_marker(out) or {}).get("files") or []))
    # The figures' folder is the leaderboard's alone: a figure in it that this write did
    # not make is stale even when no marker lists it (a board copied without its marker).
    plots = out / PLOTS_DIR
    if read_marker(out) is not None and plots.is_dir():
        old |= {p.relative_to(out).as_posix() for p in plots.rglob("*") if p.is_file()}
    removed = []
    for rel in sorted(old - set(new)):
        path = _inside(out, rel)
        if path is not None and path.is_file():
            path.unlink()
            removed.append(rel)
    write_json(out / MARKER, {"written_by": WRITER, "files": new}, indent=1)
    return removed
