"""The JSON sidecar ``IMAGE.json`` that ``p2mdump generate`` writes beside an image.

It names the tree (top_mfn, word_size, max_pfn, base, placeholders), so the
commands can find the tree of a generated image without ``--top-mfn``.
Light on purpose: the lookup fast path may read it.
"""
from __future__ import annotations

import json
import os
import stat

SIDECAR_FORMAT = "p2mdump-sidecar/1"


def sidecar_path(image) -> str:
    return os.fspath(image) + ".json"


#: a sidecar is a few KiB; anything much larger is not one
SIDECAR_MAX_BYTES = 16 << 20


def read_sidecar(image) -> dict | None:
    """The sidecar of ``image``, or None when there is no valid one.

    Only a regular file of at most :data:`SIDECAR_MAX_BYTES` is read, and it
    is opened without blocking: a FIFO or a device named IMAGE.json is not a
    sidecar, and JSON nested too deeply to decode is not one either."""
    try:
        fd = os.open(sidecar_path(image), os.O_RDONLY | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > SIDECAR_MAX_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read(SIDECAR_MAX_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        return data
    return None
