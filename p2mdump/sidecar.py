"""The JSON sidecar ``IMAGE.json`` that ``p2mdump generate`` writes beside an image.

It names the tree (top_mfn, word_size, max_pfn, base, placeholders), so the
commands can find the tree of a generated image without ``--top-mfn``.
Light on purpose: the lookup fast path may read it.
"""
from __future__ import annotations

import json
import os

SIDECAR_FORMAT = "p2mdump-sidecar/1"


def sidecar_path(image) -> str:
    return os.fspath(image) + ".json"


def read_sidecar(image) -> dict | None:
    """The sidecar of ``image``, or None when there is no valid one."""
    try:
        with open(sidecar_path(image), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        return data
    return None
