"""How a command runs once its options are known: what it prints on the
way, and how whatever it raises ends (one ``error:`` line and a fixed exit
code, never a traceback).

Shared by the click group (:mod:`p2mdump.cli.group`) and the console
script's click-free fast path (:mod:`p2mdump.cli.fastpath`), so both end a
command the same way.  Click-free on purpose: click is imported only to
print (``click.echo``, as the click commands do), which a quiet command
that succeeds never does.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from ..errors import EXIT_INTERNAL, EXIT_MEMORY, P2MDumpError
from ..stdio import guard_closed_stdout, is_output_error, output_failure


def echo_err(line: str) -> None:
    """One line on stderr, written as the click commands write it."""
    import click

    click.echo(line, err=True)


class CLIError(Exception):
    """A one-line ``error: ...`` with a fixed exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def format_message(self) -> str:
        return self.message

    def show(self) -> None:
        echo_err(f"error: {self.format_message()}")


#: informational stderr lines of the running command, held back by :func:`note`
_NOTES: list = []


def note(line: str) -> None:
    """An informational line for stderr (``p2mdump: ...``), held back until
    the command has succeeded (:func:`flush_notes`), so that it never comes
    before an ``error:`` line; a failing command prints the error alone."""
    _NOTES.append(line)


def flush_notes() -> None:
    """Print the notes held back so far (the command has succeeded)."""
    while _NOTES:
        echo_err(f"p2mdump: {_NOTES.pop(0)}")


def drop_notes() -> None:
    """Forget the notes held back (the command failed, or a new one starts)."""
    _NOTES.clear()


def run_command(call):
    """Run a whole command line (``call()``, its return value the exit code
    or None for 0) with SIGTERM and SIGHUP turned into :class:`Terminated`,
    then flush the notes and stdout; never returns.  A :class:`CLIError`, a
    termination signal and a failing output each end as one ``error:`` line
    (or quietly, for a reader gone away) with their exit code."""
    drop_notes()
    guard_closed_stdout()
    try:
        with _termination_signals():
            rv = call()
            flush_notes()
            sys.stdout.flush()  # a full disk or a closed stdout shows here, not at exit
    except Terminated as exc:
        drop_notes()
        echo_err(f"error: terminated by {signal.Signals(exc.signum).name}")
        sys.exit(exc.code)
    except CLIError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if not is_output_error(exc):
            raise
        exit_output_failure(exc)
    sys.exit(rv if isinstance(rv, int) else 0)


def invoke_command(call, command_name, passthrough: tuple = ()):
    """``call()``, a command's work, with what it raises turned into a
    :class:`CLIError` (or an exit: Ctrl-C, a failing output); the exception
    types in ``passthrough`` (the click group's own) pass as they are.
    ``command_name()`` names the command in a memory error."""
    try:
        return call()
    except P2MDumpError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    except passthrough + (CLIError,):
        raise
    except MemoryError as exc:
        raise CLIError(_memory_message(command_name(), exc), EXIT_MEMORY) from None
    except KeyboardInterrupt:
        echo_err("error: interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: no traceback unless asked for
        if is_output_error(exc):
            exit_output_failure(exc)
        if os.environ.get("P2MDUMP_DEBUG"):
            raise
        raise CLIError(f"internal error: {type(exc).__name__}: {exc} "
                       "(set P2MDUMP_DEBUG=1 for a traceback)", EXIT_INTERNAL) from None


def _memory_message(name: str, exc: MemoryError) -> str:
    """The one line for a MemoryError: which command ran out, and numpy's
    size when it gave one (no traceback: an oversized claim is caught by the
    bounds checks; what gets here is a genuinely large job)."""
    detail = str(exc).strip()
    detail = detail.replace("Unable to allocate", "could not allocate") if detail else ""
    return (f"not enough memory for {name}" + (f" ({detail})" if detail else "")
            + "; a smaller --max-pfn or a machine with more memory may help")


def exit_output_failure(exc: OSError):
    """A reader that went away: quiet exit 0; stdout full or closed: exit 5."""
    drop_notes()
    message, code = output_failure(exc)
    if message is not None:
        echo_err(f"error: {message}")
    sys.exit(code)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP arrived: raised in the main thread like
    KeyboardInterrupt for Ctrl-C, so every ``with`` block unwinds (removing
    unfinished ``.part`` outputs) before the process exits with 128+signum."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _terminate(signum, frame):
    # the first signal starts the unwinding; more of them must not interrupt it
    for sig in _TERMINATION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


_TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                             if hasattr(signal, name))


@contextlib.contextmanager
def _termination_signals():
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while a command runs
    (signals ignored by the parent, as under nohup, stay ignored)."""
    old = {}
    try:
        for sig in _TERMINATION_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, _terminate)
    except ValueError:  # not the main thread: leave the signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
