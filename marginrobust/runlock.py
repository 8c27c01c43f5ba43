"""One writer per run folder (or leaderboard folder): an advisory lock the OS releases.

Every command that writes a run (``train``, ``eval``, ``bench``) or a board
(``leaderboard``) holds :func:`hold` on its folder for as long as it writes. The lock is a
``fcntl.flock`` on ``FOLDER/.marginrobust.lock``: the kernel drops it when its process
dies, however it dies (SIGKILL, a node lost), so a killed writer never leaves a stale
lock behind, and a rerun of the same command takes it at once. A second writer is refused
with one sentence naming the holder (pid, host, command, since when), which the holder
wrote into the lock file once it had the lock. The file is removed when its command ends
(a killed writer leaves it, unlocked, for the next one to take).

Readers (``leaderboard`` building from runs it does not write, ``compare``) take no lock:
every file they read is replaced atomically.

Under a launcher (``torchrun``) the ranks of one job share one lock: rank 0 holds it for
the job, the other ranks take none (rank 0 alone writes the shared files, and a job whose
rank 0 is refused ends all its ranks).

The lock is re-entrant within a process (``bench`` trains, evaluates and publishes under
one lock), and a folder that cannot be written at all (a read-only mount, no permission)
is held without a lock file: nobody else can write it either, and any write that is
actually needed then fails with its own sentence.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from . import distributed
from .errors import UserError

LOCK_FILE = ".marginrobust.lock"

# Folders this process holds: resolved path → [open lock file or None, depth, whether
# acquire made the folder].
_HELD: dict[Path, list[object]] = {}


class RunBusy(UserError):
    """Another process writes this folder now."""


def _command() -> str:
    """The command line of this process, as a user would recognise it."""
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return " ".join(argv)


def _holder_text(fh: IO[str]) -> str:
    """Who holds a lock, from what the holder wrote into the file."""
    try:
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')!r}, "
            f"since {since})")


def _open_lock(folder: Path) -> tuple[IO[str] | None, bool]:
    """The lock file of ``folder``, opened for writing (None where it cannot be created
    because the folder is read-only or not ours to write), and whether the folder was
    made here."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and folder.is_dir():
            return None, False
        raise
    return os.fdopen(fd, "r+"), created


def acquire(folder: str | Path, what: str = "run") -> None:
    """Take the write lock of ``folder`` (created if absent) or refuse in one sentence.

    Args:
        folder: The run or leaderboard folder.
        what: How the refusal names the folder (``run``, ``leaderboard``).

    Raises:
        RunBusy: Another process holds the lock (the message names it).
    """
    key = Path(folder).resolve()
    if key in _HELD:
        _HELD[key][1] = int(_HELD[key][1]) + 1  # type: ignore[call-overload]
        return
    if not distributed.is_main_process():
        _HELD[key] = [None, 1, False]
        return
    fh, created = _open_lock(key)
    while fh is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()
                raise
            holder = _holder_text(fh)
            fh.close()
            raise RunBusy(f"the {what} in {folder} is being written by {holder}; wait for "
                          "it to finish or stop it, then rerun this command") from None
        if _still_there(key, fh):
            break
        # The previous holder removed the file between our open and our lock: the lock
        # we hold is on a file nobody else will open. Take the new file instead.
        fh.close()
        fh, _ = _open_lock(key)
    if fh is not None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                "since": time.time()}
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(info) + "\n")
            fh.flush()
        except OSError:
            pass  # the lock holds without its label (a full disk cannot take 100 bytes)
    _HELD[key] = [fh, 1, created]


def release(folder: str | Path) -> None:
    """Give back one :func:`acquire` of ``folder``; the lock goes with the last one."""
    key = Path(folder).resolve()
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] = int(entry[1]) - 1  # type: ignore[call-overload]
    if int(entry[1]) > 0:  # type: ignore[call-overload]
        return
    del _HELD[key]
    fh = entry[0]
    if fh is None:
        return
    # Removed while still held, so a folder is left as the command found it or wrote it;
    # a process that opened the file meanwhile sees it gone once it has the lock.
    try:
        (key / LOCK_FILE).unlink()
    except OSError:
        pass
    fh.close()  # type: ignore[attr-defined]  # closing drops the flock
    if entry[2]:
        # A folder made here that holds nothing (a command refused before it wrote
        # anything) is not left behind as a half-made run.
        try:
            key.rmdir()
        except OSError:
            pass


def _still_there(folder: Path, fh: IO[str]) -> bool:
    """Whether the locked file is still the lock file of ``folder``."""
    try:
        return os.stat(folder / LOCK_FILE).st_ino == os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return False


def held(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return Path(folder).resolve() in _HELD


@contextmanager
def hold(folder: str | Path, what: str = "run") -> Iterator[None]:
    """:func:`acquire` for the duration of a ``with`` block."""
    acquire(folder, what)
    try:
        yield
    finally:
        release(folder)
