"""The ``p2mdump`` command line: a thin layer over the Python API.

The click group is :data:`main` (in :mod:`p2mdump.cli.group`, built on
first use: importing click costs ~8 ms of a command).  What a command does
once its options are known lives in click-free modules (``walkrun``), which
the console script also runs directly for the forms it can parse itself
(:mod:`p2mdump.cli.fastpath`, from the same option declarations,
:mod:`p2mdump.cli.options`).
"""
from __future__ import annotations


def __getattr__(name):
    if name == "main":
        from .group import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
