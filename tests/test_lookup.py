"""lookup: pfn -> mfn reading only the path, mfn -> pfns through the table."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.layout import layout_for
from p2mdump.lookup import PathLookup, TableLookup, parse_query_file
from p2mdump.sources.raw import RawImage
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, generate

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
NAMES = ["guest64", "guest32", "e820-64", "e820-32", "scattered64", "data64", "data32"]


def fixture(name):
    img = os.path.join(FIXTURES, name + ".img")
    with open(img + ".json") as fh:
        side = json.load(fh)
    truth = np.fromfile(os.path.join(FIXTURES, name + ".truth"), dtype=f"<u{side['word_size']}")
    return img, side, truth


class CountingImage(RawImage):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.frames_read = []

    def read_frames_into(self, mfn, buf):
        got = super().read_frames_into(mfn, buf)
        self.frames_read += list(range(mfn, mfn + got))
        return got


@pytest.mark.parametrize("name", NAMES)
def test_path_lookup_matches_truth(name):
    img, side, truth = fixture(name)
    L = layout_for(side["word_size"])
    rng = np.random.default_rng(1)
    pfns = sorted(set(rng.integers(0, len(truth), 200).tolist()) | {0, len(truth) - 1})
    with RawImage(img) as src:
        pl = PathLookup(src, side["top_mfn"])  # word size detected
        assert pl.word_size == side["word_size"]
        for p in pfns:
            r = pl.pfn(p)
            raw = int(truth[p])
            assert r["kind"] == L.kind_of(raw), p
            assert r["mfn"] == L.decode(raw), p


def test_single_lookup_reads_three_pages():
    img, side, truth = fixture("scattered64")
    src = CountingImage(img)
    pl = PathLookup(src, side["top_mfn"], word_size=8)
    r = pl.pfn(0x1234)
    assert len(src.frames_read) == 3 and pl.pages_read == 3
    assert [s["mfn"] for s in r["path"]] == src.frames_read
    assert [s["slot"] for s in r["path"]] == [0, 0x1234 // 512, 0x1234 % 512]


def test_paddr_and_path_problems(tmp_path):
    img, side, truth = fixture("guest64")
    with RawImage(img) as src:
        pl = PathLookup(src, 4)
        r = pl.paddr(0x100 * 4096 + 0xabc)
        assert r["maddr"] == (int(truth[0x100]) << 12) | 0xabc and r["offset"] == 0xabc
        assert pl.paddr(0x4000 * 4096)["maddr"] is None  # ballooned: missing
    # a mid slot naming MFN 0 and one naming a frame past the image
    bad = tmp_path / "bad.img"
    data = bytearray(open(img, "rb").read())
    mid = 5 * 4096
    data[mid + 1 * 8: mid + 2 * 8] = (0).to_bytes(8, "little")
    data[mid + 2 * 8: mid + 3 * 8] = (10 ** 9).to_bytes(8, "little")
    bad.write_bytes(bytes(data))
    with RawImage(bad) as src:
        pl = PathLookup(src, 4, word_size=8)
        r = pl.pfn(512 + 3)
        assert r["kind"] == "missing" and r["mfn"] is None and "MFN 0" in r["problem"]
        r = pl.pfn(1024)
        assert r["kind"] == "missing" and "not in the image" in r["problem"]
        assert pl.pfn(0)["problem"] is None


def test_table_lookup_inverse_matches_table():
    img, side, truth = fixture("guest32")
    L = layout_for(4)
    with RawImage(img) as src:
        tl = TableLookup(walk(src, side["top_mfn"]))
    for p in (0, 5, 0x1000, 0x8fff):
        m = L.decode(int(truth[p]))
        got = tl.mfn(m)
        assert got["pfns"] == [p]
        assert tl.maddr((m << 12) | 7)["paddrs"] == [(p << 12) | 7]
    # foreign entries are listed apart from the guest's own
    fm = L.decode(int(truth[0x6000]))
    got = tl.mfn(fm)
    assert got["pfns"] == [] and got["foreign_pfns"] == [0x6000]
    assert tl.mfn(0x7fffffff)["pfns"] == []


def test_parse_query_file():
    q = parse_query_file(["# comment", "0x10", "pfn 5", "mfn=0x20", "PADDR 4096", "",
                          "maddr: 0x1000  # trailing"])
    assert q == [("pfn", 16), ("pfn", 5), ("mfn", 32), ("paddr", 4096), ("maddr", 4096)]
    with pytest.raises(ValueError, match="line 1"):
        parse_query_file(["vaddr 5"])
    with pytest.raises(ValueError, match="line 2"):
        parse_query_file(["1", "pfn zz"])


def run(*args, input=None):
    return CliRunner().invoke(main, ["lookup"] + [str(a) for a in args], input=input)


def test_cli_pfn_json():
    img, side, truth = fixture("guest64")
    r = run(img, "--top-mfn", 4, "--word-size", 8, "--pfn", "0x100", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["pfn"] == 0x100 and d["kind"] == "valid" and d["mfn"] == int(truth[0x100])
    r = run(img, "--top-mfn", 4, "--pfn", "0x4000", "--json")
    d = json.loads(r.stdout)
    assert d["kind"] == "missing" and d["mfn"] is None
    r = run(img, "--top-mfn", 4, "--pfn", "0xa0")
    assert r.stdout.strip() == "pfn 0xa0 -> mfn 0xa0 (identity)"


def test_cli_mfn_and_addresses():
    img, side, truth = fixture("data64")
    m = int(truth[0x42])
    d = json.loads(run(img, "--top-mfn", 4, "--mfn", m, "--json").stdout)
    assert d["mfn"] == m and d["pfns"] == [0x42]
    d = json.loads(run(img, "--top-mfn", 4, "--maddr", (m << 12) + 5, "--json").stdout)
    assert d["paddrs"] == [(0x42 << 12) + 5]
    r = run(img, "--top-mfn", 4, "--paddr", (0x42 << 12) + 5)
    assert r.stdout.strip().startswith(f"paddr {(0x42 << 12) + 5:#x} -> maddr {(m << 12) + 5:#x}")
    # and the data frame at that machine address really is the guest's pfn 0x42
    with open(img, "rb") as fh:
        fh.seek(m * 4096 + 8)
        assert int.from_bytes(fh.read(8), "little") == 0x42


def test_cli_from_file(tmp_path):
    img, side, truth = fixture("guest32")
    q = tmp_path / "q.txt"
    m = int(truth[7])
    q.write_text(f"7\nmfn {m:#x}\npaddr 0x8000\n# end\n")
    r = run(img, "--top-mfn", 4, "--from-file", q, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [x["query"] for x in d] == ["pfn", "mfn", "paddr"]
    assert d[0]["mfn"] == m and d[1]["pfns"] == [7] and d[2]["pfn"] == 8
    r = run(img, "--top-mfn", 4, "--from-file", "-", input="pfn 7\n")
    assert r.stdout.strip() == f"pfn 0x7 -> mfn {m:#x} (valid)"


@pytest.mark.parametrize("args, code, text", [
    (["--pfn", "1", "--mfn", "2"], 2, "exactly one"),
    ([], 2, "exactly one"),
    (["--pfn", "0x8000000"], 4, "outside"),
    (["--pfn", "-1"], 2, "negative"),
    (["--pfn", "zz"], 2, "not a number"),
    (["--from-file", "/nonexistent"], 2, "no such file"),
    (["--top-mfn", "0x100000", "--pfn", "1"], 4, "not in the image"),
    (["--top-mfn", "5", "--word-size", "4", "--pfn", "1"], 4, "word"),
])
def test_cli_bad_input(args, code, text):
    img, side, truth = fixture("guest64")
    r = run(img, *args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") and text in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_missing_image_and_no_top(tmp_path):
    r = run("/nonexistent.img", "--top-mfn", 4, "--pfn", 1)
    assert r.exit_code == 3 and r.stderr.startswith("error: ")
    img = tmp_path / "plain.img"
    img.write_bytes(bytes(8192))
    r = run(img, "--pfn", 1)
    assert r.exit_code == 2 and "scan" in r.stderr


def test_single_lookup_imports_neither_numpy_nor_construct(tmp_path):
    img, side, truth = fixture("guest64")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "p2mdump", "lookup", img,
                          "--top-mfn", "4", "--word-size", "8", "--pfn", "0x10"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pfn 0x10 -> mfn")
    mods = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()
            if line.startswith("import time:")}
    assert "numpy" not in mods and "construct" not in mods
    assert "p2mdump" in mods


def test_generated_32bit_guest_high_pfns(tmp_path):
    spec = GuestSpec(word_size=4, max_pfn=0x180000, ram=[(0, 0x800), (0x100000, 0x100400)],
                     seed=2)
    img = tmp_path / "g.img"
    tree = generate(spec, img)
    with RawImage(img) as src:
        pl = PathLookup(src, tree.top_mfn)
        assert pl.pfn(0x100010)["mfn"] == int(tree.truth[0x100010])
        assert pl.pfn(0x900)["kind"] == "missing"


def test_mfn_equality_scan_agrees_with_batch_search():
    """A few mfns are answered by equality scans, many by one sorted search:
    both give what a plain loop over the table gives (valid and foreign
    entries apart, duplicates all listed, identity and INVALID never)."""
    from types import SimpleNamespace

    from p2mdump.lookup import FEW_MFNS
    from p2mdump.table import P2MTable

    for ws in (4, 8):
        L = layout_for(ws)
        rng = np.random.default_rng(ws)
        n = 200_000
        raw = rng.integers(1, 64, n).astype(np.uint64)
        raw[rng.random(n) < 0.2] = np.uint64(L.invalid)
        ident = rng.random(n) < 0.1
        raw[ident] = np.arange(n, dtype=np.uint64)[ident] % 64 | np.uint64(L.identity_bit)
        foreign = rng.random(n) < 0.1
        raw[foreign] = raw[foreign] % 64 | np.uint64(L.foreign_bit)
        raw = raw.astype(L.numpy_dtype)
        tl = TableLookup(SimpleNamespace(table=P2MTable(raw, L), layout=L, top_mfn=None))
        few = [3, 17, 63, 64]
        many = list(range(0, 70))
        assert len(few) <= FEW_MFNS < len(many)
        got_few, got_many = tl.mfns(few), tl.mfns(many)
        for m in many:
            want = {"pfns": np.flatnonzero(raw == m).tolist(),
                    "foreign_pfns": np.flatnonzero(
                        raw == raw.dtype.type(m | L.foreign_bit)).tolist()}
            assert got_many[m] == want, (ws, m)
            if m in few:
                assert got_few[m] == want, (ws, m)
        assert got_many[3]["pfns"] and got_many[3]["foreign_pfns"]


def test_cli_mfn_honours_max_pfn():
    """--mfn walks the tree to --max-pfn when one is given (a pfn past it is
    not reported), else to the tree's last entry."""
    img, side, truth = fixture("data64")
    pfn = side["max_pfn"] - 1
    m = int(truth[pfn])
    assert layout_for(8).kind_of(m) == "valid"
    assert run(img, "--top-mfn", 4, "--mfn", m).stdout.strip() == f"mfn {m:#x} -> pfn {pfn:#x}"
    r = run(img, "--top-mfn", 4, "--max-pfn", pfn, "--mfn", m)
    assert r.exit_code == 0 and r.stdout.strip() == f"mfn {m:#x} -> pfn none"
    r = run(img, "--top-mfn", 4, "--max-pfn", pfn + 1, "--mfn", m, "--json")
    assert json.loads(r.stdout)["pfns"] == [pfn]
