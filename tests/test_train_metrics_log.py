"""metrics.jsonl and metrics.csv: appends that survive a kill, strict reading, permissions."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marginrobust.errors import UserError
from marginrobust.train.metrics_log import CSV, JSONL, MetricsWriter, read_metrics

# Appends a long record per epoch for ever, as a training process writes its metrics.
CHILD = """
import sys
from marginrobust.train.metrics_log import MetricsWriter
writer = MetricsWriter(sys.argv[1])
pad = "x" * int(sys.argv[2])
epoch = 0
while True:
    writer.on_epoch_end(None, {"epoch": epoch, "pad": pad})
    epoch += 1
"""
# Long lines take milliseconds to write, so a kill can land in the middle of one.
PAD = 2_000_000


def _last_byte(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1)
    except (OSError, ValueError):  # absent or empty
        return b"\n"


def _kill_mid_append(run_dir: Path) -> bytes:
    """SIGKILL the appending child while metrics.jsonl ends in a partial line, if caught."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(PAD)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = run_dir / JSONL
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and (
            not path.exists() or path.stat().st_size < 3 * PAD):
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode()
    # Poll the tail as fast as possible and kill while a line is half written.
    watch = time.time() + 10
    while time.time() < watch and _last_byte(path) == b"\n":
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return path.read_bytes()


def test_a_kill_mid_append_leaves_a_torn_line_that_reading_drops_and_appending_repairs(
        tmp_path):
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        data = _kill_mid_append(run_dir)
        if not data.endswith(b"\n"):
            break
    assert not data.endswith(b"\n"), "no kill landed in the middle of an append"
    whole = data.count(b"\n")
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(whole))
    # The next writer (a resumed run) appends after the repaired tail: nothing is glued.
    writer = MetricsWriter(run_dir)
    writer.columns = ["epoch", "pad"]
    writer.on_epoch_end(None, {"epoch": whole, "pad": "y"})
    lines = (run_dir / JSONL).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == whole + 2
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(whole + 1)) and rows[-1]["pad"] == "y"
    limit = csv.field_size_limit(4 * PAD)  # the padded rows exceed csv's default limit
    try:
        with open(run_dir / CSV, newline="") as fh:
            table = list(csv.reader(fh))
    finally:
        csv.field_size_limit(limit)
    assert table[0] == ["epoch", "pad"] and all(len(row) == 2 for row in table)
    assert table[-1] == [str(whole), "y"]


def test_a_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / JSONL
    path.write_text('{"epoch": 0}\n{"epoch": 1, "lo\n{"epoch": 2}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl line 2"):
        read_metrics(tmp_path)
    assert [r["epoch"] for r in read_metrics(tmp_path, on_corrupt="warn")] == [0, 2]
    # A torn last line alone is what a kill leaves: tolerated.
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "lo')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]
    assert read_metrics(tmp_path / "absent") == []
