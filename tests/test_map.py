"""map: an SVG of the pfn space and the tree's pages, checked by parsing it."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.layout import layout_for
from p2mdump.mapsvg import PLOT_W, kind_bins, render_map
from p2mdump.table import P2MTable
from p2mdump.writer import GuestSpec, generate

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
NS = "{http://www.w3.org/2000/svg}"


def parse(text):
    root = ET.fromstring(text)
    assert root.tag == NS + "svg"
    return root


def by_class(root, prefix):
    return [e for e in root.iter() if (e.get("class") or "").startswith(prefix)]


def texts(root):
    return [e.text for e in root.iter(NS + "text")]


def test_e820_map(tmp_path):
    out = tmp_path / "m.svg"
    r = CliRunner().invoke(main, ["map", os.path.join(FIXTURES, "e820-64.img"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    root = parse(out.read_text())
    # kinds drawn: valid (first GiB), missing, and identity (partial leaves)
    drawn = {e.get("class").split()[-1] for e in by_class(root, "bin")}
    assert {"kind-valid", "kind-missing", "kind-identity"} <= drawn
    assert len(by_class(root, "bin")) <= 4 * PLOT_W
    # run boundaries labelled in pfn and MB
    bounds = {int(e.get("data-pfn")): e for e in by_class(root, "boundary")}
    assert 0x40000 in bounds and 0x40500 in bounds
    labels = [t.text for t in bounds[0x40500].iter(NS + "text")]
    assert labels == ["0x40500", "1029 MB"]
    assert bounds[0x40000].get("data-from") == "valid"
    # the machine-memory strip: one top page, mid and leaf pages, placeholders
    assert len(by_class(root, "tree-top")) == 1
    assert by_class(root, "tree-mid") and by_class(root, "tree-leaf")
    assert by_class(root, "tree-placeholder")
    assert "top 0x4" in texts(root)
    assert any(t and t.startswith("valid: 262144 pfns") for t in texts(root))


def test_bins_sum_to_counts():
    L = layout_for(8)
    raw = np.full(10_000, L.invalid, dtype="<u8")
    raw[:3000] = np.arange(3000) + 100
    raw[5000:5100] = np.arange(5000, 5100) | L.identity_bit
    t = P2MTable(raw, L)
    size, counts = kind_bins(t, 64)
    assert size == -(-10_000 // 64)
    assert counts.sum(axis=0).tolist() == [3000, 6900, 100, 0]


@pytest.mark.parametrize("pfns", [1 << 20, 1 << 27], ids=["4GiB", "512GiB"])
def test_binned_for_small_and_huge_guests(pfns):
    """4 GiB and 512 GiB guests give pictures of the same size."""
    L = layout_for(4)
    raw = np.full(pfns, L.invalid, dtype="<u4")
    q = pfns // 8
    raw[:3 * q] = np.arange(3 * q, dtype=np.uint32) + 0x1000
    raw[4 * q:5 * q] = (np.arange(4 * q, 5 * q, dtype=np.uint32) | L.identity_bit)
    raw[6 * q + 5] = 77 | L.foreign_bit
    svg = render_map(P2MTable(raw, L), title="big")
    root = parse(svg)
    assert len(svg) < 200_000
    assert len(by_class(root, "bin")) < 100
    bounds = sorted(int(e.get("data-pfn")) for e in by_class(root, "boundary"))
    assert 3 * q in bounds and 4 * q in bounds
    # the lone foreign pfn still shows: its bin has a foreign share or a boundary
    assert 6 * q + 5 in bounds or by_class(root, "bin kind-foreign")
    gb = pfns * 4096 >> 30
    assert any(t and f"{gb} GB of guest physical memory" in t for t in texts(root))


def test_generated_scattered_tree_strip(tmp_path):
    spec = GuestSpec(word_size=8, max_pfn=0x10000, placement="scattered",
                     scatter_span=0x20000, seed=4)
    img = tmp_path / "s.img"
    tree = generate(spec, img)
    out = tmp_path / "s.svg"
    r = CliRunner().invoke(main, ["map", str(img), "--top-mfn", tree.top_mfn, "-o", str(out)])
    assert r.exit_code == 0, r.output
    root = parse(out.read_text())
    assert f"top {tree.top_mfn:#x}" in texts(root)
    titles = [t.text for e in by_class(root, "tree-leaf") for t in e.iter(NS + "title")]
    assert titles and all(t.startswith("leaf pages in MFNs") for t in titles)


@pytest.mark.parametrize("out, code, text", [
    ("m.png", 2, "PNG"),
    ("m.txt", 2, ".svg"),
    ("nodir/m.svg", 5, "does not exist"),
])
def test_bad_output(tmp_path, out, code, text):
    path = tmp_path / out
    r = CliRunner().invoke(main, ["map", os.path.join(FIXTURES, "guest64.img"), "-o", str(path)])
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") and text in r.stderr
    assert not path.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_bad_image(tmp_path):
    r = CliRunner().invoke(main, ["map", "/nonexistent.img", "--top-mfn", "4",
                                  "-o", str(tmp_path / "m.svg")])
    assert r.exit_code == 3 and r.stderr.startswith("error: ")
    assert not (tmp_path / "m.svg").exists()
