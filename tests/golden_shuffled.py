"""Digests of ``mfn_order: shuffled`` guests in every container, pinned.

``tests/golden_shuffled.json`` holds the digests of the outputs (image or core or save
file, sidecar, truth) that the writer of commit 52721c4 produced, when a shuffled
numbering was held as a whole uint32 permutation; ``test_shuffled_golden.py`` checks
that today's writer (:class:`p2mdump.writer.prng.PermutationIndex`) produces the same
bytes.  The guests are big enough for the index to have several blocks of
positions and several groups of buckets.  Remake the file (only when an output is
*meant* to change) with::

    PYTHONPATH=. python tests/golden_shuffled.py --write
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from golden_writer import take_digests

GOLDEN = Path(__file__).with_name("golden_shuffled.json")
CONTAINERS = ("raw", "xc-core", "elf", "xl-save")

#: (name, spec fields, generate options)
CASES = [
    ("tree32", dict(word_size=4, max_pfn=0x31000, seed=11, holes=[[0x9000, 0x9400]],
                    identity=[[0x20000, 0x20800]], foreign=[[0x1000, 0x1010]]), {}),
    ("tree64-data", dict(word_size=8, max_pfn=0x6000, seed=12, data=True,
                         ram=[[0, 0x5800]]), {}),
    ("list64", dict(word_size=8, max_pfn=0x2a000, seed=13, representation="list",
                    ballooned=[[0x8000, 0x8800]]), {}),
    ("both32", dict(word_size=4, max_pfn=0x22000, seed=14, representation="both",
                    placement="scattered"), {}),
    ("tree64-resend", dict(word_size=8, max_pfn=0x21000, seed=15), {"resend": 2}),
    # live-migration rounds exchange the frame of the highest data MFN (the sidecar's
    # frame count must not change)
    ("tree64-exchange", dict(word_size=8, max_pfn=49, seed=1, data=True), {"resend": 6}),
]


def digests() -> dict:
    """{"<case> <container>": {"out", "sidecar", "truth"} digests}."""
    from p2mdump.writer import GuestSpec
    from p2mdump.writer.containers import generate_container

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fields, options in CASES:
            for container in CONTAINERS:
                if options and container != "xl-save":
                    continue
                spec = GuestSpec.from_dict(dict(fields, mfn_order="shuffled"))
                img = Path(tmp) / f"{name}.{container}"
                truth = Path(tmp) / f"{name}.{container}.truth"
                generate_container(spec, img, container=container, truth=truth, **options)
                out[f"{name} {container}"] = take_digests(img, truth)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: golden_shuffled.py --write")
    GOLDEN.write_text(json.dumps(digests(), indent=1, sort_keys=True) + "\n")
