"""The ``marginrobust`` command group and what every command shares: failures a user can
act on as one sentence with an exit code, and warnings on one line.

Only click and the package's torch-free modules are imported by the command line; every
command imports torch, timm, foolbox, pandas or matplotlib once its arguments are parsed,
so ``--help`` and a one-line error answer at once.
"""

from __future__ import annotations

import errno
import os
import warnings
from typing import Any

import click

from ..errors import UserError

__all__ = ["FAULT_EXIT", "CliGroup", "fault_sentence", "main"]


# OS faults that a user can mend (space, quota, permissions): one sentence and exit 1.
_FAULT_ADVICE = {
    errno.ENOSPC: "free some space and rerun the same command to continue",
    errno.EDQUOT: "free some space (or raise the quota) and rerun the same command to continue",
    errno.EROFS: "the file system is read-only; use a writable folder",
    errno.EACCES: "you may not write there; fix its permissions or use another folder",
    errno.EPERM: "you may not write there; fix its permissions or use another folder",
}
FAULT_EXIT = 1


def fault_sentence(exc: OSError) -> str | None:
    """One sentence for an OS fault a user can mend (None for any other error)."""
    advice = _FAULT_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return (f"could not write{where}: {exc.strerror or os.strerror(exc.errno or 0)}; "
            f"{advice} (every file written before is complete)")


class CliGroup(click.Group):
    """Turns failures a user can act on into one sentence: a :class:`UserError` exits 2,
    an OS fault while writing (full disk, read-only folder) exits 1, and a stop signal
    (Ctrl-C, SIGTERM) says where the command stopped and exits 130 or 143."""

    def invoke(self, ctx: click.Context) -> Any:
        from .. import stopping

        previous = stopping.install()
        stopping.note("")
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            sentence = fault_sentence(exc)
            if sentence is None:
                raise
            click.echo(f"Error: {sentence}", err=True)
            ctx.exit(FAULT_EXIT)
        except stopping.Stopped as exc:
            at = stopping.where()
            click.echo(f"Stopped by {exc}{' ' + at if at else ''}; rerun the same command "
                       "to continue where it stopped.", err=True)
            ctx.exit(exc.exit_code)
        finally:
            stopping.restore(previous)




@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="marginrobust")
def main() -> None:
    """Train homogeneous networks far past fitting and measure how their normalized
    margin and adversarial robustness move together (Lyu & Li, ICLR 2020)."""
    # A program, not a library: warnings read as one line, without file and source line.
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None, **_: Any) -> str:
    return f"Warning: {message}\n"
