"""The per-pfn text formats of ``walk`` (table, csv, jsonl), built in bulk.

A row is a sequence of fields: constant text, numbers (decimal or hex) and
the kind's name.  For a chunk of rows, a byte matrix (one line of the
matrix per pfn, each field at a fixed column) holds the constant text once;
numpy renders every number field of the chunk into its columns through
tables of digit groups ("0000".."9999", "00".."ff"), with NUL bytes in
place of leading zeros, and the NULs are dropped from the whole chunk in
one pass (``bytes.translate``), which leaves the rows' text back to back.
No Python code runs per row (NUL never occurs in the text itself).

The text is the same, byte for byte, as ``json.dumps`` and the f-strings of
the formats' definitions give (the tests compare them on random tables of
every kind).  ``diff``'s lines (:func:`p2mdump.diff.DiffResult.lines`) are
built from the same pieces (:func:`hex_text`, :class:`ByteMatrix`,
:func:`name_table`).
"""
from __future__ import annotations

import functools

import numpy as np

from .layout import KINDS, Layout
from .table import FOREIGN, IDENTITY, MISSING, classify, decode

FORMATS = ("table", "csv", "jsonl")
#: rows rendered per chunk (the byte matrix stays in the CPU cache)
ROW_CHUNK = 1 << 13


