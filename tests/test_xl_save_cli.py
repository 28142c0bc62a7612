"""p2mdump info on xl save files built by the test builder; scan refuses them."""
import json

import pytest
from click.testing import CliRunner

import savestream as B
from conftest import lookup_fast
from p2mdump.cli import main
from p2mdump.schemas import xl_save as S


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def save(tmp_path):
    path = tmp_path / "dom.save"
    path.write_bytes(B.guest_file(4, npages=1200, resend=[3, 4], nodata=[(7, S.PFINFO_XTAB)]))
    return str(path)


def test_info_json(save):
    r = run("info", save, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["container"], d["entry"], d["word_size"], d["pt_levels"]) == ("xl-save", "xl", 4, 3)
    assert d["config"]["name"] == "guest-a" and d["config"]["max_memkb"] == 262144
    assert (d["libxl_version"], d["libxc_version"], d["xen_version"]) == (2, 3, "4.17")
    assert d["domain_type"] == "x86 PV" and d["complete"] is True
    assert d["record_counts"]["libxc/PAGE_DATA"] == 4 and d["record_counts"]["libxl/END"] == 1
    assert d["page_counts"] == {"NOTAB": 1197, "L1TAB": 1, "L3TAB|PINNED": 1, "XTAB": 1}
    assert d["resent"] == 3 and d["pages_with_data"] == 1199
    assert d["p2m_frames"] == {"start_pfn": 0, "end_pfn": 1199, "count": 2,
                               "record_index": 3, "offset": d["p2m_frames"]["offset"]}
    assert d["vcpus"][0]["cr3_pfn"] == 1
    assert d["shared_info"]["max_pfn"] == d["max_pfn"] == 1200
    assert d["findings"] == []


def test_info_text(save):
    r = run("info", save)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for want in ("container      xl-save (xl entry)", "domain         guest-a (type pv",
                 "max memory 262144 KiB, target 196608 KiB", "libxl v2, libxc v3, Xen 4.17, x86 PV",
                 "guest          32-bit, 3 page-table levels", "L3TAB|PINNED 1", "XTAB 1",
                 "3 resent copies replaced", "p2m frames     pfns 0x0-0x4af in 2 frame(s)",
                 "cr3 pfn 0x1", "max_pfn 0x4b0"):
        assert want in out, want


def test_info_reports_findings_of_a_truncated_file(save):
    data = open(save, "rb").read()
    open(save, "wb").write(data[:len(data) // 2])
    r = run("info", save)
    assert r.exit_code == 0
    assert "INCOMPLETE" in r.stdout and "warning: save-truncated: record #" in r.stdout
    assert json.loads(run("info", save, "--json").stdout)["complete"] is False


@pytest.mark.parametrize("damage", ["legacy", "garbage"])
def test_unusable_save_files_exit_3(tmp_path, damage):
    path = tmp_path / "bad.save"
    libxl = B.libxl(B.libxc(B.guest_records(8, npages=4)))
    path.write_bytes(B.xl(libxl, B.CONFIG, flags=S.XL_MANDATORY_FLAG_JSON) if damage == "legacy"
                     else S.XL_MAGIC + b"\xff" * 8)
    r = run("info", str(path))
    assert r.exit_code == 3 and "Traceback" not in r.output
    assert r.stderr.count("error:") == 1
    assert ("convert-legacy-stream" if damage == "legacy" else "xl header") in r.stderr


def test_scan_refuses_save_files(save):
    r = run("scan", save)
    assert r.exit_code == 3 and "Traceback" not in r.output, r.output
    assert r.stderr.count("error:") == 1 and "xl save" in r.stderr


@pytest.mark.parametrize("opt", [["--top-mfn", "1"], ["--representation", "tree"],
                                 ["--p2m-cr3", "0x1000", "--p2m-vaddr", "0xffffc90000000000"]])
def test_tree_and_list_options_do_not_apply_to_save_files(save, opt):
    r = run("walk", save, *opt)
    assert r.exit_code == 4 and "Traceback" not in r.output, r.output
    assert r.stderr.count("error:") == 1 and "X86_PV_P2M_FRAMES" in r.stderr


def test_fast_lookup_does_not_read_a_save_file_as_raw(save):
    # a save file goes to the full CLI, which reads its saved p2m (and
    # refuses a --top-mfn there)
    code, out, err = lookup_fast([save, "--top-mfn", "1", "--pfn", "2"])
    assert code == 4 and "xl save stream" in err and out == ""
    code, out, err = lookup_fast([save, "--pfn", "2"])
    assert code == 0 and out.startswith("pfn 0x2 -> "), err
