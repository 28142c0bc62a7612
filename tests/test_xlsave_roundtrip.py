"""Round trip: ``generate --container xl-save`` -> walk / lookup / verify / extract
-> the generator's truth.

The writer lays the stream out as Xen's saver does (and Xen's own verifier
accepts it, see test_writer_xlsave.py); the reader side never sees the
writer's internals, only the file, its truth and its sidecar.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump import findings as F
from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE, layout_for


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def generate(tmp_path, *args, name="dom.save"):
    out = tmp_path / name
    truth = tmp_path / (name + ".truth")
    r = run("generate", out, "--container", "xl-save", "--truth", truth, "-q", *args)
    assert r.exit_code == 0, r.output
    return out, truth


VARIANTS = {
    "tree64": ["--word-size", "8", "--max-pfn", "0x5000", "--hole", "0x800-0x9ff",
               "--balloon", "0x3000-0x3fff"],
    "tree32": ["--word-size", "4", "--max-pfn", "0x4800", "--identity", "0xa0-0xff"],
    "list64": ["--representation", "list", "--word-size", "8", "--max-pfn", "0x6000",
               "--p2m-vaddr", "0xffffc90000200000", "--balloon", "0x1000-0x1fff"],
    "list32": ["--representation", "list", "--word-size", "4", "--max-pfn", "0x5000",
               "--hole", "0x100-0x1ff"],
    "both64": ["--representation", "both", "--word-size", "8", "--max-pfn", "0x4000"],
    "resend": ["--representation", "list", "--word-size", "8", "--max-pfn", "0x3000",
               "--resend", "2", "--seed", "7"],
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def saved(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    out, truth = generate(tmp, *VARIANTS[request.param])
    return request.param, out, truth


def _ws(variant: str) -> int:
    return 4 if "32" in variant else 8


def test_walk_rebuilds_the_saved_table(saved, tmp_path):
    variant, out, truth = saved
    table = tmp_path / "t.raw"
    summary = tmp_path / "s.json"
    r = run("walk", out, "--format", "raw", "-o", table, "--summary-json", summary, "-q")
    assert r.exit_code == 0, r.output
    assert table.read_bytes() == truth.read_bytes()
    s = json.loads(summary.read_text())
    assert s["representation"] == "save-p2m-frames"
    assert s["word_size"] == _ws(variant) and s["max_pfn_source"] == "container"
    assert s["warnings"] == 0, s["findings"]
    assert s["save"]["p2m_frames"] == s["save"]["end_pfn"] // (PAGE_SIZE // _ws(variant)) + 1


def test_lookups_agree_with_the_truth(saved):
    variant, out, truth = saved
    L = layout_for(_ws(variant))
    words = np.frombuffer(truth.read_bytes(), dtype=L.numpy_dtype)
    rng = np.random.default_rng(1)
    for pfn in rng.integers(0, len(words), 5).tolist() + [len(words) - 1]:
        r = run("lookup", out, "--pfn", hex(pfn), "--json")
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert got["raw"] == int(words[pfn]) and got["kind"] == L.kind_of(int(words[pfn]))
    valid = np.flatnonzero([L.kind_of(int(w)) == "valid" for w in words[:4096]])
    pfn = int(valid[len(valid) // 2])
    r = run("lookup", out, "--mfn", hex(int(words[pfn])), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pfns"] == [pfn]


def test_verify_is_clean(saved):
    variant, out, _ = saved
    r = run("verify", out)
    assert r.exit_code == 0, r.output


def test_extract_places_each_page_at_its_pfn(saved, tmp_path):
    variant, out, truth = saved
    info = json.loads(run("info", out, "--json").stdout)
    guest = tmp_path / "guest.raw"
    r = run("extract", out, "-o", guest, "-q")
    assert r.exit_code == 0, r.output
    L = layout_for(_ws(variant))
    words = np.frombuffer(truth.read_bytes(), dtype=L.numpy_dtype)
    fpp = L.per_page
    padded = np.full(L.leaves_for(len(words)) * fpp, L.invalid, dtype=L.numpy_dtype)
    padded[:len(words)] = words
    # the p2m frames, found by pfn in the extracted guest, hold the truth
    frames = info["p2m_frames"]
    from p2mdump.sources import open_image

    with open_image(out) as source:
        frame_pfns = source.stream.p2m_frames.pfns.tolist()
    assert len(frame_pfns) == frames["count"]
    data = guest.read_bytes()
    for k, pfn in enumerate(frame_pfns):
        page = data[pfn * PAGE_SIZE:(pfn + 1) * PAGE_SIZE]
        assert page == padded[k * fpp:(k + 1) * fpp].tobytes(), (k, pfn)


def test_extract_elf_names_the_saved_p2m(saved, tmp_path):
    variant, out, _ = saved
    guest = tmp_path / "guest.elf"
    r = run("extract", out, "-o", guest, "--format", "elf", "-q")
    assert r.exit_code == 0, r.output
    info = json.loads(run("info", guest, "--json").stdout)
    assert info["p2mdump_origin"]["representation"] == "save-p2m-frames"
    assert info["p2mdump_origin"]["container"] == "xl-save"


def test_xen_saver_bug_is_reported_not_copied(tmp_path):
    max_pfn = 0x41234
    out, truth = generate(tmp_path, "--representation", "list", "--word-size", "8",
                          "--max-pfn", hex(max_pfn), "--p2m-vaddr", "0xffffc90000600000",
                          "--xen-save-bug")
    summary = tmp_path / "s.json"
    table = tmp_path / "t.raw"
    r = run("walk", out, "--format", "raw", "-o", table, "--summary-json", summary, "-q")
    assert r.exit_code == 0, r.output
    s = json.loads(summary.read_text())
    end = s["save"]["end_pfn"]
    assert end == 0x3FFFF and s["max_pfn"] == max_pfn
    short = [f for f in s["findings"] if f["kind"] == F.SAVE_P2M_SHORT]
    assert len(short) == 1 and short[0]["count"] == max_pfn - end - 1
    assert "known bug of Xen's saver" in short[0]["message"]
    want = np.frombuffer(truth.read_bytes(), dtype=np.uint64)
    got = np.frombuffer(table.read_bytes(), dtype=np.uint64)
    assert len(got) == max_pfn
    assert np.array_equal(got[:end + 1], want[:end + 1])
    assert (got[end + 1:] == np.uint64(layout_for(8).invalid)).all()


def test_truncated_stream_still_walks_what_it_holds(tmp_path):
    out, truth = generate(tmp_path, "--word-size", "8", "--max-pfn", "0x3000")
    info = json.loads(run("info", out, "--json").stdout)
    data = out.read_bytes()
    cut = tmp_path / "cut.save"
    # keep the headers, the p2m frames record and about half of the pages
    cut.write_bytes(data[:info["p2m_frames"]["offset"] + len(data) // 2])
    summary = tmp_path / "s.json"
    r = run("walk", cut, "--summary-json", summary, "-q", "-o", tmp_path / "x.txt")
    assert r.exit_code == 0, r.output
    kinds = {f["kind"] for f in json.loads(summary.read_text())["findings"]}
    assert F.SAVE_TRUNCATED in kinds


def test_diff_and_map_read_save_streams(saved, tmp_path):
    variant, out, truth = saved
    r = run("diff", out, truth, "--format-b", "raw", "--word-size", str(_ws(variant)))
    assert r.exit_code == 0, r.output
    svg = tmp_path / "m.svg"
    r = run("map", out, "-o", svg, "-q")
    assert r.exit_code == 0, r.output
    assert "saved p2m of" in svg.read_text()
