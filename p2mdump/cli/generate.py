"""``p2mdump generate``: write a synthetic image holding a Linux-shaped p2m tree or list."""
from __future__ import annotations

import json

import click

from ..errors import SpecError
from .common import EXIT_CODES_HELP, NUMBER, SIZE
from .running import CLIError

RANGES_HELP = """\b
Ranges are inclusive pfn ranges START-END (decimal or 0x-hex), as printed by
`walk --format ranges`; several may be given, comma-separated or by repeating
the option.  A single pfn is written as START.  Later rules win: --ram <
--hole/--balloon < --identity < --foreign.
"""


def parse_ranges(values, option: str):
    out = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    i = part.index("-", 1)
                    a, b = int(part[:i], 0), int(part[i + 1:], 0)
                else:
                    a = b = int(part, 0)
            except ValueError:
                raise CLIError(f"{option}: {part!r} is not a pfn range START-END", 2) from None
            if b < a:
                raise CLIError(f"{option}: range {part!r} ends before it starts", 2)
            out.append((a, b + 1))
    return out


@click.command(epilog=RANGES_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("out", metavar="OUT")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), default=None,
              help="Read the layout spec from a JSON file (the 'spec' object of a sidecar); "
                   "options given on the command line override it.")
@click.option("--preset", type=click.Choice(["e820"]), default=None,
              help="e820: the example of the comment at the top of Linux arch/x86/xen/p2m.c "
                   "(RAM to 1029 MB, 1:1 from pfn 0x40500 to 0x7D100, dom0_mem=max:3GB,1GB).")
@click.option("--word-size", type=click.Choice(["4", "8"]), default=None,
              help="Guest word size [default: 8].")
@click.option("--max-pfn", type=NUMBER, default=None,
              help="Published max_pfn: number of pfns of the table [default: 0x8000].")
@click.option("--memory", type=SIZE, default=None,
              help="Guest memory size (e.g. 1G): sets --max-pfn to SIZE/4096.")
@click.option("--ram", multiple=True, help="Populated RAM ranges [default: 0-(max_pfn-1)].")
@click.option("--hole", multiple=True, help="Missing ranges (E820 holes).")
@click.option("--balloon", multiple=True, help="Ballooned-out (missing) ranges.")
@click.option("--identity", multiple=True, help="1:1 ranges (non-RAM regions).")
@click.option("--foreign", multiple=True, help="pfns mapping other domains' frames.")
@click.option("--mfn-order", type=click.Choice(["linear", "chunked", "shuffled"]), default=None,
              help="Numbering of the guest's MFNs in pfn order [default: linear].")
@click.option("--mfn-base", type=NUMBER, default=None,
              help="First MFN of guest RAM [default: after the tree pages].")
@click.option("--mfn-offset", type=NUMBER, default=None,
              help="Add N to every machine frame of the guest (structure pages, RAM, foreign "
                   "frames, shared_info; --mfn-base counts from it) [default: 0].  Guests "
                   "generated at disjoint offsets fit in one host image.")
@click.option("--placement", type=click.Choice(["compact", "scattered"]), default=None,
              help="Tree pages at MFNs 1.. (small file) or scattered over --scatter-span "
                   "frames (large sparse file) [default: compact].")
@click.option("--scatter-span", type=NUMBER, default=None,
              help="Frames over which scattered tree pages are spread [default: 0x400000].")
@click.option("--identity-leaf", type=click.Choice(["identity", "missing"]), default=None,
              help="Frame a whole-identity leaf slot names: p2m_identity or p2m_missing "
                   "(the 3.x boot order) [default: identity].")
@click.option("--shuffle-leaves", is_flag=True, default=None,
              help="Place the leaf pages in random MFN order.")
@click.option("--data", is_flag=True, default=None,
              help="Also write a stamped data frame (pfn, mfn) for every valid pfn.")
@click.option("--seed", type=NUMBER, default=None, help="Random seed [default: 0].")
@click.option("--base", type=NUMBER, default=0, show_default=True,
              help="File offset of machine frame 0 (raw container only).")
@click.option("--container", type=click.Choice(["raw", "xc-core", "elf", "xl-save"]),
              default="raw", show_default=True,
              help="raw: machine frame M at BASE + M*4096; xc-core: an `xl dump-core` file "
                   "(the tree pages become guest pages: the last valid pfns are remapped to "
                   "them); elf: an ELF core with one PT_LOAD per run of machine frames; "
                   "xl-save: an `xl save` file (libxl v2 / libxc v3 migration stream) as "
                   "Xen's saver writes it: pages keyed by pfn, page tables normalised to "
                   "pfns, p2m pages as they are.")
