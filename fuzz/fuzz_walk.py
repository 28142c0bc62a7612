"""Fuzz the walkers with raw bytes: the tree walk, the list walk and verify.

    python fuzz/fuzz_walk.py -atheris_runs=100000 [CORPUS_DIR]
    python fuzz/fuzz_walk.py CORPUS_DIR       # without atheris: replay

The first 16 bytes of an input choose the parameters (top MFN, max_pfn,
p2m_cr3, p2m_vaddr, word size); the rest is the image, opened with container
detection.  Every walk ends in a result or a P2MDumpError.
"""
from __future__ import annotations

import struct

from _common import as_file, run

from p2mdump.autowalk import walk_image
from p2mdump.errors import P2MDumpError
from p2mdump.sources import open_image
from p2mdump.verify import verify

PARAMS = struct.Struct("<BBHHxxQ")   # top, word size bit, max_pfn, cr3 frame, vaddr


def one_input(data: bytes) -> None:
    if len(data) < PARAMS.size:
        return
    top, wbit, max_pfn, cr3, vaddr = PARAMS.unpack_from(data)
    ws = 8 if wbit & 1 else 4
    path = as_file(data[PARAMS.size:])
    try:
        source = open_image(path)
    except P2MDumpError:
        return
    with source:
        calls = [
            lambda: walk_image(source),
            lambda: walk_image(source, top_mfn=top, max_pfn=max_pfn, word_size=ws,
                               representation="tree"),
            lambda: walk_image(source, p2m_cr3=cr3 << 12, p2m_vaddr=vaddr,
                               max_pfn=max_pfn or 1, representation="list"),
            lambda: verify(source, top, max_pfn=max_pfn),
        ]
        for call in calls:
            try:
                call()
            except P2MDumpError:
                pass


if __name__ == "__main__":
    run(one_input)
