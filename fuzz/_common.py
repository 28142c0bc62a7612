"""Shared driver of the atheris harnesses: run ``one_input(data)`` under
atheris (coverage-guided) when it is installed, else replay the files of a
corpus folder (``python fuzz/fuzz_walk.py CORPUS_DIR``).

An input is written to a temporary file (the readers take paths and file
descriptors) and the harness's checks run on it.  The invariant is the one of
tests/test_fuzz.py: a result or a P2MDumpError; anything else is a finding.
"""
from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_TMP = tempfile.mkdtemp(prefix="p2mdump-fuzz-")
_PATH = os.path.join(_TMP, "input.img")


#: modules p2mdump imports lazily, loaded up front so that atheris
#: instruments them for coverage too
LAZY_MODULES = ("p2mdump.sources.raw", "p2mdump.sources.elf", "p2mdump.sources.xc_core",
                "p2mdump.walker", "p2mdump.listwalk", "p2mdump.pagetable", "p2mdump.autowalk",
                "p2mdump.crosscheck", "p2mdump.verify", "p2mdump.scan", "p2mdump.listscan",
                "p2mdump.sources.xl_save.summary", "p2mdump.savewalk", "p2mdump.savelookup")


def as_file(data: bytes) -> str:
    """``data`` in the harness's one scratch file; its path."""
    with open(_PATH, "wb") as fh:
        fh.write(data)
    return _PATH


def run(one_input, argv=None) -> None:
    """atheris.Fuzz over ``one_input``, or a replay of the corpus folders /
    files named on the command line when atheris is missing."""
    argv = list(sys.argv if argv is None else argv)
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        import importlib

        for name in LAZY_MODULES:
            importlib.import_module(name)
        atheris.instrument_all()
        atheris.Setup(argv, one_input)
        atheris.Fuzz()
        return
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if not paths:
        sys.exit("atheris is not installed: give corpus folders or files to replay")
    n = 0
    for p in paths:
        files = ([os.path.join(p, f) for f in sorted(os.listdir(p))] if os.path.isdir(p)
                 else [p])
        for f in files:
            with open(f, "rb") as fh:
                one_input(fh.read())
            n += 1
    print(f"replayed {n} inputs without atheris: no finding")
