"""Fuzz the xl save reader and the saved-p2m walk with raw bytes.

    python fuzz/fuzz_xl_save.py -max_len=65536 -atheris_runs=100000 [CORPUS_DIR]
    python fuzz/fuzz_xl_save.py CORPUS_DIR       # without atheris: replay

Each input is a save file: indexed (:func:`open_save`), described
(``info``), its saved p2m rebuilt (auto, and at both widths with a small
max_pfn), a few pfns looked up and the extract plan made.  An input that
does not start with a save stream's magic gets the xl magic put before it,
so the fuzzer spends its time past the sniffing.  Every call ends in a
result or a P2MDumpError.
"""
from __future__ import annotations

from _common import as_file, run

from p2mdump.errors import P2MDumpError
from p2mdump.savelookup import SavedPathLookup
from p2mdump.savewalk import extract_plan, walk_saved_p2m
from p2mdump.schemas.xl_save_ids import XL_MAGIC, sniff_entry
from p2mdump.sources.xl_save import open_save

#: pfns looked up in each input's saved p2m
PFNS = (0, 1, 511, 1024, 1 << 40)


def _try(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except P2MDumpError:
        return None


def one_input(data: bytes) -> None:
    if sniff_entry(data[:len(XL_MAGIC)]) is None:
        data = XL_MAGIC + data
    try:
        stream = open_save(as_file(data))
    except P2MDumpError:
        return
    with stream:
        stream.info()
        result = _try(walk_saved_p2m, stream)
        if result is not None:
            extract_plan(result.table, stream)
        for ws in (4, 8):
            _try(walk_saved_p2m, stream, word_size=ws, max_pfn=64)
        look = _try(SavedPathLookup, stream)
        if look is not None:
            for pfn in PFNS:
                _try(look.pfn, pfn)


if __name__ == "__main__":
    run(one_input)
