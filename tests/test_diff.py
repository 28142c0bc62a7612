"""diff: changed mapping / kind / added / removed pfns, as ranges."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.diff import diff, load_table
from p2mdump.layout import layout_for
from p2mdump.table import P2MTable
from p2mdump.writer import GuestSpec, generate

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def run(*args):
    return CliRunner().invoke(main, ["diff"] + [str(a) for a in args])


def table(values, ws=8):
    L = layout_for(ws)
    return P2MTable(np.array(values, dtype=L.numpy_dtype), L)


def test_classes_and_ranges():
    L = layout_for(8)
    I = L.invalid
    a = table([10, 11, 12, 13, I, I, 20 | L.identity_bit, 50, 51])
    b = table([10, 11, 30, 31, 40, I, 20, I, 51, 77])
    res = diff(a, b)
    got = [(c.change, c.first, c.last, c.a_mfn, c.b_mfn) for c in res.changes]
    assert got == [("mapping", 2, 3, 12, 30), ("added", 4, 4, None, 40),
                   ("kind", 6, 6, 20, 20), ("removed", 7, 7, 50, None),
                   ("added", 9, 9, None, 77)]
    assert res.counts == {"mapping": 2, "kind": 1, "added": 2, "removed": 1}
    assert not res.same and diff(a, a).same


def test_mapping_ranges_break_where_mfns_stop_stepping():
    a = table(list(range(100, 110)))
    b = table(list(range(200, 205)) + list(range(300, 305)))
    res = diff(a, b)
    assert [(c.first, c.last, c.b_mfn) for c in res.changes] == [(0, 4, 200), (5, 9, 300)]


def test_chunking_does_not_change_the_ranges():
    rng = np.random.default_rng(0)
    L = layout_for(4)
    av = rng.integers(1, 50, 5000).astype("<u4")
    bv = av.copy()
    bv[1000:3000] = np.arange(1000, 3000) + 7
    bv[rng.integers(0, 5000, 300)] = L.invalid
    a, b = P2MTable(av, L), P2MTable(bv, L)
    big = [c.to_dict() for c in diff(a, b).changes]
    assert big == [c.to_dict() for c in diff(a, b, chunk=97).changes]


def test_image_vs_its_saved_tables(tmp_path):
    img = os.path.join(FIXTURES, "guest64.img")
    r = run(img, os.path.join(FIXTURES, "guest64.truth"))
    assert r.exit_code == 0 and "same" in r.stdout
    npy = tmp_path / "t.npy"
    assert CliRunner().invoke(main, ["walk", img, "--top-mfn", "4", "--format", "npy",
                                     "-o", str(npy), "-q"]).exit_code == 0
    r = run(npy, os.path.join(FIXTURES, "guest64.truth"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["same"] is True


def test_two_generated_guests(tmp_path):
    base = dict(word_size=8, max_pfn=0x4000, ram=[(0, 0x4000)], seed=1)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    generate(GuestSpec(**base), a)
    generate(GuestSpec(ballooned=[(0x1000, 0x1200)], foreign=[(0x3000, 0x3002)], **base), b)
    r = run(a, b, "--top-mfn", 4, "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    removed = [c for c in d["changes"] if c["change"] == "removed"]
    assert [(c["first"], c["last"]) for c in removed] == [(0x1000, 0x11ff)]
    kinds = [c for c in d["changes"] if c["change"] == "kind"]
    assert sum(c["count"] for c in kinds) == 2 and kinds[0]["first"] == 0x3000
    assert all(c["b"]["kind"] == "foreign" for c in kinds)
    assert d["counts"]["removed"] == 0x200
    r = run(a, b, "--top-mfn", 4)
    assert "0x1000-0x11ff removed: valid" in r.stdout


def test_one_image_two_tops(tmp_path):
    """A stale copy of the top page that lost one 1 GiB region."""
    spec = GuestSpec(word_size=8, max_pfn=0x50000, ram=[(0, 0x50000)], seed=3)
    img = tmp_path / "two.img"
    tree = generate(spec, img)
    data = bytearray(img.read_bytes())
    top = bytearray(data[tree.top_mfn * 4096:(tree.top_mfn + 1) * 4096])
    top[8:16] = tree.placeholders["mid_missing"].to_bytes(8, "little")  # slot 1 dropped
    copy_mfn = len(data) // 4096
    data += top
    img.write_bytes(bytes(data))
    r = run(img, img, "--top-mfn-a", tree.top_mfn, "--top-mfn-b", copy_mfn, "--json")
    d = json.loads(r.stdout)
    assert r.exit_code == 1
    assert [(c["change"], c["first"], c["last"]) for c in d["changes"]] == \
        [("removed", 0x40000, 0x4ffff)]


def test_load_table_errors(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(Exception, match="1-d"):
        load_table(bad)
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"\x00" * 7)
    with pytest.raises(Exception, match="whole number"):
        load_table(odd, word_size=8)


@pytest.mark.parametrize("args, code, text", [
    (["/nonexistent.img", "/nonexistent2.img", "--top-mfn", "4"], 3, "no such file"),
    ([os.path.join(FIXTURES, "guest64.truth"), os.path.join(FIXTURES, "guest32.truth")], 2,
     "needs --word-size"),
    ([os.path.join(FIXTURES, "guest64.truth"), os.path.join(FIXTURES, "guest64.truth"),
      "--top-mfn-a", "4"], 2, "only for an image"),
    ([os.path.join(FIXTURES, "guest64.img"), os.path.join(FIXTURES, "guest64.img"),
      "--top-mfn", "0x100000"], 4, "not in the image"),
])
def test_bad_input(args, code, text, tmp_path):
    r = run(*args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") and text in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    r = run(junk, os.path.join(FIXTURES, "guest64.truth"))
    assert r.exit_code == 3 and r.stderr.startswith("error: ")


def reference_diff(a, b):
    """The diff by its definition, pfn by pfn: (changes as tuples, counts)."""
    classes = ("mapping", "kind", "added", "removed")
    n = max(len(a), len(b))

    def side(t, p):
        raw = int(t.raw[p]) if p < len(t) else t.layout.invalid
        return t.layout.kind_of(raw), t.layout.decode(raw)

    out, counts = [], {c: 0 for c in classes}
    for p in range(n):
        (ka, ma), (kb, mb) = side(a, p), side(b, p)
        if ma is None and mb is None:
            continue
        if ma is None:
            cls = "added"
        elif mb is None:
            cls = "removed"
        elif ka != kb:
            cls = "kind"
        elif ma != mb:
            cls = "mapping"
        else:
            continue
        counts[cls] += 1
        if out:
            c, first, last, pka, pma, pkb, pmb = out[-1]
            k = p - first
            if (last == p - 1 and c == cls and pka == ka and pkb == kb
                    and (ma is None or ma == pma + k) and (mb is None or mb == pmb + k)):
                out[-1] = (c, first, p, pka, pma, pkb, pmb)
                continue
        out.append((cls, p, p, ka, ma, kb, mb))
    return out, counts


def damaged_table(rng, ws, n):
    """Runs of frames with breaks, INVALID stretches, identity entries (some
    with the FOREIGN bit too), foreign entries, wrap-around at INVALID - 1."""
    L = layout_for(ws)
    raw = np.zeros(n, dtype=np.uint64)
    p = 0
    while p < n:
        k = int(rng.integers(1, 40))
        what = int(rng.integers(0, 6))
        base = int(rng.integers(0, 1 << 12))
        seq = np.arange(base, base + k, dtype=np.uint64)
        if what == 0:
            seq[:] = L.invalid
        elif what == 1:
            seq = np.arange(p, p + k, dtype=np.uint64) | np.uint64(L.identity_bit)
            seq[rng.random(k) < 0.3] |= np.uint64(L.foreign_bit)
        elif what == 2:
            seq |= np.uint64(L.foreign_bit)
        elif what == 3:
            seq = np.uint64(L.invalid - 2) + np.arange(k, dtype=np.uint64) % 3
        raw[p:p + k] = seq[:n - p]
        p += k
    return P2MTable(raw.astype(L.numpy_dtype), L)


@pytest.mark.parametrize("seed", range(6))
def test_runs_diff_matches_per_pfn_definition(seed):
    """Random damaged tables, of one or both word sizes and different
    lengths, also with one side a lightly changed copy of the other."""
    rng = np.random.default_rng(seed)
    wa, wb = (8, 8) if seed % 3 == 0 else (4, 4) if seed % 3 == 1 else (4, 8)
    a = damaged_table(rng, wa, int(rng.integers(500, 3000)))
    b = damaged_table(rng, wb, int(rng.integers(500, 3000)))
    if wa == wb:
        near = a.raw.copy()
        near[rng.integers(0, len(near), 40)] = rng.integers(0, 1 << 12, 40)
        near[100:300] = b.raw[:200] if len(b) >= 200 else near[100:300]
        pairs = [(a, b), (a, P2MTable(near, a.layout)), (a, P2MTable(a.raw[:-7], a.layout))]
    else:
        pairs = [(a, b), (b, a)]
    for x, y in pairs:
        want, counts = reference_diff(x, y)
        for chunk in (64, 1000, 1 << 20):
            res = diff(x, y, chunk=chunk)
            got = [(c.change, c.first, c.last, c.a_kind, c.a_mfn, c.b_kind, c.b_mfn)
                   for c in res.changes]
            assert got == want, chunk
            assert res.counts == counts
            assert "".join(res.lines(batch=7)) == "".join(f"{c}\n" for c in res.changes)
            assert res.same == (not want)


def test_cli_text_lists_every_change(tmp_path):
    rng = np.random.default_rng(9)
    a, b = damaged_table(rng, 8, 5000), damaged_table(rng, 8, 4000)
    pa, pb = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(pa, a.raw)
    np.save(pb, b.raw)
    r = run(pa, pb)
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    want, counts = reference_diff(a, b)
    assert lines[0] == f"--- A: {pa} (0x1388 pfns)" and lines[1] == f"+++ B: {pb} (0xfa0 pfns)"
    assert lines[2:-1] == [str(c) for c in diff(a, b).changes] and len(lines) == len(want) + 3
    assert lines[-1] == "differs: " + ", ".join(f"{n} pfn(s) {k}" for k, n in counts.items() if n)
