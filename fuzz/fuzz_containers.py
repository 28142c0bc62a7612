"""Fuzz container detection and the container parsers with raw bytes.

    python fuzz/fuzz_containers.py -atheris_runs=100000 [CORPUS_DIR]
    python fuzz/fuzz_containers.py CORPUS_DIR       # without atheris: replay

Each input is an image file: sniffed, opened (auto, and forced as xc-core
and elf), described (``info``) and read frame by frame.
"""
from __future__ import annotations

from _common import as_file, run

from p2mdump.errors import P2MDumpError
from p2mdump.layout import PAGE_SIZE
from p2mdump.sources import open_image
from p2mdump.sources.detect import sniff_bytes

MAX_FRAMES = 64


def one_input(data: bytes) -> None:
    sniff_bytes(data[:64])
    path = as_file(data)
    for container in ("auto", "xc-core", "elf"):
        try:
            source = open_image(path, container=container)
        except P2MDumpError:
            continue
        with source:
            source.info()
            source.describe()
            buf = bytearray(PAGE_SIZE)
            for mfn in range(min(source.frame_limit() or 0, MAX_FRAMES)):
                source.read_frames_into(mfn, buf)


if __name__ == "__main__":
    run(one_input)
