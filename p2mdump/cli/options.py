"""What the options of the tree commands, ``walk`` and ``lookup`` are: their
flags, the parameter each fills, what it takes and its default -- declared
once.

The click commands build their options from these declarations (adding the
help text, :func:`p2mdump.cli.common.option`); the console script's fast
paths parse the plain forms of a command line with them, without click
(:func:`parse`).  Click-free and light on purpose.
"""
from __future__ import annotations

from ..sources.detect import CONTAINERS


def parse_number(text: str) -> int:
    """An integer in decimal or 0x-hex (also 0o / 0b, and _ separators), as
    every number option takes it; ValueError when it is none."""
    return int(text.strip().replace("_", ""), 0)


class Option:
    """One option: ``flags`` ("--top-mfn", or "-o", "--output"), the parameter
    ``dest`` it fills (the last flag's name by default), its ``kind``
    ("number": non-negative, "choice", "flag" or "text") and default."""

    __slots__ = ("flags", "dest", "kind", "choices", "default")

    def __init__(self, *flags: str, dest: str | None = None, kind: str = "text",
                 choices: tuple = (), default=None):
        self.flags = flags
        self.dest = dest or flags[-1].lstrip("-").replace("-", "_")
        self.kind = kind
        self.choices = choices
        self.default = False if kind == "flag" else default

    def value(self, text: str):
        """The value of ``text`` as click gives it, or None when click should
        judge it (a bad number or choice, a text that looks like an option)."""
        if self.kind == "number":
            try:
                number = parse_number(text)
            except ValueError:
                return None
            return number if number >= 0 else None
        if self.kind == "choice":
            return text if text in self.choices else None
        return text if text == "-" or not text.startswith("-") else None


# -- where the p2m is (the tree commands) --------------------------------------------------------
TOP_MFN = Option("--top-mfn", kind="number")
WORD_SIZE = Option("--word-size", kind="choice", choices=("auto", "4", "8"), default="auto")
MAX_PFN = Option("--max-pfn", kind="number")
BASE = Option("--base", kind="number", default=0)
CONTAINER = Option("--container", kind="choice", choices=CONTAINERS, default="auto")
REPRESENTATION = Option("--representation", kind="choice", choices=("auto", "tree", "list"),
                        default="auto")
P2M_CR3 = Option("--p2m-cr3", kind="number")
P2M_VADDR = Option("--p2m-vaddr", kind="number")
FIVE_LEVEL = Option("--five-level", kind="flag")

#: in the order the commands' help lists them
TREE_OPTIONS = (TOP_MFN, WORD_SIZE, MAX_PFN, BASE, CONTAINER, REPRESENTATION, P2M_CR3,
                P2M_VADDR, FIVE_LEVEL)

# -- walk's own ---------------------------------------------------------------------------------
WALK_FORMAT = Option("--format", dest="fmt", kind="choice",
                     choices=("ranges", "table", "csv", "jsonl", "raw", "npy"), default="ranges")
WALK_OUTPUT = Option("-o", "--output")
WALK_SUMMARY_JSON = Option("--summary-json")
WALK_STRICT = Option("--strict", kind="flag")
WALK_QUIET = Option("-q", "--quiet", kind="flag")

WALK_OPTIONS = TREE_OPTIONS + (WALK_FORMAT, WALK_OUTPUT, WALK_SUMMARY_JSON, WALK_STRICT,
                               WALK_QUIET)


# -- lookup's own -------------------------------------------------------------------------------
LOOKUP_PFN = Option("--pfn", kind="number")
LOOKUP_MFN = Option("--mfn", kind="number")
LOOKUP_PADDR = Option("--paddr", kind="number")
LOOKUP_MADDR = Option("--maddr", kind="number")
LOOKUP_VADDR = Option("--vaddr", kind="number")
LOOKUP_CR3 = Option("--cr3", kind="number")
LOOKUP_FROM_FILE = Option("--from-file")
LOOKUP_JSON = Option("--json", dest="as_json", kind="flag")


def ws_value(word_size: str):
    """The word size of a --word-size value: "auto", 4 or 8."""
    return "auto" if word_size == "auto" else int(word_size)


def parse(argv, options) -> dict | None:
    """The parameters click would give a command taking one IMAGE argument
    and ``options`` for the command line ``argv`` (``image`` and each
    option's ``dest``, defaults filled in), or None for anything but the
    plain forms: help, an unknown or repeated option, short options run
    together, a value click would refuse, no IMAGE or a second one, ``--``.
    Click then decides, with its own messages."""
    by_flag = {flag: opt for opt in options for flag in opt.flags}
    values: dict = {}
    image = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            if image is not None:
                return None
            image = arg
            continue
        name, eq, text = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = by_flag.get(name)
        if opt is None or opt.dest in values:
            return None
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            continue
        if not eq:
            if i >= len(argv):
                return None
            text = argv[i]
            i += 1
        value = opt.value(text)
        if value is None:
            return None
        values[opt.dest] = value
    if image is None:
        return None
    params = {opt.dest: opt.default for opt in options}
    params.update(values)
    params["image"] = image
    return params
