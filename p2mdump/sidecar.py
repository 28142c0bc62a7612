"""The JSON sidecar ``IMAGE.json`` that ``p2mdump generate`` writes beside an image.

It names the tree (top_mfn, word_size, max_pfn, base, placeholders), so the
commands can find the tree of a generated image without ``--top-mfn``.
Light on purpose: the lookup fast path may read it.
"""
from __future__ import annotations

import json
import os

from .boundedread import TooLarge, read_limited
from .errors import ImageError

SIDECAR_FORMAT = "p2mdump-sidecar/1"
#: a sidecar is a few hundred bytes; anything past this is not one
SIDECAR_LIMIT = 1 << 20


def sidecar_path(image) -> str:
    return os.fspath(image) + ".json"


def read_sidecar(image) -> dict | None:
    """The sidecar of ``image``, or None when there is no valid one;
    :class:`~p2mdump.errors.ImageError` when it is too large to be one."""
    path = sidecar_path(image)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(read_limited(fh, SIDECAR_LIMIT, path))
    except TooLarge as exc:
        raise ImageError(f"{exc} (a p2mdump sidecar is a few hundred bytes; "
                         "give --top-mfn, or move the file away)") from None
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        return data
    return None
