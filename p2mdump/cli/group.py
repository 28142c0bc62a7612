"""The click group of the ``p2mdump`` command line.

Each command lives in a module of its own and is registered in
:data:`COMMANDS`; errors the library raises on purpose become a one-line
``error:`` message and a fixed exit code, never a traceback
(:mod:`p2mdump.cli.running`, shared with the click-free fast path).
"""
from __future__ import annotations

import importlib
import sys

import click

from ..errors import EXIT_USAGE
from ..stdio import guard_closed_stdout
from .common import EXIT_CODES_HELP
from .running import invoke_command, run_command

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
        mod = importlib.import_module(f"{__package__}.{module}")
        return getattr(mod, name.replace("-", "_"))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             windows_expand_args=True, **extra):
        """Run the command; every failure ends as one ``error:`` line (always
        in click's non-standalone mode, whatever ``standalone_mode`` says)."""
        args = sys.argv[1:] if args is None else list(args)
        if not args:
            guard_closed_stdout()
            click.echo(SHORT_USAGE, err=True)
            sys.exit(EXIT_USAGE)

        def call():
            try:
                return super(P2MGroup, self).main(
                    args, prog_name, complete_var, standalone_mode=False,
                    windows_expand_args=windows_expand_args, **extra)
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

        run_command(call)

    def invoke(self, ctx):
        return invoke_command(
            lambda: super(P2MGroup, self).invoke(ctx),
            lambda: ctx.invoked_subcommand or ctx.info_name or "the command",
            passthrough=(click.ClickException, click.exceptions.Exit, click.Abort))


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
