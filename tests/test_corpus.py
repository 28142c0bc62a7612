"""The corruption corpus (:mod:`corpus`): every damaged fixture ends with a
documented exit code, never a traceback, one ``error:`` line when failing;
a few representative cases end exactly as they should; the worst ones
stay far below a hard address-space limit."""
import json
import re
import os
import subprocess
import sys
import tempfile

import pytest

import corpus

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def outcomes():
    return run_cases(corpus.all_cases())


def run_cases(cases) -> dict:
    """case name -> outcome, each case run in a fresh temporary folder."""
    from click.testing import CliRunner

    runner = CliRunner()
    out = {}
    for case in cases:
        with tempfile.TemporaryDirectory() as folder:
            out[case.name] = corpus.run_case(case, folder, runner)
    return out


def test_corpus_covers_every_container_and_command(outcomes):
    kinds = {o.case.kind for o in outcomes.values()}
    assert kinds == set(corpus.FIXTURES)
    ran = {cmd for o in outcomes.values() for cmd in o.runs}
    assert ran == set(corpus.COMMANDS)
    assert len(outcomes) > 1000
    for prefix in ("ehdr.", "shdr[", "phdr[", "note[", "xch.", "xen_p2m[", "top[", "mid[",
                   "leaf_missing[", "mid_missing[", "pt-l4", "pt-l1", "listpage", "arch.",
                   "cut-"):
        assert any(("/" + prefix) in n for n in outcomes), prefix
    # the 32-bit kinds get the same damage classes
    for kind in ("raw-tree32", "xc-core-tree32", "elf32", "elf-class32"):
        for prefix in ("top[", "mid[", "leaf_missing[", "leaf_identity[", "mid_missing["):
            assert any(n.startswith(f"{kind}/{prefix}") for n in outcomes), (kind, prefix)
    for kind, prefixes in {"xc-core-tree32": ("ehdr.", "shdr[", "note[", "xch.", "xen_p2m[",
                                              "arch."),
                           "elf-class32": ("ehdr.", "phdr["), "elf32": ("ehdr.", "phdr["),
                           "raw-list32": ("pt-l3", "pt-l2", "pt-l1", "listpage", "arch.")
                           }.items():
        for prefix in prefixes:
            assert any(n.startswith(f"{kind}/{prefix}") for n in outcomes), (kind, prefix)


def test_no_case_breaks_the_rules(outcomes):
    bad = [p for o in outcomes.values() for p in corpus.problems(o)]
    assert not bad, "\n".join(bad[:40])
    counts = corpus.exit_counts(outcomes.values())
    print(f"\n{len(outcomes)} cases, {sum(counts.values())} runs, by exit code: {counts}")
    # the damage matters: some cases are refused, some walk with findings
    assert counts.get(0) and counts.get(3) and counts.get(4) and counts.get(1)


def unmet_expectations(outcomes) -> tuple[list, int]:
    """(what did not end as its case expects, how many expectations were checked)."""
    wrong, checked = [], 0
    for o in outcomes.values():
        for cmd, code, needle in o.case.expect:
            got, text = o.runs[cmd]
            checked += 1
            if got != code or needle not in text:
                wrong.append(f"{o.case.name} {cmd}: exit {got} (want {code}, {needle!r}): "
                             f"{text.strip().splitlines()[-3:]}")
    return wrong, checked


def test_cases_end_as_expected(outcomes):
    """Every truncated file ends with its named error or finding."""
    wrong, checked = unmet_expectations(outcomes)
    assert not wrong, "\n".join(wrong[:30])
    assert checked > 500


