"""One writer per run, resume that checks what it resumes, OS faults and stop signals in one
sentence: each case through the real command line, losing and duplicating nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import launcher_free_env, one_error_line

from marginrobust import runlock, stopping
from marginrobust.cli import main
from marginrobust.io import read_jsonl

TRAIN = ["train", "--model", "mlp", "--model-opt", "widths=[8]", "--train-subset", "60",
         "--test-subset", "30", "--quiet", "--device", "cpu"]
EVAL = ["--attacks", "fmn", "--norms", "L2", "--eps-l2", "0.5", "--n", "10", "--quiet",
        "--device", "cpu", "--no-certify"]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _train(out: Path, epochs: int = 3, *extra: str):
    return _invoke([*TRAIN, "--epochs", epochs, "--out", out, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != runlock.LOCK_FILE}


# -- one writer per run -------------------------------------------------------------------


def _hold_in_child(folder: Path, ready: Path) -> subprocess.Popen:
    """A second real process holding ``folder``'s lock until it is killed."""
    code = ("import sys, time; from pathlib import Path; from marginrobust import runlock;"
            "runlock.acquire(sys.argv[1]); Path(sys.argv[2]).write_text('held');"
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(ready)],
                            env=launcher_free_env())
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the holder did not start"
        time.sleep(0.05)
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_runs_once_it_is_gone(tmp_path):
    run = tmp_path / "run"
    assert _train(run).exit_code == 0
    before = _files(run)
    holder = _hold_in_child(run, tmp_path / "ready")
    try:
        for args in ([*TRAIN[:1], "--out", run, "--resume", "--epochs", 5, "--quiet"],
                     ["eval", run, *EVAL]):
            line = one_error_line(_invoke(args), 2, only_line=True)
            assert f"pid {holder.pid}" in line and "being written" in line, line
        assert _files(run) == before  # the refused commands wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    board = tmp_path / "board"
    holder = _hold_in_child(board, tmp_path / "ready-board")
    try:
        line = one_error_line(_invoke(["leaderboard", run, "--out", board]), 2, only_line=True)
        assert f"pid {holder.pid}" in line and "leaderboard in" in line, line
        assert not (board / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the same command now runs.
    result = _invoke(["train", "--out", run, "--resume", "--epochs", 5, "--quiet"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(6))


def test_two_real_evaluations_at_once_store_every_record_once(tmp_path):
    run = tmp_path / "run"
    assert _train(run).exit_code == 0
    cmd = [sys.executable, "-m", "marginrobust", "eval", str(run), *EVAL]
    procs = [subprocess.Popen(cmd, env=launcher_free_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip(procs, outs) if p.returncode == 2)
    assert "being written by pid" in refused and "Traceback" not in refused
    records = read_jsonl(run / "eval" / "records.jsonl")
    keys = [json.dumps({k: r[k] for k in ("checkpoint", "split", "method", "norm", "eps")},
                       sort_keys=True) for r in records]
    assert records and len(keys) == len(set(keys))


def test_the_lock_is_reentrant_and_a_refused_new_folder_is_not_left_behind(tmp_path):
    folder = tmp_path / "new"
    with runlock.hold(folder):
        with runlock.hold(folder):
            assert runlock.held(folder)
        assert runlock.held(folder)
    assert not runlock.held(folder)
    assert not folder.exists()  # it held nothing but its lock
    holder = _hold_in_child(tmp_path / "busy", tmp_path / "ready")
    try:
        with pytest.raises(runlock.RunBusy, match=f"pid {holder.pid}"):
            runlock.acquire(tmp_path / "busy")
    finally:
        holder.kill()
        holder.wait()


def test_ranks_other_than_zero_share_rank_zeros_lock(tmp_path, monkeypatch):
    holder = _hold_in_child(tmp_path / "run", tmp_path / "ready")
    try:
        for key, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"),
                           ("LOCAL_WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", "29500"), ("TORCHELASTIC_RUN_ID", "x"),
                           ("GROUP_RANK", "0"), ("ROLE_RANK", "1")):
            monkeypatch.setenv(key, value)
        from marginrobust import distributed

        assert distributed.launched() and distributed.rank() == 1
        with runlock.hold(tmp_path / "run"):  # rank 1 takes no lock of its own
            pass
    finally:
        holder.kill()
        holder.wait()


# -- resume checks what it resumes --------------------------------------------------------


def test_resume_refuses_a_resume_file_of_another_run(tmp_path):
    cnn, mlp = tmp_path / "cnn", tmp_path / "mlp"
    assert _invoke([*TRAIN[:1], "--model", "cnn", "--width", "0.25", "--train-subset", "60",
                    "--test-subset", "30", "--epochs", 2, "--quiet", "--device", "cpu",
                    "--out", cnn]).exit_code == 0
    assert _train(mlp, 2).exit_code == 0
    shutil.copyfile(mlp / "resume.pt", cnn / "resume.pt")
    before = {k: v for k, v in _files(cnn).items() if k != "resume.pt"}
    line = one_error_line(_invoke(["train", "--out", cnn, "--resume", "--epochs", 4,
                                  "--quiet"]), 2, only_line=True)
    assert "belongs to another run" in line and "model" in line
    after = {k: v for k, v in _files(cnn).items() if k != "resume.pt"}
    assert after == before
    run = json.loads((cnn / "run.json").read_text())
    assert run["run"]["model"] == "cnn" and len(run["fingerprint"]) == 16


@pytest.mark.parametrize("option", [["--model", "cnn"], ["--dataset", "fashion-mnist"],
                                    ["--schedule", "constant"], ["--lr", "0.5"],
                                    ["--width", "2"], ["--seed", "3"],
                                    ["--model-opt", "widths=[16]"]])
def test_resume_refuses_options_that_contradict_the_run(tmp_path, option):
    run = tmp_path / "run"
    assert _train(run, 2).exit_code == 0
    before = _files(run)
    line = one_error_line(_invoke(["train", "--out", run, "--resume", "--epochs", 4, "--quiet",
                                  *option]), 2, only_line=True)
    assert option[0] in line or "model option" in line
    assert "contradicts" in line and "--epochs" in line
    assert _files(run) == before


def test_resume_takes_options_that_agree_or_may_change(tmp_path):
    run = tmp_path / "run"
    assert _train(run, 2).exit_code == 0
    result = _invoke(["train", "--out", run, "--resume", "--epochs", 4, "--quiet",
                      "--model", "mlp", "--train-subset", "60", "--device", "cpu",
                      "--max-minutes", "5"])
    assert result.exit_code == 0, result.output
    assert "--resume" in _invoke(["train", "--help"]).output
    assert "may change only" in " ".join(_invoke(["train", "--help"]).output.split())


# -- OS faults ------------------------------------------------------------------------------


def _enospc_after(monkeypatch, calls: int) -> None:
    """Make the ``calls``-th write of a run file fail as a full disk does."""
    import marginrobust.io as mio

    real = mio.atomic_write
    count = {"n": 0}

    def failing(path, write):
        count["n"] += 1
        if count["n"] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, write)

    monkeypatch.setattr(mio, "atomic_write", failing)
    import marginrobust.train.checkpoints as ck

    monkeypatch.setattr(ck, "atomic_write", failing)


def test_a_full_disk_in_training_is_one_sentence_and_loses_nothing(tmp_path, monkeypatch):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert _train(whole, 4).exit_code == 0
    with monkeypatch.context() as m:
        _enospc_after(m, 6)
        line = one_error_line(_train(run, 4), 1, only_line=True)
    assert "No space left on device" in line and "rerun the same command" in line
    assert not [p for p in run.rglob("*.tmp")]
    result = _invoke(["train", "--out", run, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    strip = ("wall_s", "seconds", "time")
    rows = [[{k: v for k, v in r.items() if not any(s in k for s in strip)}
             for r in read_jsonl(d / "metrics.jsonl")] for d in (whole, run)]
    assert rows[0] == rows[1]


def test_a_full_disk_inside_an_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    import marginrobust.io as mio

    path = tmp_path / "records.jsonl"
    mio.append_lines(path, ['{"a": 1}'])
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:5]))  # part of the lines reached the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mio.os, "write", short_then_full)
    with pytest.raises(OSError):
        mio.append_lines(path, ['{"b": 2}', '{"c": 3}'])
    monkeypatch.undo()
    assert path.read_text() == '{"a": 1}\n'


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/.mr-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    probe.rmdir()
    return ok