def _group_tables(width: int, base: int) -> np.ndarray:
    """Text of every ``width``-digit group in ``base``, three ways: as is,
    with its leading zeros as NULs (the first group of a number) and the same
    but "0" for zero (the group that is the whole number).  Shape
    (3 * base**width,) of little-endian words of ``width`` bytes."""
    v = np.arange(base ** width)
    digits = (v[:, None] // base ** np.arange(width - 1, -1, -1)[None, :]) % base
    plain = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    lead = np.where(np.logical_and.accumulate(digits == 0, axis=1), 0, plain).astype(np.uint8)
    last = lead.copy()
    last[0, -1] = ord("0")
    data = np.concatenate([plain, lead, last])
    return np.ascontiguousarray(data).view(f"<u{width}").reshape(-1)


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(decimal 4-digit groups, hex 4-digit groups): built on first use."""
    return _group_tables(4, 10), _group_tables(4, 16)


_TEN4 = np.uint64(10000)


def _lead_index(groups: list[np.ndarray], base: int) -> list[np.ndarray]:
    """Indexes into a :func:`_group_tables` table of ``groups`` (most
    significant first): leading zero groups and the first non-zero one take
    the leading variants, a number that is all zeros prints "0"."""
    out = []
    high_zero = np.ones(len(groups[0]), dtype=bool)
    last = len(groups) - 1
    for g, v in enumerate(groups):
        state = high_zero.astype(np.intp) * (2 if g == last else 1)
        out.append(v.astype(np.intp) + state * base)
        if g != last:
            high_zero &= v == 0
    return out


def dec_text(values: np.ndarray, groups: int) -> np.ndarray:
    """Decimal text of unsigned ``values`` (below 10^(4 * groups)),
    right-aligned in ``4 * groups`` bytes, NUL-padded: shape (n, 4 * groups)."""
    v = values.astype(np.uint64)
    parts = []
    for _ in range(groups - 1):
        v, rest = np.divmod(v, _TEN4)
        parts.append(rest)
    parts.append(v)
    idx = _lead_index(parts[::-1], 10000)
    dec4 = _tables()[0]
    out = np.empty((len(values), groups), dtype="<u4")
    for g, i in enumerate(idx):
        out[:, g] = dec4[i]
    return out.view(np.uint8).reshape(len(values), 4 * groups)


def hex_text(values: np.ndarray, word_size: int, strip: bool = True) -> np.ndarray:
    """Hex digits of ``values`` as words of ``word_size`` bytes: shape
    (n, 2 * word_size); leading zeros NUL when ``strip`` (zero prints "0")."""
    v = np.ascontiguousarray(values, dtype=f"<u{word_size}")
    groups = word_size // 2
    hex4 = _tables()[1]
    be = v.view("<u2").reshape(len(v), groups)[:, ::-1]
    out = np.empty((len(v), groups), dtype="<u4")
    if strip:
        for g, i in enumerate(_lead_index(list(be.T), 1 << 16)):
            out[:, g] = hex4[i]
    else:
        out[:] = hex4[be]
    return out.view(np.uint8).reshape(len(v), 2 * word_size)


def dec_groups(top: int) -> int:
    """4-digit groups of the decimal text of numbers up to ``top``."""
    return max(1, -(-len(str(top)) // 4))


class ByteMatrix:
    """The byte matrix of up to ``rows`` rows of ``fields`` (each constant
    bytes or the width of a variable field); constant fields are written
    once, the others per chunk with :meth:`put` or through :meth:`rows`."""

    def __init__(self, fields, rows: int):
        self.cols = []
        width = 0
        for f in fields:
            w = len(f) if isinstance(f, bytes) else f
            self.cols.append((width, width + w))
            width += w
        self.mat = np.zeros((rows, width), dtype=np.uint8)
        for f, (a, b) in zip(fields, self.cols):
            if isinstance(f, bytes):
                self.mat[:, a:b] = np.frombuffer(f, dtype=np.uint8)

    def put(self, field: int, n: int, text: np.ndarray) -> None:
        a, b = self.cols[field]
        self.mat[:n, a:b] = text

    def rows(self, field: int, n: int) -> np.ndarray:
        a, b = self.cols[field]
        return self.mat[:n, a:b]

    def text(self, n: int) -> bytes:
        return self.mat[:n].tobytes().translate(None, b"\0")


def name_table(width: int, left: bool, names=KINDS) -> np.ndarray:
    """``names`` (by default the kind names, in code order) as
    (len(names), width) bytes, to index with codes: space-padded on the
    right (``left``) or NUL-padded on the left."""
    padded = [k.ljust(width) if left else k.rjust(width, "\0") for k in names]
    return np.frombuffer("".join(padded).encode(), dtype=np.uint8).reshape(len(names), width)


def header(fmt: str, layout: Layout, n_pfns: int) -> bytes:
    """The line before the rows (csv, table) or b""."""
    if fmt == "csv":
        return b"pfn,raw,kind,mfn\n"
    if fmt == "table":
        pw = pfn_width(n_pfns)
        return f"{'pfn':<{pw + 2}} {'raw':<{2 * layout.word_size + 2}} {'kind':<8} mfn\n".encode()
    return b""


def pfn_width(n_pfns: int) -> int:
    """Hex digits of the largest pfn (the table format pads pfns to it)."""
    return len(f"{max(n_pfns - 1, 0):x}")


class RowWriter:
    """Renders rows of a table of ``n_pfns`` entries with ``layout`` in
    ``fmt`` (table, csv or jsonl), a chunk of up to :data:`ROW_CHUNK` at a
    time."""

    def __init__(self, fmt: str, layout: Layout, n_pfns: int):
        if fmt not in FORMATS:
            raise ValueError(f"not a row format: {fmt!r}")
        self.fmt = fmt
        self.L = layout
        self.n_pfns = n_pfns
        ws = layout.word_size
        if fmt == "jsonl":
            self.pg = dec_groups(max(n_pfns - 1, 0))
            self.rg = dec_groups(layout.word_mask)
            fields = [b'{"pfn": ', 4 * self.pg, b', "raw": ', 4 * self.rg, b', "kind": "',
                      8, b'", "mfn": ', 4 * self.rg, b"}\n"]
            self.names = name_table(8, False)
        elif fmt == "csv":
            fields = [b"0x", 16, b",0x", 2 * ws, b",", 8, b",", 2 + 2 * ws, b"\n"]
            self.names = name_table(8, False)
        else:
            self.pw = pfn_width(n_pfns)
            fields = [b"0x", self.pw, b" 0x", 2 * ws, b" ", 8, b" ", 2 + 2 * ws, b"\n"]
            self.names = name_table(8, True)
        self.m = ByteMatrix(fields, min(ROW_CHUNK, max(n_pfns, 1)))

    def render(self, raw: np.ndarray, first_pfn: int) -> bytes:
        """The text of the rows of ``raw`` (at most ROW_CHUNK entries), pfns
        ``first_pfn``.., no header."""
        n = len(raw)
        if not n:
            return b""
        m, L = self.m, self.L
        codes = classify(raw, L)
        pfns = np.arange(first_pfn, first_pfn + n, dtype=np.uint64)
        m.put(5, n, self.names[codes])
        # a valid entry's mfn is its raw word: only flagged ones are decoded
        flagged = np.flatnonzero((codes == IDENTITY) | (codes == FOREIGN))
        missing = codes == MISSING
        if self.fmt == "jsonl":
            m.put(1, n, dec_text(pfns, self.pg))
            raw_text = dec_text(raw, self.rg)
            m.put(3, n, raw_text)
            mfn = m.rows(7, n)
            mfn[:] = raw_text
            if len(flagged):
                mfn[flagged] = dec_text(decode(raw[flagged], L), self.rg)
            mfn[missing] = np.frombuffer(b"null".rjust(4 * self.rg, b"\0"), dtype=np.uint8)
            return m.text(n)
        ws = L.word_size
        if self.fmt == "csv":
            m.put(1, n, hex_text(pfns, 8))
        else:
            m.put(1, n, hex_text(pfns, 8, strip=False)[:, 16 - self.pw:])
        m.put(3, n, hex_text(raw, ws, strip=False))
        mfn = m.rows(7, n)
        mfn[:, :2] = np.frombuffer(b"0x", dtype=np.uint8)
        mfn[:, 2:] = hex_text(raw, ws)
        if len(flagged):
            mfn[flagged, 2:] = hex_text(decode(raw[flagged], L), ws)
        gone = b"" if self.fmt == "csv" else b"-"
        mfn[missing] = np.frombuffer(gone.rjust(2 + 2 * ws, b"\0"), dtype=np.uint8)
        return m.text(n)


def write_rows(raw: np.ndarray, layout: Layout, fh, fmt: str) -> int:
    """Write the header and one row per entry of ``raw`` (pfns 0..) in
    ``fmt`` to the binary file ``fh``; returns the number of rows."""
    n = len(raw)
    fh.write(header(fmt, layout, n))
    writer = RowWriter(fmt, layout, n)
    for start in range(0, n, ROW_CHUNK):
        fh.write(writer.render(raw[start:start + ROW_CHUNK], start))
    return n