def test_truncation_cuts_every_structure(outcomes):
    """Each container is cut inside its headers, tables, sections, segments and
    the pages of every tree level or list structure; the cuts end in every
    way a cut can: the container refused, the tree or list refused, findings."""
    cuts = {n: o for n, o in outcomes.items() if "/cut-" in n}
    for kind in corpus.FIXTURES:
        names = [n.split("/cut-")[1] for n in cuts if n.startswith(kind + "/")]
        want = ["empty", "top-" if "tree" in kind or "elf" in kind else "pt-l1@"]
        want += {"raw": ["in-frame0", "mid0-" if "tree" in kind else "listpage0-"],
                 "xc-": ["in-ident", "in-ehdr", "shdr-table-", ".xen_pages-", ".xen_p2m-",
                         ".shstrtab-"],
                 "elf": ["in-ident", "in-ehdr", "phdr-table-", "seg0-"]}[kind[:3]]
        for w in want:
            assert any(n.startswith(w) or w in n for n in names), (kind, w)
    walks = {o.runs["walk"][0] for o in cuts.values()}
    assert walks == {0, 3, 4}
    assert sum("warning: unreadable-frame: " in o.runs["walk"][1] for o in cuts.values()) > 20


@pytest.mark.parametrize("name,code,needle", [
    ("raw-tree32/cut-top-middle@0x4800", 4, "top MFN 0x4 is not in the image"),
    ("raw-list32/cut-pt-l2@0x7-start@0x7000", 4, "map no page of the list"),
    ("xc-core-tree32/cut-sec5.xen_pages-middle@0x16b800", 3, "section 1 (string table)"),
    ("elf-class32/cut-in-ehdr@0x28", 3, "ELFCLASS32 needs 52"),
    ("elf32/cut-seg0-middle@0x172000", 3, "PT_LOAD #0 (p_offset, p_filesz)"),
])
def test_representative_truncations(outcomes, name, code, needle):
    got, text = _run(outcomes, name)
    assert got == code, text
    assert needle in _error(text)


def _run(outcomes, name, cmd="walk"):
    assert name in outcomes, name
    return outcomes[name].runs[cmd]


def _error(text):
    return [ln for ln in text.splitlines() if ln.startswith("error:")][0]


@pytest.mark.parametrize("name,code,needle", [
    ("xc-core-tree/shdr[.xen_pages].sh_offset=max", 3, ".xen_pages (sh_offset, sh_size)"),
    ("xc-core-tree/ehdr.e_machine=0", 3, "e_machine is 0"),
    ("xc-core-tree/xch.xch_magic=0", 3, "xch_magic is 0x0"),
    ("elf/phdr[7].p_filesz=max", 3, "is larger than p_memsz"),
    ("elf/phdr[7].p_memsz=max", 3, "runs past the largest machine address"),
    ("xc-core-tree/arch.pfn_to_mfn_frame_list_list=0", 4, "had not set up its p2m tree"),
    ("xc-core-list/arch.p2m_cr3=0", 4, "arch.p2m_cr3 is 0"),
])
def test_representative_errors(outcomes, name, code, needle):
    got, text = _run(outcomes, name)
    assert got == code, text
    assert needle in _error(text)


@pytest.mark.parametrize("name,kind", [
    ("raw-tree/top[0]=0", "mfn-zero"),
    ("raw-tree/mid[1]=self", "cross-level-page"),
    ("raw-tree/mid[0]=past-end", "unreadable-frame"),
    ("raw-tree/mid_missing[0]=leaf", "shared-page"),
    ("raw-tree32/cut-leaf17-start@0x17000", "unreadable-frame"),
    ("raw-list32/cut-listpage0-start@0x25000", "unreadable-frame"),
])
def test_representative_findings(outcomes, name, kind):
    code, text = _run(outcomes, name)
    assert code == 0, text
    assert f"warning: {kind}:" in text


def test_pt_load_to_the_machine_limit_is_scanned_like_the_file(outcomes):
    for field in ("p_memsz", "p_paddr"):
        o = outcomes[f"elf/phdr[7].{field}=to-limit"]
        code, text = o.runs["scan"]
        assert code == 0, text
        assert json.loads(text[text.index("["):])[0]["representation"] == "tree"


# -- the worst cases under a hard address-space limit ---------------------------------

