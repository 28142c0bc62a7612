"""The bulk row formats (table, csv, jsonl) against their per-row definitions.

``p2mdump.rowtext`` renders a chunk of rows at once with numpy; the text must
be the same, byte for byte, as formatting each row with ``json.dumps`` and
the f-strings the formats are defined by (kept here as the reference).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump.cli import main
from p2mdump.layout import KINDS, layout_for
from p2mdump.rowtext import ROW_CHUNK, dec_text, hex_text, write_rows
from p2mdump.table import MISSING, classify, decode

from conftest import load_fixture


def reference(raw, layout, fmt) -> bytes:
    """The formats as defined: one f-string (or json.dumps) per row."""
    rw = 2 * layout.word_size
    pw = len(f"{max(len(raw) - 1, 0):x}")
    codes = classify(raw, layout).tolist()
    mfns = decode(raw, layout).tolist()
    out = []
    if fmt == "csv":
        out.append("pfn,raw,kind,mfn\n")
    elif fmt == "table":
        out.append(f"{'pfn':<{pw + 2}} {'raw':<{rw + 2}} {'kind':<8} mfn\n")
    for p, (r, c, m) in enumerate(zip(raw.tolist(), codes, mfns)):
        if fmt == "csv":
            out.append(f"0x{p:x},0x{r:0{rw}x},{KINDS[c]},{'' if c == MISSING else hex(m)}\n")
        elif fmt == "jsonl":
            out.append(json.dumps({"pfn": p, "raw": r, "kind": KINDS[c],
                                   "mfn": None if c == MISSING else m}) + "\n")
        else:
            out.append(f"0x{p:0{pw}x} 0x{r:0{rw}x} {KINDS[c]:<8} "
                       f"{'-' if c == MISSING else hex(m)}\n")
    return "".join(out).encode()


def bulk(raw, layout, fmt) -> bytes:
    fh = io.BytesIO()
    assert write_rows(raw, layout, fh, fmt) == len(raw)
    return fh.getvalue()


def random_table(rng, layout, n):
    """Entries of every kind, with every number length: INVALID, zero, small
    and full-width valid mfns, identity (with and without FOREIGN), foreign."""
    bits = layout.bits
    raw = rng.integers(0, 1 << bits, n, dtype=np.uint64, endpoint=False)
    small = rng.integers(0, 1 << rng.integers(1, bits - 2, n), dtype=np.uint64)
    sel = rng.integers(0, 7, n)
    raw[sel == 0] = layout.invalid
    raw[sel == 1] = small[sel == 1]
    raw[sel == 2] = 0
    raw[sel == 3] = small[sel == 3] | np.uint64(layout.identity_bit)
    raw[sel == 4] = small[sel == 4] | np.uint64(layout.foreign_bit)
    raw[sel == 5] = np.uint64(layout.invalid - 1)
    return raw.astype(layout.numpy_dtype)


@pytest.mark.parametrize("ws", [4, 8])
@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl"])
@pytest.mark.parametrize("n", [0, 1, 2, 17, 256, ROW_CHUNK + 3])
def test_bulk_rows_match_reference(ws, fmt, n):
    layout = layout_for(ws)
    raw = random_table(np.random.default_rng(n * 10 + ws), layout, n)
    if n >= 256:
        assert set(classify(raw, layout).tolist()) == set(range(len(KINDS)))
    assert bulk(raw, layout, fmt) == reference(raw, layout, fmt)


@settings(max_examples=60, deadline=None)
@given(ws=st.sampled_from([4, 8]), fmt=st.sampled_from(["table", "csv", "jsonl"]),
       words=st.lists(st.integers(0, (1 << 64) - 1), max_size=40))
def test_bulk_rows_any_words(ws, fmt, words):
    layout = layout_for(ws)
    raw = np.array([w & layout.word_mask for w in words], dtype=layout.numpy_dtype)
    assert bulk(raw, layout, fmt) == reference(raw, layout, fmt)


def test_number_text_edges():
    vals = np.array([0, 1, 9, 10, 9999, 10000, 12345678, 10 ** 19, (1 << 64) - 1],
                    dtype=np.uint64)
    def rows(mat):
        return [bytes(row).replace(b"\0", b"").decode() for row in mat]

    assert rows(dec_text(vals, 5)) == [str(v) for v in vals.tolist()]
    assert rows(hex_text(vals, 8)) == [f"{v:x}" for v in vals.tolist()]
    full = hex_text(vals, 8, strip=False).tobytes().decode()
    assert full == "".join(f"{v:016x}" for v in vals.tolist())


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl"])
@pytest.mark.parametrize("name", ["guest64", "guest32"])
def test_walk_rows_match_reference(fmt, name):
    img, side, truth = load_fixture(name)
    layout = layout_for(side["word_size"])
    r = CliRunner().invoke(main, ["walk", img, "--top-mfn", str(side["top_mfn"]),
                                  "--word-size", str(side["word_size"]), "--format", fmt, "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == reference(truth, layout, fmt)
