"""The committed leaderboards regenerate byte for byte from the run files committed beside them.

Each board folder holds its published runs (``runs/<name>/``: run.json, metrics, eval/) and
the hand-written ``NOTES.md``; everything else in it was written by ``marginrobust
leaderboard``, and rebuilding from the copied runs must give the same bytes, file for file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from marginrobust.report.guard import MARKER
from marginrobust.report.publish import update_leaderboard

ROOT = Path(__file__).resolve().parents[1]
BOARDS = (ROOT / "leaderboard", ROOT / "leaderboard" / "trajectory")


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_board_regenerates_byte_for_byte(board: Path, tmp_path: Path) -> None:
    marker = json.loads((board / MARKER).read_text(encoding="utf-8"))
    committed = sorted(marker["files"])
    assert committed, f"{board} lists no files"
    # No orphans: besides its runs, its notes, its scripts and the marker, a board folder
    # holds exactly what its generator listed.
    present = sorted(p.relative_to(board).as_posix() for p in board.rglob("*")
                     if p.is_file() and p.relative_to(board).parts[0] not in ("runs", "trajectory")
                     and p.name not in ("NOTES.md", MARKER) and p.suffix != ".sh")
    assert present == committed, sorted(set(present) ^ set(committed))
    copy = tmp_path / "board"
    shutil.copytree(board / "runs", copy / "runs")
    if (board / "NOTES.md").exists():
        shutil.copyfile(board / "NOTES.md", copy / "NOTES.md")
    written = update_leaderboard([], copy, force=True)
    assert sorted(written) == committed
    for rel in committed:
        assert (copy / rel).read_bytes() == (board / rel).read_bytes(), rel
    if board == BOARDS[0]:
        # Published runs are results only; the deep trajectory alone keeps its checkpoints
        # (to be evaluated again or trained deeper).
        assert not list((board / "runs").rglob("*.pt"))


# What a board folder may hold besides the files its marker lists: the marker, the
# published runs, the hand-written notes, the scripts that made the runs, a nested board.
NOT_GENERATED = {MARKER, "NOTES.md"}


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_board_holds_only_what_its_generator_lists(board: Path) -> None:
    listed = set(json.loads((board / MARKER).read_text(encoding="utf-8"))["files"])
    nested = {b for b in BOARDS if b != board and board in b.parents}
    unlisted = []
    for path in sorted(board.rglob("*")):
        rel = path.relative_to(board)
        if (not path.is_file() or rel.parts[0] == "runs" or rel.as_posix() in listed
                or rel.name in NOT_GENERATED or path.suffix == ".sh"
                or path.name == ".marginrobust.lock"
                or any(b in path.parents for b in nested)):
            continue
        unlisted.append(rel.as_posix())
    assert not unlisted, f"files no generator lists in {board}: {unlisted}"


def test_regenerating_removes_a_figure_it_no_longer_makes(tmp_path: Path) -> None:
    # One run of the trajectory board, without its checkpoints (the board reads none):
    # enough to make figures, and quick to rebuild twice.
    run = BOARDS[1] / "runs" / "fashion-cnn-deep-s0"
    copy = tmp_path / "board"
    shutil.copytree(run, copy / "runs" / run.name, ignore=shutil.ignore_patterns("*.pt"))
    update_leaderboard([], copy, force=True)
    orphan = copy / "plots" / "gone-run_margins.png"
    orphan.write_bytes(b"left by a run that no longer exists")
    update_leaderboard([], copy, force=True)
    assert not orphan.exists()