MOUNT = pytest.mark.skipif(not _can_mount(), reason="needs root and mount (tmpfs, bind)")


@MOUNT
def test_a_real_full_disk_during_training_and_evaluation(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], check=True)
    try:
        run = disk / "run"
        # A CNN's resume file (~110 kB with the optimizer state) fills 160 kB at once.
        result = _invoke([*TRAIN[:1], "--model", "cnn", "--width", "0.25", "--train-subset",
                          "60", "--test-subset", "30", "--epochs", 20, "--quiet",
                          "--device", "cpu", "--out", run])
        line = one_error_line(result, 1, only_line=True)
        assert "No space left on device" in line
        assert not [p for p in disk.rglob("*.tmp")]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@MOUNT
def test_a_read_only_run_with_every_result_evaluates_without_writing(tmp_path):
    run = tmp_path / "run"
    assert _train(run, 2).exit_code == 0
    first = _invoke(["eval", run, *EVAL])
    assert first.exit_code == 0, first.output
    assert not (run / runlock.LOCK_FILE).exists()  # removed when its command ended
    before = _files(run)
    subprocess.run(["mount", "--bind", str(run), str(run)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(run)], check=True)
        again = _invoke(["eval", run, *EVAL])
        assert again.exit_code == 0, again.output
        assert "records in" in again.output
        # Something new to store fails in one sentence, naming the file system's refusal.
        line = one_error_line(_invoke(["eval", run, *EVAL[:-3], "--n", "12", "--device",
                                      "cpu", "--no-certify"]), 1, only_line=True)
        assert "read-only" in line.lower()
    finally:
        subprocess.run(["umount", str(run)], check=True)
    assert _files(run) == before