AS_LIMIT = 1536 << 20
#: values that claim the most (sizes, counts, addresses at their maximum)
WORST = ("=max", "=~0", "=huge", "=to-limit", "=garbage", "=past-end")

_RUNNER = """
import json, resource, sys, tempfile
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, sys.argv[2])
import corpus
names = set(json.loads(sys.stdin.read()))
bad, counts = [], {}
for case in corpus.all_cases():
    if case.name not in names:
        continue
    case = corpus.Case(**dict(case.__dict__, commands=("walk", "scan")))
    with tempfile.TemporaryDirectory() as folder:
        o = corpus.run_case(case, folder)
    bad += corpus.problems(o)
    for code, _ in o.runs.values():
        counts[code] = counts.get(code, 0) + 1
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"bad": bad, "counts": counts, "hwm_kib": int(hwm), "cases": len(names)}))
"""


def worst_names():
    """The cases claiming the most; of the 32-bit kinds (whose scans take
    longer) one in four."""
    return [c.name for c in corpus.all_cases()
            if c.name.endswith(WORST) and not c.name.split("/")[1].startswith(("ehdr", "note"))
            and corpus._h(c.name) % 3 == 0
            and (not c.kind.endswith("32") or corpus._h(c.name + "worst") % 4 == 0)
            or c.name.endswith("=to-limit")]


def test_worst_cases_under_an_address_space_limit():
    names = worst_names()
    assert len(names) > 100
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(AS_LIMIT), HERE],
                         input=json.dumps(names), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nworst {res['cases']} cases under RLIMIT_AS {AS_LIMIT >> 20} MiB: "
          f"exit codes {res['counts']}, peak RSS {res['hwm_kib'] >> 10} MiB")
    assert not res["bad"], "\n".join(res["bad"][:40])
    assert "6" not in res["counts"]          # no case ran out of memory
    assert res["hwm_kib"] < 512 * 1024


# -- xl save streams --------------------------------------------------------------------

@pytest.fixture(scope="module")
def save_outcomes():
    return run_cases(corpus.save_cases())


def test_save_corpus_covers_every_kind_group_and_command(save_outcomes):
    assert {o.case.kind for o in save_outcomes.values()} == set(corpus.SAVE_SPECS)
    assert {cmd for o in save_outcomes.values() for cmd in o.runs} == set(corpus.SAVE_COMMANDS)
    assert len(save_outcomes) > 700
    for group in ("xl.", "xl.config.", "libxl.", "libxc.", "domain.", "rec[", "cut-at-",
                  "cut-in-header-", "cut-in-body-", "page_data[", "pv_info.", "p2m_frames.",
                  "shared_info.arch.max_pfn", "insert-unknown-mandatory",
                  "insert-unknown-optional", "config="):
        assert any(("/" + group) in n for n in save_outcomes), group


def test_no_save_case_breaks_the_rules(save_outcomes):
    """Documented exit codes, no traceback, one error: line, no output left behind."""
    bad = [p for o in save_outcomes.values() for p in corpus.problems(o)]
    assert not bad, "\n".join(bad[:40])
    counts = corpus.exit_counts(save_outcomes.values())
    print(f"\n{len(save_outcomes)} save cases, {sum(counts.values())} runs, by exit code: "
          f"{counts}")
    assert counts.get(0) and counts.get(1) and counts.get(3) and counts.get(4)


def test_save_cases_end_as_expected(save_outcomes):
    wrong, checked = unmet_expectations(save_outcomes)
    assert not wrong, "\n".join(wrong[:30])
    assert checked > 300


def test_damaged_records_are_named_by_index_and_offset(save_outcomes):
    """A walk of a stream with a damaged record length ends in an error or
    with a finding naming a record (its index and file offset)."""
    for name, o in save_outcomes.items():
        if "/rec[" not in name:
            continue
        code, text = o.runs["walk"]
        if code == 0:
            assert re.search(r"warning: save-[a-z-]+: record #\d+ \(lib\S+ [A-Z0-9_()]+\) at "
                             r"offset 0x[0-9a-f]+", text), (name, text)
        else:
            assert code in (3, 4), (name, text)


