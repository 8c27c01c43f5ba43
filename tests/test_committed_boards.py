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
