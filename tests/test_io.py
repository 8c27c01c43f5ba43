"""The shared file pieces: umask permissions, torn-tail repair after a real kill, strict
JSON-lines reading, the split list."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from marginrobust.errors import UserError
from marginrobust.io import (
    append_lines,
    atomic_write_text,
    parse_splits,
    read_jsonl,
    repair_torn_tail,
    write_json,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_umask_permissions(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "b.json", {"a": 1})
    append_lines(tmp_path / "c.jsonl", ['{"a": 1}'])
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o644
    for name in ("a.txt", "b.json", "c.jsonl"):
        assert _mode(tmp_path / name) == expected, name


def test_atomic_files_follow_a_stricter_umask(tmp_path):
    import marginrobust.io as mio

    old = os.umask(0o077)
    mio._UMASK = None  # read afresh under the new umask
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert _mode(tmp_path / "a.txt") == 0o600
    finally:
        os.umask(old)
        mio._UMASK = None


def test_torn_tail_is_cut_and_the_next_append_is_not_glued(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"i": 0}\n{"i": 1}\n{"i": 2, "tor')
    assert [r["i"] for r in read_jsonl(path)] == [0, 1]  # the torn line is tolerated
    append_lines(path, ['{"i": 3}'])
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 3]
    assert path.read_text().endswith('{"i": 3}\n')
    assert not repair_torn_tail(path)


_WRITER = """
import sys
from marginrobust.io import append_lines
path = sys.argv[1]
pad = "x" * 4000
i = 0
while True:
    append_lines(path, ['{"i": %d, "pad": "%s"}' % (i, pad) for _ in range(5)])
    i += 1
"""


def test_a_process_killed_mid_append_loses_only_its_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)])
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 400_000):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_jsonl(path)
    assert len(before) > 50
    append_lines(path, ['{"i": -1, "pad": ""}'])
    after = read_jsonl(path)
    assert after[:-1] == before and after[-1]["i"] == -1
    # Every line of the file parses now: nothing glued, nothing torn.
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1\n{"epoch": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl line 2 "):
        read_jsonl(path)
    rows = read_jsonl(path, on_corrupt="warn")
    assert [r["epoch"] for r in rows] == [0, 2]
    assert "skipped 1 corrupt line(s)" in capsys.readouterr().err


def test_splits():
    assert parse_splits("train") == ("train",)
    assert parse_splits(" test , train ") == ("test", "train")
    for bad in ("", "both", "test,test", "val"):
        with pytest.raises(UserError):
            parse_splits(bad)