@pytest.mark.parametrize("name,code,needle", [
    ("save-tree64/xl.byteorder=0", 3, "xl header at offset 0: byte order marker 0x00000000"),
    ("save-list32/xl.optional_data_len=max", 3, "runs past the end of the file"),
    ("save-tree64/libxl.version=max", 3, "libxl stream header at offset 0x451: version"),
    ("save-list32/libxc.marker=0", 3, "libxc image header at offset 0x469: marker/ident 0x0/"),
    ("save-tree64/domain.type=0", 3, "unknown domain type 0"),
    ("save-tree64/domain.page_shift=max", 3, "page_shift 65535"),
    ("save-tree64/cut-empty", 3, "empty file"),
    ("save-tree32/cut-at-rec[5:libxc:0x3]", 4, "no X86_PV_P2M_FRAMES record"),
    ("save-list64/rec[1:libxc:0x2].length=0", 4, "no X86_PV_INFO record"),
])
def test_representative_save_errors(save_outcomes, name, code, needle):
    got, text = save_outcomes[name].runs["walk"]
    assert got == code, text
    assert needle in _error(text)


def test_truncated_page_data_keeps_the_pages_before_the_cut(save_outcomes):
    for kind in corpus.SAVE_SPECS:
        name = next(n for n in save_outcomes if n.startswith(f"{kind}/cut-in-body-rec[")
                    and n.endswith(":libxc:0x1]"))
        code, text = save_outcomes[name].runs["walk"]
        assert code == 0, text
        assert re.search(r"save-truncated: record #\d+ \(libxc PAGE_DATA\) at offset 0x[0-9a-f]+"
                         r": its \d+-byte body runs past the end of the file \(\d+ bytes\); "
                         r"\d+ of its \d+ pages indexed", text), text


_SAVE_RUNNER = """
import json, resource, sys, tempfile
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, sys.argv[2])
import corpus
names = set(json.loads(sys.stdin.read()))
bad, counts = [], {}
for case in corpus.save_cases():
    if case.name not in names:
        continue
    case = corpus.Case(**dict(case.__dict__, commands=corpus.SAVE_COMMANDS))
    with tempfile.TemporaryDirectory() as folder:
        o = corpus.run_case(case, folder)
    bad += corpus.problems(o)
    for code, _ in o.runs.values():
        counts[code] = counts.get(code, 0) + 1
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"bad": bad, "counts": counts, "hwm_kib": int(hwm), "cases": len(names)}))
"""

#: the save cases that claim the most (lengths, counts, pfns, max_pfn at their maximum)
SAVE_WORST = ("length=max", "count=2^32-1", "pfn=2^52-1", "start=2^32-1,arch.max_pfn=0",
              "end=2^32-1", "arch.max_pfn=max", "arch.max_pfn=2^63", "pfn[0]=~0",
              "insert-unknown-mandatory-huge", "optional_data_len=max", "config_len=max")


def test_worst_save_cases_under_an_address_space_limit():
    names = [c.name for c in corpus.save_cases() if any(w in c.name for w in SAVE_WORST)
             and (c.kind in corpus.SAVE_FULL or "p2m_frames" in c.name)]
    assert len(names) > 30
    out = subprocess.run([sys.executable, "-c", _SAVE_RUNNER, str(AS_LIMIT), HERE],
                         input=json.dumps(names), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nworst {res['cases']} save cases under RLIMIT_AS {AS_LIMIT >> 20} MiB: "
          f"exit codes {res['counts']}, peak RSS {res['hwm_kib'] >> 10} MiB")
    assert not res["bad"], "\n".join(res["bad"][:40])
    assert "6" not in res["counts"]
    assert res["hwm_kib"] < 256 * 1024
