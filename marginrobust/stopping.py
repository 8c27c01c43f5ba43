"""Stopping on SIGINT (Ctrl-C) and SIGTERM (what SLURM and ``kill`` send) without losing work.

The command line installs :func:`install`: a signal then raises :class:`Stopped` in the
main thread, except inside a :func:`critical` section (an atomic file write, an append to a
results file), which is finished first and raises on leaving. Every file of a run is
written that way, so a stopped command leaves each file old or new, never torn, and the
same command continues where it stopped.

Long loops say where they are with :func:`note` ("epoch 120", "3 of 8 units"), so the
one line printed on stopping can say so.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Stopped", "critical", "install", "note", "restore", "where"]

_STATE: dict[str, object] = {"depth": 0, "pending": None, "where": ""}


class Stopped(BaseException):
    """A stop signal arrived; like KeyboardInterrupt, not an error of the program.

    Attributes:
        signum: The signal's number (``signal.SIGINT``, ``signal.SIGTERM``).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    if int(_STATE["depth"]) > 0:  # type: ignore[call-overload]
        _STATE["pending"] = signum  # finish the write first; raised on leaving it
        return
    raise Stopped(signum)


def install() -> dict[int, Any]:
    """Raise :class:`Stopped` on SIGINT and SIGTERM (main thread only; elsewhere a no-op).

    Returns:
        The handlers it replaced, for :func:`restore`.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextmanager
def critical() -> Iterator[None]:
    """A block that a stop signal does not interrupt; the signal is raised after it."""
    _STATE["depth"] = int(_STATE["depth"]) + 1  # type: ignore[call-overload]
    try:
        yield
    finally:
        _STATE["depth"] = int(_STATE["depth"]) - 1  # type: ignore[call-overload]
        pending = _STATE["pending"]
        if pending is not None and _STATE["depth"] == 0:
            _STATE["pending"] = None
            raise Stopped(int(pending))  # type: ignore[call-overload]


def note(text: str) -> None:
    """Record where a long command is (``"epoch 120"``), for the line printed on stopping."""
    _STATE["where"] = text


def where() -> str:
    """The last :func:`note` (empty before any)."""
    return str(_STATE["where"])
