"""Generator support for host images: shared_info frames of list guests, mfn_offset, merging."""
import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.errors import SpecError
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.listwalk import walk_list
from p2mdump.paging import fold_cr3
from p2mdump.schemas.xen_core import shared_info_page
from p2mdump.sources.raw import RawImage
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, generate
from p2mdump.writer.hostimage import merge_raw_images


def _side(path):
    with open(str(path) + ".json") as fh:
        return json.load(fh)


def _frame(path, mfn):
    with open(path, "rb") as fh:
        fh.seek(mfn * PAGE_SIZE)
        return fh.read(PAGE_SIZE)


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("rep", ["list", "both"])
def test_raw_image_holds_shared_info(tmp_path, ws, rep):
    spec = GuestSpec(word_size=ws, representation=rep, max_pfn=0x3000, p2m_generation=6,
                     seed=2)
    img = tmp_path / "g.img"
    generate(spec, img)
    side = _side(img)
    arch = shared_info_page(ws).parse(_frame(img, side["shared_info_mfn"])).arch
    L = layout_for(ws)
    assert arch.max_pfn == 0x3000 and arch.p2m_generation == 6
    assert arch.p2m_cr3 == side["p2m_cr3"] == fold_cr3(side["root_mfn"], ws)
    assert arch.p2m_vaddr == side["p2m_vaddr"]
    assert arch.pfn_to_mfn_frame_list_list == (L.word_mask if rep == "list" else side["top_mfn"])
    # a frame of its own: no structure page, no pfn maps it
    assert side["shared_info_mfn"] < side["frames"]
    with RawImage(img) as src:
        res = walk_list(src, side["p2m_cr3"], side["p2m_vaddr"], word_size=ws, max_pfn=0x3000)
        truth_mfns = set(res.table.raw.tolist())
        assert side["shared_info_mfn"] not in truth_mfns
        assert side["shared_info_mfn"] not in res.list_info["list_placeholders"]


def _shifted(words, L, n):
    """What a p2m says once every machine frame moved up by ``n``."""
    w = words.astype(np.uint64)
    inv = w == np.uint64(L.invalid)
    ident = (w & np.uint64(L.identity_bit)) != 0
    return np.where(inv | ident, w, w + np.uint64(n)).astype(words.dtype)


@pytest.mark.parametrize("rep", ["tree", "list", "both"])
@pytest.mark.parametrize("ws", [8, 4])
def test_mfn_offset_moves_every_frame(tmp_path, rep, ws):
    n = 0x1235
    fields = dict(word_size=ws, representation=rep, max_pfn=0x2400, identity=[(0xA0, 0x100)],
                  foreign=[(0x2000, 0x2004)], mfn_order="chunked", data=True, seed=7)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    generate(GuestSpec(**fields), a, truth=tmp_path / "a.truth")
    generate(GuestSpec(mfn_offset=n, **fields), b, truth=tmp_path / "b.truth")
    sa, sb = _side(a), _side(b)
    L = layout_for(ws)
    ta = np.fromfile(tmp_path / "a.truth", dtype=f"<u{ws}")
    tb = np.fromfile(tmp_path / "b.truth", dtype=f"<u{ws}")
    assert np.array_equal(tb, _shifted(ta, L, n))
    assert sb["frames"] == sa["frames"] + n
    assert sb["spec"]["mfn_offset"] == n and "mfn_offset" not in sa["spec"]
    for key in ("top_mfn", "root_mfn", "shared_info_mfn"):
        if sa.get(key) is not None:
            assert sb[key] == sa[key] + n, key
    # nothing below the offset; the shifted image walks to its truth
    assert not np.fromfile(b, dtype=np.uint8, count=n * PAGE_SIZE).any()
    with RawImage(b) as src:
        if rep == "tree":
            res = walk(src, sb["top_mfn"], max_pfn=sb["max_pfn"])
        else:
            res = walk_list(src, sb["p2m_cr3"], sb["p2m_vaddr"], word_size=ws,
                            max_pfn=sb["max_pfn"])
        assert res.table.raw.tobytes() == tb.tobytes()
        assert not res.warnings()
        # a stamped data frame moved with its pfn
        pfn = 0x10
        mfn = int(tb[pfn])
        assert struct.unpack_from("<QQ", src.read_frame(mfn), 8) == (pfn, mfn)


def test_mfn_offset_checks():
    with pytest.raises(SpecError, match="mfn_offset"):
        GuestSpec(mfn_offset=-1)
    for rep in ("tree", "list"):       # MFNs past a 32-bit guest's flag bits
        with pytest.raises(SpecError, match="do not fit"):
            generate(GuestSpec(word_size=4, representation=rep, max_pfn=0x100,
                               mfn_offset=1 << 31), "/nonexistent/never-written.img")
    spec = GuestSpec(representation="list", mfn_offset=0x100)
    assert GuestSpec.from_dict(spec.to_dict()) == spec


def test_merge_and_overlap(tmp_path):
    a, b, c = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "c.img"
    generate(GuestSpec(word_size=8, representation="list", max_pfn=0x1000, data=True), a)
    fa = _side(a)["frames"]
    generate(GuestSpec(word_size=4, max_pfn=0x1000, data=True, mfn_offset=fa), b)
    generate(GuestSpec(word_size=8, max_pfn=0x1000, mfn_offset=fa // 2), c)
    out = tmp_path / "host.img"
    info = merge_raw_images(out, [a, b])
    assert info["frames"] == _side(b)["frames"]
    for src_img in (a, b):
        data = np.fromfile(src_img, dtype=np.uint8).reshape(-1, PAGE_SIZE)
        merged = np.fromfile(out, dtype=np.uint8).reshape(-1, PAGE_SIZE)[:len(data)]
        used = data.any(axis=1)
        assert np.array_equal(merged[used], data[used])
        assert info["written"][str(src_img)] == int(used.sum())
    with pytest.raises(SpecError, match="already holds"):
        merge_raw_images(tmp_path / "bad.img", [a, c])
    assert not (tmp_path / "bad.img").exists()


def test_cli_mfn_offset(tmp_path):
    out = tmp_path / "g.img"
    r = CliRunner().invoke(main, ["generate", str(out), "--representation", "list",
                                  "--max-pfn", "0x1000", "--mfn-offset", "0x400"])
    assert r.exit_code == 0, r.output
    side = _side(out)
    assert side["spec"]["mfn_offset"] == 0x400 and side["shared_info_mfn"] >= 0x400
    assert f"shared_info at MFN {side['shared_info_mfn']:#x}" in r.stderr
    assert "--mfn-offset" in CliRunner().invoke(main, ["generate", "--help"]).output