@click.option("--resend", type=click.IntRange(min=0), default=0, show_default=True,
              help="xl-save: N live-migration rounds after the first pass; before each the "
                   "guest exchanges the frames of a few pfns (chosen from the seed) and the "
                   "round resends them and the p2m pages holding them, with their new "
                   "contents. The truth describes the final state.")
@click.option("--xen-save-bug", is_flag=True, default=False,
              help="xl-save of a list/both guest: end X86_PV_P2M_FRAMES where Xen's saver "
                   "does, bug included: when the list does not start at PMD index 0 of its "
                   "page table, the pfns of its last 2 MiB PMD are never sent. Off by "
                   "default.")
@click.option("--representation", type=click.Choice(["tree", "list", "both"]), default=None,
              help="How the guest publishes its p2m. tree: the 3-level MFN tree (Linux up to "
                   "3.18). list: the virtually mapped linear list of Linux 3.19+ and the "
                   "kernel page tables that map it; shared_info names it by p2m_cr3 and "
                   "p2m_vaddr, FLL is ~0 (a domU booted with SIF_VIRT_P2M_4TOOLS); up to "
                   "2^32 pfns on 64-bit. both: the list plus the MFN tree over it, whose leaves "
                   "are the list pages (dom0, or a guest booted without the flag) "
                   "[default: tree].")
@click.option("--p2m-vaddr", type=NUMBER, default=None,
              help="Virtual address of the list (list/both; page aligned, need not start a "
                   "2 MiB PMD) [default: 0xFFFFC90000000000, the x86-64 vmalloc start; on "
                   "32-bit a 4 MiB-aligned address below the hypervisor hole 0xF5800000].")
@click.option("--p2m-generation", type=NUMBER, default=None,
              help="shared_info arch.p2m_generation (list/both) [default: 0]. Odd values "
                   "mean an update in progress and need --allow-odd-generation.")
@click.option("--allow-odd-generation", is_flag=True, default=None,
              help="Accept an odd --p2m-generation (a guest dumped while changing its list "
                   "mapping).")
@click.option("--no-other-mappings", "other_mappings", flag_value=False, default=None,
              help="List/both: map nothing but the list. By default a few other kernel pages "
                   "are mapped just before and after the list, in the same page tables, and a "
                   "separate kernel region elsewhere, so a walker must pick the right entries.")
@click.option("--xen-dumpcore-bug", is_flag=True, default=False,
              help="xc-core of a list/both guest: size the dump as Xen 4.16+ `xl dump-core` "
                   "does, bug included: when the list does not start at PMD index 0 of its "
                   "page table, the pfns of its last 2 MiB PMD are left out (zero pages and "
                   "{~0,~0} pairs instead, nr_pages unchanged). Off by default.")
