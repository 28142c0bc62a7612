"""The ``p2mdump`` command line: a thin layer over the Python API.

Each command lives in a module of its own and is registered in
:data:`COMMANDS`; errors the library raises on purpose become a one-line
``error:`` message and a fixed exit code, never a traceback.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

import click

from ..errors import EXIT_INTERNAL, EXIT_MEMORY, EXIT_USAGE, P2MDumpError
from ..stdio import guard_closed_stdout, is_output_error, output_failure
from .common import EXIT_CODES_HELP, CLIError, drop_notes, flush_notes

#: command name -> module (in p2mdump.cli) defining a click command of that name
COMMANDS = {
    "walk": "walk",
    "generate": "generate",
    "info": "info",
    "extract": "extract",
    "scan": "scan",
    "lookup": "lookup",
    "verify": "verify",
    "diff": "diff",
    "map": "map",
}

#: what a bare ``p2mdump`` prints (the whole help is ``p2mdump --help``)
SHORT_USAGE = f"""\
error: no command given
usage: p2mdump COMMAND IMAGE [OPTIONS]   (commands: {', '.join(sorted(COMMANDS))})
'p2mdump --help' describes them, 'p2mdump COMMAND --help' the options of one."""


class P2MGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, name.replace("-", "_"))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             windows_expand_args=True, **extra):
        """Run the command; every failure ends as one ``error:`` line (always
        in click's non-standalone mode, whatever ``standalone_mode`` says)."""
        args = sys.argv[1:] if args is None else list(args)
        drop_notes()
        guard_closed_stdout()
        if not args:
            click.echo(SHORT_USAGE, err=True)
            sys.exit(EXIT_USAGE)
        try:
            with _termination_signals():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
                flush_notes()
                sys.stdout.flush()  # a full disk or a closed stdout shows here, not at exit
        except Terminated as exc:
            drop_notes()
            click.echo(f"error: terminated by {signal.Signals(exc.signum).name}", err=True)
            sys.exit(exc.code)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except OSError as exc:
            if not is_output_error(exc):
                raise
            _exit_output_failure(exc)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except P2MDumpError as exc:
            raise CLIError(str(exc), exc.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except MemoryError as exc:
            raise CLIError(_memory_message(ctx, exc), EXIT_MEMORY) from None
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: no traceback unless asked for
            if is_output_error(exc):
                _exit_output_failure(exc)
            if os.environ.get("P2MDUMP_DEBUG"):
                raise
            raise CLIError(f"internal error: {type(exc).__name__}: {exc} "
                           "(set P2MDUMP_DEBUG=1 for a traceback)", EXIT_INTERNAL) from None


def _memory_message(ctx, exc: MemoryError) -> str:
    """The one line for a MemoryError: which command ran out, and numpy's
    size when it gave one (no traceback: an oversized claim is caught by the
    bounds checks; what gets here is a genuinely large job)."""
    sub = ctx.invoked_subcommand or ctx.info_name or "the command"
    detail = str(exc).strip()
    detail = detail.replace("Unable to allocate", "could not allocate") if detail else ""
    return (f"not enough memory for {sub}" + (f" ({detail})" if detail else "")
            + "; a smaller --max-pfn or a machine with more memory may help")


def _exit_output_failure(exc: OSError):
    """A reader that went away: quiet exit 0; stdout full or closed: exit 5."""
    drop_notes()
    message, code = output_failure(exc)
    if message is not None:
        click.echo(f"error: {message}", err=True)
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


@click.group(cls=P2MGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.version_option(package_name="p2mdump", prog_name="p2mdump")
def main():
    """Rebuild and check the p2m (pfn -> mfn) table of a Xen PV guest from a memory image.

    A PV guest publishes its p2m as a three-level tree of pages (the top page,
    p2m_top_mfn, is shared_info arch.pfn_to_mfn_frame_list_list; it names mid
    pages, which name leaf pages of pfn -> mfn entries), or -- every modern
    Linux PV domU -- only as a linear list mapped by its own page tables
    (shared_info arch.p2m_cr3 and arch.p2m_vaddr).  Start with

    \b
      p2mdump walk IMAGE --top-mfn 0x1234
      p2mdump walk IMAGE --p2m-cr3 0x5000 --p2m-vaddr 0xffffc90000000000 --max-pfn N
      p2mdump walk DUMP.core              (an xl dump-core names tree or list itself)
      p2mdump scan IMAGE                  (find trees and lists with no hint)
      p2mdump generate guest.img --memory 1G --truth guest.truth
    """
