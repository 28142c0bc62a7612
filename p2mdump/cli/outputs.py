"""Where a command's results go: ``-o PATH`` (atomically) or stdout, side
JSON files, and a progress bar on a terminal.

Click-free on purpose (click only draws the progress bar, imported when one
is shown): the console script's fast path runs commands without click
(:mod:`p2mdump.cli.fastpath`).
"""
from __future__ import annotations

import contextlib
import os
import sys

from .running import CLIError

TYPE_CHECKING = False  # neither typing nor click is imported at run time for this
if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


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


def with_outputs(image: str, outputs: dict, work) -> None:
    """Run ``work()``, the work of a command on ``image`` writing ``outputs``
    ({option: path or None}): the outputs are checked first (against each
    other, the image and its sidecar: :func:`p2mdump.atomic.check_outputs`),
    and all of them are committed together when the work is done, or none."""
    from ..atomic import check_outputs, output_transaction
    from ..sidecar import sidecar_path

    check_outputs(outputs, inputs=(image, sidecar_path(image)))
    with output_transaction():
        work()


def write_json_file(path: str, data) -> None:
    import json

    if path == "-":
        import click

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
            import click

            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.last)
        self.last = done

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
