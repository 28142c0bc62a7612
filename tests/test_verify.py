"""verify: exit 0 only on a healthy tree; each kind of damage is a finding."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.sources.raw import RawImage
from p2mdump.verify import verify
from p2mdump.writer import GuestSpec, generate

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
HEALTHY = ["guest64.img", "guest32.img", "e820-64.img", "e820-32.img", "scattered64.img",
           "data64.img", "data32.img", "list64.img", "list32.img", "both64.img",
           "listcore64.core"]


def run(*args):
    return CliRunner().invoke(main, ["verify"] + [str(a) for a in args])


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_fixtures_pass(name):
    r = run(os.path.join(FIXTURES, name))
    assert r.exit_code == 0, r.output
    assert "OK: 0 warning(s)" in r.stdout


@pytest.fixture
def guest(tmp_path):
    """A 64-bit guest with an identity hole and foreign pfns; returns a damager."""
    spec = GuestSpec(word_size=8, max_pfn=0x3000, ram=[(0, 0x3000)], identity=[(0xA0, 0x100)],
                     foreign=[(0x2000, 0x2004)], seed=9)
    img = tmp_path / "g.img"
    tree = generate(spec, img)

    def damage(edits, name="bad.img"):
        data = bytearray(img.read_bytes())
        for mfn, slot, value in edits:
            off = mfn * 4096 + slot * 8
            if isinstance(value, bytes):
                data[off:off + len(value)] = value
            else:
                data[off:off + 8] = value.to_bytes(8, "little")
        out = tmp_path / name
        out.write_bytes(bytes(data))
        return str(out)

    return str(img), tree, damage


def findings(path, *extra):
    r = run(path, "--json", *extra)
    data = json.loads(r.stdout)
    for f in data["findings"]:
        assert {"kind", "level", "slot", "mfn", "severity"} <= set(f)
    return r.exit_code, data


def test_healthy_generated(guest):
    img, tree, damage = guest
    code, data = findings(img, "--top-mfn", tree.top_mfn, "--max-pfn", 0x3000)
    assert code == 0 and data["ok"] is True
    kinds = {f["kind"] for f in data["findings"]}
    assert "foreign-entries" in kinds  # listed, but not a problem
    fe = [f for f in data["findings"] if f["kind"] == "foreign-entries"][0]
    assert fe["severity"] == "info" and fe["count"] == 4 and fe["pfn_first"] == 0x2000


def _leaf_of(tree, pfn):
    L = tree.layout
    mid = int(tree.top[L.top_index(pfn)])
    return int(tree.mids[mid][L.mid_index(pfn)]), mid


def test_each_damage_is_found(guest):
    img, tree, damage = guest
    L = tree.layout
    top = tree.top_mfn
    leaf0, mid0 = _leaf_of(tree, 0)
    leaf1, _ = _leaf_of(tree, 0x200)
    ph = tree.placeholders
    rng = np.random.default_rng(0)
    cases = {
        # a mid slot naming MFN 0
        "mfn-zero": [(mid0, 3, 0)],
        # a mid slot naming a frame outside the image
        "unreadable-frame": [(mid0, 4, 0x7fffffff)],
        # an identity entry that is not its own pfn
        "identity-mismatch": [(leaf0, 0xA5, 0xA6 | L.identity_bit)],
        # the leaf placeholder holds a mapping
        "shared-page": [(ph["leaf_missing"], 7, 0x1234)],
        # leaf 1 named again from another slot
        "shared-page ": [(mid0, 5, leaf1)],
        # a leaf of random words
        "garbage-leaf": [(leaf1, 0, rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())],
        # both flag bits
        "bad-flags": [(leaf1, 9, L.identity_bit | L.foreign_bit | 5)],
        # a foreign entry naming one of the guest's own frames
        "foreign-own-mfn": [(_leaf_of(tree, 0x2000)[0], 0, int(tree.truth[0x10]) | L.foreign_bit)],
        # the top naming its own page as a mid page
        "cross-level-page": [(top, 1, top)],
    }
    for i, (kind, edits) in enumerate(cases.items()):
        path = damage(edits, f"bad{i}.img")
        code, data = findings(path, "--top-mfn", top, "--word-size", 8)
        warn = [f for f in data["findings"] if f["severity"] == "warning"]
        assert code == 1, kind
        assert data["ok"] is False
        assert kind.strip() in {f["kind"] for f in warn}, (kind, [f["kind"] for f in warn])


def test_garbage_leaf_names_the_page(guest):
    img, tree, damage = guest
    leaf1, mid0 = _leaf_of(tree, 0x200)
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with RawImage(damage([(leaf1, 0, noise)])) as src:
        rep = verify(src, tree.top_mfn)
    g = [f for f in rep.findings if f.kind == "garbage-leaf"][0]
    assert g.mfn == leaf1 and g.slot == 1 and g.parent_mfn == mid0
    assert (g.pfn_first, g.pfn_last) == (0x200, 0x3ff)
    assert not rep.ok


def test_entries_past_max_pfn(guest):
    img, tree, damage = guest
    code, data = findings(img, "--top-mfn", tree.top_mfn, "--max-pfn", 0x1000)
    assert code == 1
    past = [f for f in data["findings"] if f["kind"] == "entries-past-max-pfn"]
    assert past and past[0]["pfn_first"] == 0x1000


def test_text_output_and_quiet(guest):
    img, tree, damage = guest
    r = run(damage([(_leaf_of(tree, 0)[1], 3, 0)]), "--top-mfn", tree.top_mfn)
    assert r.exit_code == 1
    assert "warning: mfn-zero" in r.stdout and r.stdout.strip().endswith("info")
    r = run(img, "--top-mfn", tree.top_mfn, "-q")
    assert r.exit_code == 0 and r.stdout.startswith("OK")


@pytest.mark.parametrize("args, code", [
    (["/nonexistent.img", "--top-mfn", "4"], 3),
    ([os.path.join(FIXTURES, "guest64.img"), "--top-mfn", "0x100000"], 4),
    ([os.path.join(FIXTURES, "guest64.img"), "--top-mfn", "2"], 4),
    ([os.path.join(FIXTURES, "guest64.img"), "--top-mfn", "4", "--max-pfn", "0x10000000"], 4),
    ([os.path.join(FIXTURES, "guest64.img"), "--top-mfn", "x"], 2),
])
def test_bad_input(args, code):
    r = run(*args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_wrong_top_is_a_problem_not_a_crash():
    """A mid page given as the top: walked, and everything is wrong."""
    code, data = findings(os.path.join(FIXTURES, "guest64.img"), "--top-mfn", 5)
    assert code == 1 and not data["ok"]
