"""Encoders for every ``walk --format``: ranges, table, csv, jsonl, raw, npy.

Each encoder writes to a binary file object; the CLI hands it either an
atomic temporary file (``-o``) or stdout.  :func:`write_table` writes a
table held in memory; :class:`TableStream` writes the same bytes from a
streamed walk (``stream=``), window by window, holding no table.
"""
from __future__ import annotations

import numpy as np

from .layout import KINDS
from .table import MISSING, P2MTable, RunTable, decode

TYPE_CHECKING = False  # rowtext is imported when rows are written
if TYPE_CHECKING:
    from .rowtext import RowWriter

FORMATS = ("ranges", "table", "csv", "jsonl", "raw", "npy")
BINARY_FORMATS = ("raw", "npy")


def _hexw(value: int) -> int:
    return len(f"{max(value, 0):x}")


def write_ranges(table: RunTable, fh) -> int:
    """One line per run: ``0x00000-0x3ffff -> 0x100000-0x13ffff valid``."""
    starts, ends, codes, first = table.run_arrays()
    lay = table.layout
    pw = _hexw(len(table) - 1)
    mfn_first = decode(first, lay) if len(first) else first
    present = codes != MISSING
    last_mfn = (mfn_first[present].astype(np.uint64)
                + (ends[present] - starts[present] - 1).astype(np.uint64))
    mw = _hexw(int(last_mfn.max())) if len(last_mfn) else 1
    lines = []
    n = 0
    for s, e, c, m in zip(starts.tolist(), ends.tolist(), codes.tolist(), mfn_first.tolist()):
        if c == MISSING:
            lines.append(f"0x{s:0{pw}x}-0x{e - 1:0{pw}x} {KINDS[c]}\n")
        else:
            lines.append(f"0x{s:0{pw}x}-0x{e - 1:0{pw}x} -> "
                         f"0x{m:0{mw}x}-0x{m + e - s - 1:0{mw}x} {KINDS[c]}\n")
        if len(lines) >= 4096:
            fh.write("".join(lines).encode())
            n += len(lines)
            lines = []
    fh.write("".join(lines).encode())
    return n + len(lines)


def write_rows(table: P2MTable, fh, fmt: str) -> int:
    """One row per pfn: pfn, raw entry, kind, mfn (built in bulk: :mod:`p2mdump.rowtext`)."""
    from .rowtext import write_rows as write_text_rows

    return write_text_rows(table.raw, table.layout, fh, fmt)


def write_raw(table: P2MTable, fh) -> int:
    """The raw entries as little-endian words of the guest's width."""
    raw = np.ascontiguousarray(table.raw)
    step = 1 << 24
    for i in range(0, len(raw), step):
        # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
        fh.write(memoryview(raw[i:i + step]).cast("B"))  # type: ignore[arg-type]
    return len(raw)


def write_npy(table: P2MTable, fh) -> int:
    np.lib.format.write_array(fh, np.ascontiguousarray(table.raw), allow_pickle=False)
    return len(table)


def _npy_header(fh, dtype, n: int) -> None:
    """The .npy header :func:`write_npy` writes for ``n`` words of ``dtype``."""
    fmt = np.lib.format
    fmt.write_array_header_1_0(fh, {"descr": fmt.dtype_to_descr(np.dtype(dtype)),
                                    "fortran_order": False, "shape": (n,)})


class TableStream:
    """A streamed walk's table written to ``fh`` in ``fmt`` as it goes by
    (see :func:`p2mdump.tablerows.stream_rows`): the same bytes as
    :func:`write_table` of the whole table.  The row formats, raw and npy
    are written window by window; ranges, which joins runs across windows,
    from the walk's runs once it is over (:meth:`finish`)."""

    def __init__(self, fh, fmt: str):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fh = fh
        self.fmt = fmt
        self.rows: RowWriter | None = None

    def begin(self, max_pfn: int, layout) -> None:
        if self.fmt in ("table", "csv", "jsonl"):
            from .rowtext import RowWriter, header

            self.fh.write(header(self.fmt, layout, max_pfn))
            self.rows = RowWriter(self.fmt, layout, max_pfn)
        elif self.fmt == "npy":
            _npy_header(self.fh, layout.numpy_dtype, max_pfn)

    def __call__(self, words: np.ndarray, first_pfn: int, *_segments) -> None:
        if self.rows is not None:
            from .rowtext import ROW_CHUNK

            for a in range(0, len(words), ROW_CHUNK):
                self.fh.write(self.rows.render(words[a:a + ROW_CHUNK], first_pfn + a))
        elif self.fmt in ("raw", "npy"):
            # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
            self.fh.write(memoryview(np.ascontiguousarray(words)).cast("B"))  # type: ignore[arg-type]

    def finish(self, table) -> None:
        """After the walk (``table``: its StreamedTable)."""
        if self.fmt == "ranges":
            write_ranges(table, self.fh)


def write_table(table: P2MTable, fh, fmt: str) -> int:
    if fmt == "ranges":
        return write_ranges(table, fh)
    if fmt in ("table", "csv", "jsonl"):
        return write_rows(table, fh, fmt)
    if fmt == "raw":
        return write_raw(table, fh)
    if fmt == "npy":
        return write_npy(table, fh)
    raise ValueError(f"unknown format {fmt!r}")
