"""p2mdump info: container facts from headers only."""
import json
import os
import time

import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from p2mdump.cli import main
from p2mdump.sources import open_image
from p2mdump.writer import GuestSpec
from p2mdump.writer.containers import generate_container


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name,ws,machine", [("core64", 8, 62), ("core32", 4, 3)])
def test_info_xc_core(name, ws, machine):
    path = os.path.join(FIXTURES, f"{name}.core")
    side = json.load(open(path + ".json"))
    r = run("info", path, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["container"], d["word_size"], d["top_mfn"], d["max_pfn"]) == \
        ("xc-core", ws, side["top_mfn"], side["max_pfn"])
    assert d["e_machine"] == machine
    assert d["header"] == {"magic": 0xF00FEBED, "guest": "PV",
                           "nr_vcpus": 2 if name == "core32" else 1,
                           "nr_pages": side["xc_core"]["nr_pages"], "page_size": 4096}
    assert d["format_version"] == 1
    assert d["xen_version"]["major"] == 4 and d["xen_version"]["pagesize"] == 4096
    assert [n["type_name"] for n in d["notes"]] == ["NONE", "HEADER", "XEN_VERSION",
                                                    "FORMAT_VERSION"]
    assert d["shared_info"]["pfn_to_mfn_frame_list_list"] == side["top_mfn"]
    assert [s["name"] for s in d["sections"]][1:] == [
        ".shstrtab", ".note.Xen", ".xen_prstatus", ".xen_shared_info", ".xen_pages", ".xen_p2m"]
    text = run("info", path).stdout
    for needle in ("container      xc-core", "magic 0xf00febed (PV)", "format version 0x1",
                   "xen version    4.19", ".xen_shared_info",
                   f"top mfn        {side['top_mfn']:#x}",
                   "p2m_cr3 0x0"):
        assert needle in text


def test_info_elf_and_raw():
    path = os.path.join(FIXTURES, "vmcore64.elf")
    d = json.loads(run("info", path, "--json").stdout)
    assert d["container"] == "elf" and d["word_size"] is None and d["top_mfn"] is None
    assert d["max_pfn"] is None and d["pt_load"] and d["machine"] == "EM_X86_64"
    assert "PT_LOAD" in run("info", path).stdout
    raw = os.path.join(FIXTURES, "guest64.img")
    d = json.loads(run("info", raw, "--json").stdout)
    assert d["container"] == "raw" and d["frame_limit"] == 74
    assert all(d[k] is None for k in ("word_size", "top_mfn", "max_pfn"))


def test_info_errors_are_one_line(tmp_path):
    r = run("info", tmp_path / "nope")
    assert r.exit_code == 3 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1
    bad = tmp_path / "bad.core"
    bad.write_bytes(b"\x7fELF\x02\x01\x01")
    r = run("info", bad)
    assert r.exit_code == 3 and "truncated ELF header" in r.stderr


def test_info_reads_headers_only_on_a_big_sparse_dump(tmp_path):
    """A 4 GiB guest's dump: info answers without touching .xen_p2m or the pages."""
    path = tmp_path / "big.core"
    generate_container(GuestSpec(word_size=8, max_pfn=0x100000), path, container="xc-core")
    assert os.path.getsize(path) > 4 << 30
    t0 = time.perf_counter()
    r = run("info", path, "--json")
    took = time.perf_counter() - t0
    assert r.exit_code == 0 and json.loads(r.stdout)["max_pfn"] == 0x100000
    assert took < 1.0
    with open_image(path) as src:
        src.info()
        assert src._index is None           # the gmfn index was never built