@click.option("--truth", default=None, metavar="PATH",
              help="Also write the expected walk output (--format raw, pfns 0..max_pfn-1).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def generate(out, spec_file, preset, word_size, max_pfn, memory, ram, hole, balloon, identity,
             foreign, mfn_order, mfn_base, mfn_offset, placement, scatter_span, identity_leaf,
             shuffle_leaves, data, seed, base, container, representation, p2m_vaddr,
             p2m_generation, allow_odd_generation, other_mappings, xen_dumpcore_bug, resend,
             xen_save_bug, truth, quiet):
    """Write OUT: a raw machine-memory image (or, with --container, an xl
    dump-core file, an ELF core or an xl save file) holding a p2m tree or linear list shaped
    like a Linux PV guest's, plus OUT.json (word_size, page_size, top_mfn,
    max_pfn, placeholder MFNs, the spec; for a list also p2m_cr3, p2m_vaddr,
    root_mfn, paging, list_pfns and the shared frames) and, with --truth, the
    expected table (the words memory holds for pfns 0..max_pfn-1).

    Tree: missing 1 GiB (4 GiB on 32-bit) regions name one shared mid
    placeholder; missing and whole-identity leaves name shared all-INVALID
    leaf placeholders; partly-identity leaves hold pfn | IDENTITY_FRAME_BIT.

    List: whole missing / identity mid regions are mapped by PMDs pointing
    at the shared PTE pages p2m_missing_pte / p2m_identity_pte, whole missing
    / identity list pages by PTEs mapping p2m_missing / p2m_identity
    (read-only); every other list page is a page of its own.  Big sparse
    guests are written piecewise into a sparse file.
    """
    from ..atomic import check_outputs, output_transaction
    from ..sidecar import sidecar_path
    from ..writer import GuestSpec, e820_example
    from ..writer.containers import generate_container

    check_outputs({"OUT": out, "the sidecar": sidecar_path(out), "--truth": truth},
                  inputs=(spec_file,))
    fields: dict = {}
    if spec_file:
        try:
            with open(spec_file, encoding="utf-8") as fh:
                loaded = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CLIError(f"--spec {spec_file}: cannot read JSON: {exc}", 2) from None
        except RecursionError:
            raise CLIError(f"--spec {spec_file}: cannot read JSON: nested too deeply", 2) \
                from None
        loaded = loaded.get("spec", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise CLIError(f"--spec {spec_file}: not a JSON object of spec fields (or a "
                           "sidecar holding one under 'spec')", 2)
        fields.update(loaded)
    if memory is not None:
        if max_pfn is not None:
            raise CLIError("give --memory or --max-pfn, not both", 2)
        max_pfn = memory // 4096
    cli = dict(word_size=int(word_size) if word_size else None, max_pfn=max_pfn,
               mfn_order=mfn_order, mfn_base=mfn_base, mfn_offset=mfn_offset,
               placement=placement,
               scatter_span=scatter_span, identity_leaf=identity_leaf,
               shuffle_leaves=shuffle_leaves, data=data, seed=seed,
               representation=representation, p2m_vaddr=p2m_vaddr,
               p2m_generation=p2m_generation, allow_odd_generation=allow_odd_generation,
               other_mappings=other_mappings)
    fields.update({k: v for k, v in cli.items() if v is not None})
    for name, values, opt in (("ram", ram, "--ram"), ("holes", hole, "--hole"),
                              ("ballooned", balloon, "--balloon"),
                              ("identity", identity, "--identity"),
                              ("foreign", foreign, "--foreign")):
        if values:
            fields[name] = parse_ranges(values, opt)
    try:
        if preset == "e820":
            spec = e820_example(**fields)
        else:
            spec = GuestSpec.from_dict(fields)
    except TypeError as exc:
        raise SpecError(f"bad spec: {exc}") from None
    options = {}
    if xen_dumpcore_bug:
        if container != "xc-core" or spec.representation == "tree":
            raise CLIError("--xen-dumpcore-bug applies to the xc-core container of a list or "
                           "both guest", 2)
        options["xen_dumpcore_bug"] = True
    if xen_save_bug:
        if container != "xl-save" or spec.representation == "tree":
            raise CLIError("--xen-save-bug applies to the xl-save container of a list or "
                           "both guest", 2)
        options["xen_save_bug"] = True
    if resend:
        if container != "xl-save":
            raise CLIError("--resend applies to the xl-save container only", 2)
        options["resend"] = resend
    if base and container != "raw":
        raise CLIError("--base applies to the raw container only", 2)
    # the image, its sidecar and the truth: all of them or none
    with output_transaction():
        built = generate_container(spec, out, container=container, truth=truth, base=base,
                                   **options)
    if not quiet:
        _report(out, spec, built, container)


def _report(out, spec, built, container) -> None:
    """Two lines on stderr: what was written, and how to walk it."""
    if container == "xl-save":
        click.echo(f"wrote {out}: xl save of a {spec.word_size}-byte {spec.representation} "
                   f"guest, max_pfn {spec.max_pfn:#x}, pfns 0-{built.end_pfn:#x} saved, "
                   f"{len(built.p2m_frame_pfns)} p2m frames, page tables normalised", err=True)
        click.echo(f"check it: verify-stream-v2 -f xl -i {out}", err=True)
        return
    if spec.representation == "tree":
        click.echo(f"wrote {out}: {spec.word_size}-byte words, top MFN {built.top_mfn:#x}, "
                   f"max_pfn {spec.max_pfn:#x}, {built.tree_pages} tree pages, "
                   f"{built.frame_count()} frames", err=True)
        if container == "xc-core":
            click.echo(f"walk it: p2mdump walk {out}", err=True)
        else:
            click.echo(f"walk it: p2mdump walk {out} --top-mfn {built.top_mfn:#x} "
                       f"--max-pfn {spec.max_pfn:#x}", err=True)
        return
    counts = built.counts
    tree = "" if built.top_mfn is None else f", tree top MFN {built.top_mfn:#x}"
    click.echo(f"wrote {out}: {spec.word_size}-byte words ({built.mode.name}), "
               f"{spec.representation}: p2m_vaddr {built.vaddr:#x}, p2m_cr3 {built.p2m_cr3:#x} "
               f"(root MFN {built.root_mfn:#x}), max_pfn {spec.max_pfn:#x}, list of "
               f"{built.list_pfns:#x} pfns, {counts['list_pages']} list pages, "
               f"{counts['table_pages']} page-table pages{tree}"
               + ("" if container == "xc-core" else
                  f", shared_info at MFN {built.shared_info_mfn:#x}"), err=True)
    if container == "elf":
        click.echo(f"walk it: p2mdump walk {out} --p2m-cr3 {built.p2m_cr3:#x} "
                   f"--p2m-vaddr {built.vaddr:#x} --max-pfn {spec.max_pfn:#x}", err=True)
    else:
        click.echo(f"walk it: p2mdump walk {out}", err=True)
