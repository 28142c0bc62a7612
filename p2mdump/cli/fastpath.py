"""Commands the console script runs without click.

Importing click and building its commands costs ~10 ms, a good part of a
small guest's whole ``walk``.  A ``walk`` command line of the plain forms
(:func:`p2mdump.cli.options.parse`: the options walk declares, each at most
once, values click would take) is parsed here from the same declarations and
run by the same code as the click command (:func:`p2mdump.cli.walkrun.walk`),
which ends the same way (:mod:`p2mdump.cli.running`); anything else (help,
an unknown option, a bad value) goes to click, which gives the messages.
Click-free: click is imported only when something is printed.
"""
from __future__ import annotations

from .options import WALK_OPTIONS, parse
from .running import invoke_command, run_command


def walk(argv) -> None:
    """Run ``p2mdump walk ARGV`` (never returns) when it has a plain form;
    return None otherwise."""
    params = parse(argv, WALK_OPTIONS)
    if params is None:
        return

    def call():
        from .walkrun import walk as run

        return invoke_command(lambda: run(**params), lambda: "walk")

    run_command(call)
