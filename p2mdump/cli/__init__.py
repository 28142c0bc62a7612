"""The ``p2mdump`` command line: a thin layer over the Python API.

Each command lives in a module of its own and is registered in
:data:`COMMANDS`; errors the library raises on purpose become a one-line
``error:`` message and a fixed exit code, never a traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import EXIT_INTERNAL, EXIT_MEMORY, P2MDumpError
from .common import EXIT_CODES_HELP, CLIError

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


class P2MGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, name.replace("-", "_"))

    def main(self, args=None, prog_name=None, **extra):
        """Run the command; every failure ends as one ``error:`` line."""
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
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
        except BrokenPipeError:
            _quiet_broken_pipe()
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: no traceback unless asked for
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


def _quiet_broken_pipe():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


@click.group(cls=P2MGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.version_option(package_name="p2mdump", prog_name="p2mdump")
def main():
    """Rebuild and check the p2m (pfn -> mfn) table of a Xen PV guest from a memory image.

    A PV guest publishes its p2m as a three-level tree of pages: the top page
    (p2m_top_mfn, shared_info arch.pfn_to_mfn_frame_list_list) names mid pages,
    which name leaf pages of pfn -> mfn entries.  Start with

    \b
      p2mdump walk IMAGE --top-mfn 0x1234
      p2mdump generate guest.img --memory 1G --truth guest.truth
    """
