"""The exception hierarchy of p2mdump.

Every error the library raises on purpose derives from :class:`P2MDumpError`
and carries the process exit code the CLI uses for it, so a script can tell
"bad image" from "bad tree" from "cannot write the output".
"""
from __future__ import annotations

#: Exit codes of the command line tool (also listed in ``p2mdump --help``).
EXIT_OK = 0
EXIT_FINDINGS = 1      # --strict / verify: the tree has warnings
EXIT_USAGE = 2         # bad options (click's own code)
EXIT_IMAGE = 3         # the image cannot be used: missing, empty, unreadable, unknown container
EXIT_TREE = 4          # no usable p2m tree at the given place: top page unreadable, wrong word size
EXIT_OUTPUT = 5        # an output file cannot be written
EXIT_MEMORY = 6        # not enough memory for the work asked for
EXIT_INTERNAL = 70     # a bug: please report it


class P2MDumpError(Exception):
    """Base class of every error p2mdump raises on purpose."""

    exit_code = EXIT_INTERNAL


class ImageError(P2MDumpError):
    """The image file cannot be opened or is not a usable memory image."""

    exit_code = EXIT_IMAGE


class ContainerError(ImageError):
    """The image's container (ELF core, xc_core, ...) is malformed."""


class TreeError(P2MDumpError):
    """There is no usable p2m tree where we were told to look."""

    exit_code = EXIT_TREE


class LayoutError(TreeError):
    """Parameters that do not fit the tree geometry (word size, max_pfn, ...)."""


class SpecError(P2MDumpError):
    """A generator layout spec that cannot be built."""

    exit_code = EXIT_USAGE


class OptionError(P2MDumpError):
    """An option whose value does not fit the input it is used on, which only
    reading the input shows: refused before anything is written."""

    exit_code = EXIT_USAGE


class OutputError(P2MDumpError):
    """An output file cannot be written."""

    exit_code = EXIT_OUTPUT


class OutputConflict(P2MDumpError):
    """An output names an input of the command, or another output: refused
    before anything is written."""

    exit_code = EXIT_USAGE
