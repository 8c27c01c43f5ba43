"""The small pieces every layer shares: atomic files, append-only JSON lines, the device,
the ``run.json`` reader and the list of splits.

It sits at the bottom of the package (it imports nothing of marginrobust but ``errors``,
and torch only inside :func:`resolve_device`), so data, training, evaluation and
reporting all take these from here rather than from each other.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import UserError
from .stopping import critical

if TYPE_CHECKING:
    import torch

RUN_FILE = "run.json"
SPLITS = ("test", "train")

_UMASK: int | None = None


def _umask() -> int:
    """The process umask (read once; ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so readers see the old or the new content, never a torn one.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the
    file is renamed over ``path`` (an atomic rename on POSIX and Windows). The file gets
    the permissions of the user's umask, like any file Python opens (``mkstemp`` alone
    would leave 0600, which hides a published leaderboard from a web server).

    A stop signal (:mod:`.stopping`) arriving meanwhile is raised once the file is
    complete; a failed write (a full disk) leaves the old file and no temporary one.
    """
    path = Path(path)
    with critical():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 string."""
    data = text.encode()
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON, atomically (no NaN or infinity: JSON has none)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def repair_torn_tail(path: str | Path) -> bool:
    """Cut a torn last line (one without a newline) off an append-only file.

    A process killed in the middle of an append leaves such a line; appending after it
    would glue the next record onto it and lose both. Returns whether anything was cut.
    """
    path = Path(path)
    if not path.exists():
        return False
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return False
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return False
        # Find the last newline, reading backwards in blocks.
        pos, keep = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def append_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Append lines (each without its newline) to an append-only file, durably.

    A torn last line left by a killed writer is repaired first. The file is created
    with the umask's permissions if absent.
    """
    path = Path(path)
    text = "".join(line + "\n" for line in lines)
    with critical():
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            data = memoryview(text.encode())
            try:
                # Unbuffered, so that nothing is left to flush after a failure.
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except OSError:
                # A full disk may have taken part of the lines: cut them all off again,
                # so the file holds what it held before (truncating needs no space).
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def read_jsonl(path: str | Path, on_corrupt: str = "error") -> list[dict[str, Any]]:
    """The objects of a JSON-lines file, stopping at nothing silently.

    A torn last line (no newline at its end and not valid JSON) is what a killed append
    leaves; it is dropped, since its figure is redone. A corrupt line anywhere else is
    damage that no writer of this package leaves.

    Args:
        path: The file (absent: an empty list).
        on_corrupt: ``error`` raises a :class:`UserError` naming the file and line;
            ``warn`` skips such lines, prints one warning on stderr and counts them.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn_tail = not raw.endswith(b"\n")
    out: list[dict[str, Any]] = []
    bad: list[int] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            if torn_tail and i == len(lines) - 1:
                continue
            if on_corrupt == "error":
                raise UserError(f"{path} line {i + 1} is not a JSON record (the file is "
                                "damaged; remove or repair that line)") from None
            bad.append(i + 1)
            continue
        out.append(obj)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        print(f"Warning: skipped {len(bad)} corrupt line(s) of {path} (line {shown})",
              file=sys.stderr)
    return out


def read_run_json(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of a run directory (None if absent).

    Raises:
        UserError: the file exists but is not JSON.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON (the file is damaged)") from None


def parse_splits(splits: str | Sequence[str]) -> tuple[str, ...]:
    """``"test,train"`` (or a sequence) → a tuple of known split names, in the given order.

    Raises:
        UserError: an unknown or repeated split, or none at all.
    """
    names = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
    names = [s for s in names if s]
    if not names:
        raise UserError("give at least one split: test, train or test,train")
    for s in names:
        if s not in SPLITS:
            raise UserError(f"split must be test or train, not {s!r}")
    if len(set(names)) != len(names):
        raise UserError(f"a split is repeated in {','.join(names)!r}")
    return tuple(names)


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; a clear error for an absent cuda."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None
