"""Digests of what the writer produces for a fixed set of random specs.

``tests/golden_writer.json`` holds the digests the writer of commit 37205a8
(before the tree writer became chunked) produced; ``test_writer_golden.py``
checks that today's writer produces the same bytes.  Remake the file (only
when an output is *meant* to change) with::

    PYTHONPATH=. python tests/golden_writer.py --write

A digest covers the file's size and every non-zero 4 KiB page with its
offset, so it does not depend on which zero ranges are holes.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden_writer.json")
CONTAINERS = ("raw", "xc-core", "elf")
PAGE = 4096


def _ranges(rnd: random.Random, end: int, k: int) -> list:
    out = []
    for _ in range(k):
        a = rnd.randrange(end)
        out.append([a, min(end, a + rnd.choice([1, 37, 512, 1500, 1 << 12, 1 << 15]))])
    return out


def specs() -> list[dict]:
    """The spec fields of the random guests (fixed seed)."""
    rnd = random.Random(20261201)
    out = []
    for i in range(30):
        ws = rnd.choice([4, 8])
        rep = "tree" if i < 22 else rnd.choice(["list", "both"])
        big = rnd.random() < 0.3
        max_pfn = rnd.randrange(1, 0x140000 if big else 0x9000)
        data = not big and rnd.random() < 0.3
        spec = dict(word_size=ws, max_pfn=max_pfn, seed=rnd.randrange(1 << 32),
                    mfn_order=rnd.choice(["linear", "chunked", "shuffled"]),
                    placement=rnd.choice(["compact", "compact", "scattered"]),
                    scatter_span=rnd.choice([0x20000, 0x80000]), data=data)
        if rnd.random() < 0.6:
            spec["ram"] = _ranges(rnd, max_pfn + rnd.choice([0, 0, 700]), 2) + [[0, max_pfn // 2]]
        spec["holes"] = _ranges(rnd, max_pfn, rnd.randrange(3))
        spec["ballooned"] = _ranges(rnd, max_pfn, rnd.randrange(2))
        spec["identity"] = _ranges(rnd, max_pfn, rnd.randrange(3))
        spec["foreign"] = _ranges(rnd, max_pfn, rnd.randrange(2))
        if rep == "tree":
            spec["identity_leaf"] = rnd.choice(["identity", "missing"])
            spec["shuffle_leaves"] = rnd.random() < 0.4
        else:
            spec["representation"] = rep
        out.append(spec)
    # too few own pfns for an xc-core; own pfns past max_pfn; foreign over identity
    out += [dict(word_size=8, max_pfn=3, ram=[[0, 1]]),
            dict(word_size=4, max_pfn=0x500, ram=[[0, 0x900]], data=True, mfn_order="chunked"),
            dict(word_size=8, max_pfn=0x3000, identity=[[0, 0x2000]], foreign=[[0x1000, 0x1100]],
                 holes=[[0x2100, 0x2300]], data=True)]
    return out


def file_digest(path) -> str:
    """sha256 over the size and the non-zero pages (offset, bytes) of ``path``."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as fh:
        fd = fh.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            start -= start % PAGE
            for off in range(start, end, 1 << 24):
                n = min(end, off + (1 << 24)) - off
                buf = os.pread(fd, n, off)
                pad = (-len(buf)) % PAGE
                pages = np.frombuffer(buf + bytes(pad), dtype=np.uint8).reshape(-1, PAGE)
                for k in np.flatnonzero(pages.any(axis=1)).tolist():
                    h.update((off + k * PAGE).to_bytes(8, "little"))
                    h.update(pages[k].tobytes())
            pos = end
    return h.hexdigest()


def take_digests(img: Path, truth: Path) -> dict:
    """Digests of a generated output, its sidecar and its truth; the three
    files are removed."""
    sidecar = Path(f"{img}.json")
    out = {"out": file_digest(img),
           "sidecar": hashlib.sha256(sidecar.read_bytes()).hexdigest(),
           "truth": hashlib.sha256(truth.read_bytes()).hexdigest()}
    for p in (img, truth, sidecar):
        p.unlink()
    return out


def digests() -> dict:
    """{"<spec index> <container>": {"out", "sidecar", "truth"} digests or the error}."""
    from p2mdump.errors import P2MDumpError
    from p2mdump.writer import GuestSpec
    from p2mdump.writer.containers import generate_container

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, fields in enumerate(specs()):
            for container in CONTAINERS:
                img = Path(tmp) / f"g{i}.{container}"
                truth = Path(tmp) / f"g{i}.{container}.truth"
                key = f"{i} {container}"
                try:
                    generate_container(GuestSpec.from_dict(dict(fields)), img,
                                       container=container, truth=truth)
                except P2MDumpError as exc:
                    out[key] = {"error": str(exc)}
                    continue
                out[key] = take_digests(img, truth)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: golden_writer.py --write")
    GOLDEN.write_text(json.dumps(digests(), indent=1, sort_keys=True) + "\n")
