"""Shared pieces of the click commands: number parsing, errors, outputs."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


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


class CLIError(click.ClickException):
    """A one-line ``error: ...`` with a fixed exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        # click reads exit_code from the exception; its stubs (8.5+) declare it a
        # ClassVar, but one class serves every code here, so it is set per instance
        setattr(self, "exit_code", exit_code)  # noqa: B010

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


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
        click.echo(f"p2mdump: {_NOTES.pop(0)}", err=True)


def drop_notes() -> None:
    """Forget the notes held back (the command failed, or a new one starts)."""
    _NOTES.clear()


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
            text = str(value).strip().replace("_", "")
            try:
                number = int(text, 0)
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


def word_size_option(f):
    return click.option(
        "--word-size", type=click.Choice(["auto", "4", "8"]), default="auto", show_default=True,
        help="Guest word size in bytes: 8 (x86_64, 512 entries a page), "
             "4 (i386 PAE, 1024 entries a page) or auto (detect from the top and mid pages).",
    )(f)


def ws_value(word_size: str):
    return "auto" if word_size == "auto" else int(word_size)


@contextlib.contextmanager
def output_stream(path: str | None, binary: bool):
    """A binary file object for ``-o PATH`` (atomic) or stdout (``-`` / None)."""
    if path in (None, "-"):
        stream = sys.stdout.buffer
        if binary and sys.stdout.isatty():
            raise CLIError("refusing to write binary output to a terminal; use -o PATH "
                           "or a pipe", 2)
        yield stream
        stream.flush()
        return
    from ..atomic import atomic_output

    with atomic_output(path, "wb") as fh:
        yield fh


def write_json_file(path: str, data) -> None:
    import json

    if path == "-":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from ..atomic import atomic_output

    with atomic_output(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


class Progress:
    """A click progress bar on stderr, shown only on a terminal."""

    def __init__(self, label: str, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty() and not os.environ.get("P2MDUMP_NO_PROGRESS")
        self.label = label
        self.bar: ProgressBar[int] | None = None
        self.last = 0

    def __call__(self, done: int, total: int):
        if not self.enabled or total < 4096:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.last)
        self.last = done

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