def test_a_read_only_folder_is_evaluated_without_a_lock_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _train(run, 2).exit_code == 0
    assert _invoke(["eval", run, *EVAL]).exit_code == 0
    assert not (run / runlock.LOCK_FILE).exists()  # removed when its command ended
    real_open = os.open

    def refuse_lock(path, flags, *args):
        if str(path).endswith(runlock.LOCK_FILE):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(runlock.os, "open", refuse_lock)
    import marginrobust.io as mio

    def no_write(*_a, **_k):
        raise AssertionError("a complete evaluation wrote a file")

    monkeypatch.setattr(mio, "atomic_write", no_write)
    monkeypatch.setattr(mio, "append_lines", no_write)
    result = _invoke(["eval", run, *EVAL])
    assert result.exit_code == 0, result.output


# -- stop signals ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_training_in_one_line_and_the_rerun_continues(tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "marginrobust", *TRAIN, "--epochs", "100000", "--out",
           str(run)]
    proc = subprocess.Popen(cmd, env=launcher_free_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_jsonl(run / "metrics.jsonl")) < 5:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"Stopped by {signal.Signals(sig).name} at epoch ")
    assert "rerun the same command to continue" in lines[0]
    epochs = [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")]
    assert epochs == list(range(len(epochs)))
    result = _invoke(["train", "--out", run, "--resume", "--epochs", epochs[-1] + 2,
                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == list(
        range(epochs[-1] + 3))


def test_a_signal_inside_a_write_is_raised_once_the_file_is_complete(tmp_path):
    from marginrobust.io import atomic_write_text

    previous = stopping.install()
    try:
        def write_and_signal(fh):
            os.kill(os.getpid(), signal.SIGTERM)
            fh.write(b"complete\n")

        import marginrobust.io as mio

        with pytest.raises(stopping.Stopped) as info:
            mio.atomic_write(tmp_path / "f.txt", write_and_signal)
        assert info.value.exit_code == 128 + signal.SIGTERM
        assert (tmp_path / "f.txt").read_text() == "complete\n"
        atomic_write_text(tmp_path / "g.txt", "no signal pending any more")
    finally:
        stopping.restore(previous)
