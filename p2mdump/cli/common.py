"""Shared pieces of the click commands: number and size types, the exit codes' help."""
from __future__ import annotations

import click

from .options import WORD_SIZE, Option, parse_number

EXIT_CODES_HELP = """\b
Exit codes:
  0   success
  1   the tree has warnings (with --strict) / verify found a problem
  2   usage error (bad option or value)
  3   the image cannot be used (missing, empty, directory, not seekable,
      unknown or malformed container)
  4   no usable p2m there (top page unreadable or not a p2m page, wrong
      word size, --max-pfn beyond the tree's capacity; a list whose pages
      the page tables do not map, a list range that is not canonical)
  5   an output file cannot be written
  6   not enough memory for the work asked for
  70  internal error (a bug; set P2MDUMP_DEBUG=1 for a traceback)
  129/130/143  stopped by SIGHUP / SIGINT / SIGTERM (unfinished outputs removed)"""

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Number(click.ParamType):
    """A non-negative integer in decimal or 0x-hex (also 0o / 0b, and _
    separators).  Every number option of p2mdump (frames, addresses, counts,
    offsets, seeds) is unsigned, so a negative one is a usage error here, with
    the same message and exit code (2) for every option."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            number = value
        else:
            try:
                number = parse_number(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a number (decimal or 0x-hex)", param, ctx)
        if number < 0:
            self.fail(f"{value!r} is negative; a non-negative number is needed", param, ctx)
        return number


class Size(click.ParamType):
    """A byte size: a number with an optional K/M/G/T suffix (powers of 1024)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().replace("_", "").rstrip("ib").rstrip("b")
        mult = 1
        if text and text[-1] in _SUFFIXES:
            mult = _SUFFIXES[text[-1]]
            text = text[:-1]
        try:
            size = int(text, 0) * mult
        except ValueError:
            self.fail(f"{value!r} is not a size (e.g. 4G, 512M, 0x1000)", param, ctx)
        if size < 0:
            self.fail(f"{value!r} is negative; a size is not", param, ctx)
        return size


NUMBER = Number()
SIZE = Size()


def option(spec: Option, **shown):
    """The click option of a declaration of :mod:`p2mdump.cli.options`; how
    the help shows it (help, metavar, show_default) is given here."""
    kind: dict = {"default": spec.default}
    if spec.kind == "flag":
        kind = {"is_flag": True}
    elif spec.kind == "number":
        kind["type"] = NUMBER
    elif spec.kind == "choice":
        kind["type"] = click.Choice(spec.choices)
    return click.option(*spec.flags, spec.dest, **kind, **shown)


def word_size_option(f):
    return option(
        WORD_SIZE, show_default=True,
        help="Guest word size in bytes: 8 (x86_64, 512 entries a page), "
             "4 (i386 PAE, 1024 entries a page) or auto (detect from the top and mid pages).",
    )(f)
