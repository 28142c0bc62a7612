"""Standard output that fails: a reader that went away, a full disk, a
closed descriptor.

Shared by the click commands and the click-free lookup fast path
(:mod:`p2mdump.launcher`), so both end such a failure the same way: a
closed pipe (``p2mdump walk ... | head``) quietly, anything else with one
``error:`` line and exit 5, never a traceback or Python's "Exception
ignored" at exit.  Light on purpose: the standard library only.
"""
from __future__ import annotations

import errno
import io
import os
import sys

TYPE_CHECKING = False  # typing is not imported at run time: the fast path stays light
if TYPE_CHECKING:
    from typing import TypeGuard

#: errno values that mean "the output cannot be written", not "the input is bad"
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EBADF})


class _ClosedStream(io.RawIOBase):
    """Stands for a standard output the process was started without (``>&-``):
    writing to it fails as writing to a closed descriptor does."""

    def writable(self) -> bool:
        return True

    def write(self, data):
        raise OSError(errno.EBADF, "standard output is closed")


def guard_closed_stdout() -> None:
    """When the process was started with stdout closed (Python then sets
    ``sys.stdout`` to None and prints nothing), make writes to it fail
    instead of vanishing, so the command reports it."""
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedStream()), write_through=True)


def is_output_error(exc: BaseException) -> TypeGuard[OSError]:
    """True when ``exc`` says an output cannot be written."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit has
    nothing to fail on (and drop what is still buffered)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- lives until exit


def output_failure(exc: OSError) -> tuple[str | None, int]:
    """(error message or None for a quiet exit, exit code) for an output
    error; stdout is silenced either way."""
    from .errors import EXIT_OK, EXIT_OUTPUT

    silence_stdout()
    if isinstance(exc, BrokenPipeError):
        return None, EXIT_OK
    return f"cannot write the output: {exc.strerror or exc}", EXIT_OUTPUT
