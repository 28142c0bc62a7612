"""The JSON sidecar ``IMAGE.json`` that ``p2mdump generate`` writes beside an image.

It names the tree (top_mfn, word_size, max_pfn, base, placeholders), so the
commands can find the tree of a generated image without ``--top-mfn``.
Light on purpose: the lookup fast path may read it.
"""
from __future__ import annotations

import os
import stat

from .boundedread import TooLarge, read_limited
from .errors import ImageError

SIDECAR_FORMAT = "p2mdump-sidecar/1"
#: a sidecar is a few hundred bytes; anything past this is not one
SIDECAR_LIMIT = 1 << 20


def sidecar_path(image) -> str:
    return os.fspath(image) + ".json"


def read_sidecar(image) -> dict | None:
    """The sidecar of ``image``, or None when there is no valid one;
    :class:`~p2mdump.errors.ImageError` when a regular file there is too large
    to be one.

    Only a regular file is read, opened without blocking: a FIFO or a device
    named IMAGE.json (a link to /dev/zero, say) is not a sidecar, and JSON
    nested too deeply to decode is not one either."""
    import json

    path = sidecar_path(image)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "r", encoding="utf-8", closefd=False) as fh:
            data = json.loads(read_limited(fh, SIDECAR_LIMIT, path))
    except TooLarge as exc:
        raise ImageError(f"{exc} (a p2mdump sidecar is a few hundred bytes; "
                         "give --top-mfn, or move the file away)") from None
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        return data
    return None
