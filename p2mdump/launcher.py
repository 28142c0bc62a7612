"""The ``p2mdump`` console script.

A single ``p2mdump lookup IMAGE --top-mfn N --pfn P`` must finish in about
the time the interpreter takes to start, and importing click alone costs a
good part of that.  So the simple forms of a single lookup are answered here
without click: ``--pfn`` / ``--paddr`` in the tree at ``--top-mfn``, or in
the linear list named by ``--p2m-cr3``, ``--p2m-vaddr`` and ``--max-pfn``.
Anything else (help, other options such as ``--vaddr``, other commands, any
error in the arguments) goes to the click CLI, which gives the same answer
and the same messages.  A ``walk`` command line of the plain forms is run
without click too, from the same option declarations and by the same code
as the click command (:mod:`p2mdump.cli.fastpath`).  For a command that works
with numpy, numpy is imported first, with the cyclic garbage collector paused
(:func:`import_numpy`), and the allocator is told to keep freed memory
(:func:`p2mdump.workers.keep_freed_memory`).
"""
from __future__ import annotations

import gc
import os
import sys


def _parse_lookup(argv):
    """Options of a simple single lookup (the parameters click would give
    ``lookup``, ``word_size`` as a number or "auto", plus ``list``: a list is
    named), or None when click should decide."""
    from .cli import options as opts

    args = opts.parse(argv, _fast_lookup_options())
    if args is None or (args["pfn"] is None) == (args["paddr"] is None):
        return None
    # the tree at --top-mfn, or a list named in full; nothing else (no hints here)
    is_list = args["p2m_cr3"] is not None or args["p2m_vaddr"] is not None
    if is_list == (args["top_mfn"] is not None) or (is_list and None in (
            args["p2m_cr3"], args["p2m_vaddr"], args["max_pfn"])) or (
            args["five_level"] and not is_list):
        return None
    if args["container"] not in ("auto", "raw"):
        return None
    args["list"] = is_list
    args["word_size"] = opts.ws_value(args["word_size"])
    return args


def _fast_lookup_options() -> tuple:
    """The options of ``lookup`` the fast path takes (the tree options but
    --representation, --pfn, --paddr, --json)."""
    from .cli import options as opts

    return tuple(o for o in opts.TREE_OPTIONS if o is not opts.REPRESENTATION) + (
        opts.LOOKUP_PFN, opts.LOOKUP_PADDR, opts.LOOKUP_JSON)


def fast_lookup(argv) -> int | None:
    """Answer a simple single lookup on a raw image; None: not handled here."""
    args = _parse_lookup(argv)
    if args is None:
        return None
    from .sources.base import read_head
    from .sources.detect import RAW, sniff_bytes

    from .sources.spool import is_stream

    if is_stream(args["image"]):
        return None  # stdin and FIFOs are spooled by the click path
    if args["container"] == "auto" and sniff_bytes(read_head(args["image"], 64)) != RAW:
        return None  # containers are the click path's business
    from .errors import P2MDumpError
    from .lookup import ListPathLookup, PathLookup, format_result
    from .sources.raw import RawImage

    try:
        with RawImage(args["image"], base=args["base"]) as source:
            path: ListPathLookup | PathLookup
            if args["list"]:
                path = ListPathLookup(source, args["p2m_cr3"], args["p2m_vaddr"],
                                      word_size=args["word_size"], max_pfn=args["max_pfn"],
                                      five_level=args["five_level"])
            else:
                path = PathLookup(source, args["top_mfn"], word_size=args["word_size"],
                                  max_pfn=args["max_pfn"])
            result = (path.pfn(args["pfn"]) if args["pfn"] is not None
                      else path.paddr(args["paddr"]))
            result["pages_read"] = path.pages_read
    except P2MDumpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args["as_json"]:
        import json

        text = json.dumps(result, indent=2, sort_keys=True)
    else:
        text = format_result(result)
    return _emit(text)


def _emit(text: str) -> int:
    """Print the answer: 0, or the exit code of an output that failed (a
    reader gone away: quietly; stdout full or closed: one error line)."""
    from .stdio import guard_closed_stdout, is_output_error, output_failure

    guard_closed_stdout()
    try:
        print(text)
        sys.stdout.flush()
    except OSError as exc:
        if not is_output_error(exc):
            raise
        message, code = output_failure(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
        return code
    return 0


#: numpy's BLAS would start a thread per CPU at import; p2mdump does no linear
#: algebra, so the command line asks for one (a user's own setting wins)
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


#: commands whose work imports numpy (``info`` of a raw image and the
#: single lookups do without it)
NUMPY_COMMANDS = ("walk", "scan", "verify", "diff", "map", "extract", "generate")


def import_numpy() -> None:
    """Import numpy with the cyclic garbage collector paused, then freeze what
    is loaded.  The ~20k objects numpy's import makes live as long as the
    process; the collections its allocations set off on the way cost ~3 ms
    of every command (measured); frozen, they are not examined again."""
    paused = gc.isenabled()
    gc.disable()
    try:
        import numpy  # noqa: F401
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def main():
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
    argv = sys.argv[1:]
    if argv[:1] == ["lookup"]:
        rc = fast_lookup(argv[1:])
        if rc is not None:
            sys.exit(rc)
    if argv[:1] and argv[0] in NUMPY_COMMANDS and not {"-h", "--help"} & set(argv):
        import_numpy()
        from .workers import keep_freed_memory

        keep_freed_memory()      # the process is this command's: see workers
    try:
        if argv[:1] == ["walk"]:
            from .cli import fastpath

            fastpath.walk(argv[1:])  # exits when it ran the command
        from .cli import main as cli_main

        cli_main()
    except SystemExit as exc:
        _exit_now(exc.code)


def _exit_now(code) -> None:
    """Leave without tearing the interpreter down: every output is complete
    and closed by now (files are renamed into place before the command
    returns), and skipping the teardown of numpy and the table mapping saves
    ~30 ms a run.  stdout and stderr are flushed first."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
