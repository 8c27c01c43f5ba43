"""The results store: a real process killed mid-append loses nothing complete, corrupt
lines are reported, typed array keys round-trip, and old files are read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from marginrobust.errors import UserError
from marginrobust.evaluate.store import ArrayKey, EvalRecord, ResultsStore

# A writer that appends records through ResultsStore.add until it is killed. Its file
# writes are cut into 4 KiB pieces, as a slow or network file system may take them, so
# that the kill lands inside a line rather than between two.
WRITER = textwrap.dedent('''
    import os
    import sys

    _fdopen = os.fdopen


    class Chunked:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            for i in range(0, len(data), 4096):
                self.fh.write(data[i:i + 4096])
                self.fh.flush()
            return len(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)


    os.fdopen = lambda *a, **k: Chunked(_fdopen(*a, **k))
    from marginrobust.evaluate.store import EvalRecord, ResultsStore

    store = ResultsStore(sys.argv[1])
    pad = ["x" * 1000] * 300
    i = len(store.records)
    while True:
        store.add([EvalRecord(f"c{i}", "test", "pgd", "L2", 0.5, 10, 1.0, 0.5, flags=pad,
                              seed=0, config="{}")])
        i += 1
''')


def _kill_mid_line(script, run, min_bytes, attempts=5):
    """Start the writer and SIGKILL it while a line is half written (retried if the
    kill arrived just after the line was finished)."""
    path = run / "eval" / "records.jsonl"
    for _ in range(attempts):
        start = path.stat().st_size if path.exists() else 0
        proc = subprocess.Popen([sys.executable, str(script), str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        try:
            while time.time() < deadline and proc.poll() is None:
                size = path.stat().st_size if path.exists() else 0
                if size >= start + min_bytes:
                    with open(path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            proc.send_signal(signal.SIGKILL)
                            break
                time.sleep(0.0005)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        if not path.read_bytes().endswith(b"\n"):
            return path
    pytest.fail(f"no kill landed inside a line in {attempts} attempts")


# Bytes of one record line of the writer (its 300 flags of 1000 characters).
LINE = 300_000


def _complete_lines(path):
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line]


def test_a_killed_append_is_repaired_and_nothing_complete_is_lost(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run = tmp_path / "run"
    path = _kill_mid_line(script, run, 2 * LINE)
    first = _complete_lines(path)
    # The rerun appends after the torn line (repairing it first) and is killed in turn.
    path = _kill_mid_line(script, run, 2 * LINE)
    second = _complete_lines(path)
    assert [r["checkpoint"] for r in second[:len(first)]] == [r["checkpoint"] for r in first]
    assert len(second) >= len(first) + 2
    # A third process (here, this one) reads everything complete and adds more.
    store = ResultsStore(run)
    assert [r.checkpoint for r in store.records] == [r["checkpoint"] for r in second]
    extra = EvalRecord("extra", "test", "pgd", "L2", 0.5, 10, 1.0, 0.25, seed=0, config="{}")
    store.add([extra])
    final = ResultsStore(run).records
    assert [r.checkpoint for r in final] == [r["checkpoint"] for r in second] + ["extra"]
    assert path.read_bytes().endswith(b"\n")


def _write_three(tmp_path):
    store = ResultsStore(tmp_path)
    for i in range(3):
        store.add([EvalRecord(f"c{i}", "test", "pgd", "L2", 0.5, 10, 1.0, 0.5)])
    lines = store.path.read_text().splitlines()
    lines[1] = lines[1][:20] + "#" + lines[1][21:]                # damage in the middle
    store.path.write_text("\n".join(lines) + "\n")
    return store.path


def test_a_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = _write_three(tmp_path)
    with pytest.raises(UserError) as err:
        ResultsStore(tmp_path)
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_a_corrupt_middle_line_can_be_skipped_with_a_counted_warning(tmp_path, capsys):
    _write_three(tmp_path)
    store = ResultsStore(tmp_path, on_corrupt="warn")
    assert [r.checkpoint for r in store.records] == ["c0", "c2"]
    err = capsys.readouterr().err
    assert "skipped 1 corrupt line" in err and "line 2" in err
    with pytest.raises(UserError):
        ResultsStore(tmp_path, on_corrupt="ignore")


def test_skipped_records_store_null_and_are_tried_again(tmp_path):
    store = ResultsStore(tmp_path)
    rec = EvalRecord("c", "test", "certified", "L2", 0.5, 10, 1.0, None, seed=0, config="{}",
                     skipped="the model cannot be certified")
    store.add([rec])
    line = json.loads(store.path.read_text())
    assert line["robust_acc"] is None and line["skipped"]
    again = ResultsStore(tmp_path)
    assert again.done() == set() and again.skipped() == {rec.key: rec.skipped}


@pytest.mark.parametrize("key", [
    ArrayKey("test", "fmn", "L2", None, "distances", 20, 0, '{"options":{"steps":100}}'),
    ArrayKey("train", "pgd", "Linf", 8 / 255, "robust", 30, 7, '{"a/b":"c/d"}'),
    ArrayKey("test", "clean", None, None, "correct", 20, 0, "{}"),
    ArrayKey("test", "certify-ibp", "L2", 0.1, "certified", 5, None, "{}"),
])
def test_array_keys_round_trip(key):
    assert ArrayKey.parse(key.to_str()) == key


def test_old_array_names_and_points_are_read_as_unknown_settings(tmp_path):
    old = {"test/clean_correct": np.ones(3, bool), "test/fmn/L2/distances": np.ones(3),
           "test/pgd/Linf/0.05/robust": np.ones(3, bool),
           "test/certify-lipschitz/seconds": np.array(1.0)}
    (tmp_path / "eval").mkdir()
    np.savez(tmp_path / "eval" / "epoch-0001.npz", **old)
    (tmp_path / "eval" / "points.json").write_text(json.dumps({"test": [1, 2, 3]}))
    store = ResultsStore(tmp_path)
    keys = set(store.load_arrays("epoch-0001"))
    assert ArrayKey("test", "fmn", "L2", None, "distances") in keys
    assert ArrayKey("test", "pgd", "Linf", 0.05, "robust") in keys
    assert ArrayKey("test", "clean", None, None, "correct") in keys
    assert all(k.seed is None and k.config == "" for k in keys)
    assert store.load_points(3, 0) == {}
    assert store.selections() == [{"n": None, "seed": None, "points": {"test": [1, 2, 3]}}]
    # New settings beside the old: both kept, in the new format.
    store.save_points(2, 0, {"test": [4, 5]})
    new = ArrayKey("test", "fmn", "L2", None, "distances", 2, 0, "{}")
    store.save_arrays("epoch-0001", {new: np.zeros(2)})
    assert store.load_points(2, 0) == {"test": [4, 5]}
    assert {"n": None, "seed": None, "points": {"test": [1, 2, 3]}} in store.selections()
    assert json.loads((tmp_path / "eval" / "points.json").read_text())["format"] == 2
    with np.load(tmp_path / "eval" / "epoch-0001.npz") as z:
        assert set(old) <= set(z.files)
    assert new in store.load_arrays("epoch-0001")


def test_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        store = ResultsStore(tmp_path)
        store.add([EvalRecord("c", "test", "pgd", "L2", 0.5, 10, 1.0, 0.5)])
        store.save_points(1, 0, {"test": [0]})
        store.save_arrays("c", {ArrayKey("test", "clean", None, None, "correct", 1, 0, "{}"):
                                np.ones(1, bool)})
    finally:
        os.umask(old)
    for name in ("records.jsonl", "points.json", "c.npz"):
        assert (tmp_path / "eval" / name).stat().st_mode & 0o777 == 0o644
