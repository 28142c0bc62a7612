"""Reading a small text input (a sidecar, a list of queries) with a size limit.

A path may name ``/dev/zero`` or a link to it: reading to the end would never
finish, so such inputs are read up to a limit and refused past it.
"""
from __future__ import annotations


class TooLarge(ValueError):
    """The input is larger than its limit."""


def read_limited(fh, limit: int, what: str):
    """Everything ``fh`` holds (str or bytes, as ``fh`` reads), at most
    ``limit`` characters; :class:`TooLarge` naming ``what`` past that."""
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{what} is larger than {_size(limit)}: not read")
    return data


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"
