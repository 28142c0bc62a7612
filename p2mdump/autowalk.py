"""Walk the tree of any container, taking what the container knows.

``--top-mfn``, ``--word-size`` and ``--max-pfn`` are optional when the
container says them itself: an ``xl dump-core`` file gives the frame-list-list
(top MFN) and max_pfn from ``.xen_shared_info`` and the word size from
e_machine.  After the walk the container's own findings are added and, for an
``xl dump-core`` file, the cross-check of the tree against ``.xen_p2m``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import EXIT_USAGE, LayoutError, P2MDumpError, TreeError
from .layout import layout_for


class TopMfnRequired(P2MDumpError):
    """No --top-mfn and the container does not name the tree."""

    exit_code = EXIT_USAGE


@dataclass
class Resolved:
    top_mfn: int
    word_size: object   # 4, 8 or "auto"
    max_pfn: int | None
    #: where each came from: "given", "container" or "default"
    top_mfn_source: str
    max_pfn_source: str
    word_size_source: str = "given"

    def notes(self) -> list:
        out = []
        if self.top_mfn_source == "sidecar":
            out.append(f"top MFN {self.top_mfn:#x}"
                       + (f", max_pfn {self.max_pfn:#x}" if self.max_pfn_source == "sidecar"
                          else "") + " from the generator's sidecar IMAGE.json")
        if self.top_mfn_source == "container":
            out.append(f"top MFN {self.top_mfn:#x} from .xen_shared_info "
                       "arch.pfn_to_mfn_frame_list_list")
        if self.word_size_source == "container":
            out.append(f"word size {self.word_size} from e_machine")
        if self.max_pfn_source == "container":
            out.append(f"max_pfn {self.max_pfn:#x} from .xen_shared_info arch.max_pfn")
        return out


def resolve(source, top_mfn=None, word_size="auto", max_pfn=None,
            sidecar: dict | None = None) -> Resolved:
    """Fill in what the caller left out: from the container's hints (the
    shared_info of an xl dump-core file) or, for a raw image, from the
    ``sidecar`` dict that ``p2mdump generate`` wrote beside it."""
    if getattr(source, "is_hvm", False):
        raise TreeError(source.top_mfn_problem or f"{source.describe()}: HVM guest, no PV "
                        "p2m tree")
    top_source = "given"
    if top_mfn is None:
        hint = getattr(source, "top_mfn_hint", None)
        if hint is not None:
            top_mfn, top_source = int(hint), "container"
        elif _sidecar_fits(sidecar, source):
            top_mfn, top_source = sidecar["top_mfn"], "sidecar"
        else:
            problem = getattr(source, "top_mfn_problem", None)
            if problem:
                exc = getattr(source, "top_mfn_problem_error", TreeError)
                raise exc(f"{source.path}: {problem}")
            kind = "an ELF" if source.container == "elf" else f"a {source.container}"
            raise TopMfnRequired(
                f"{source.path}: --top-mfn is required for {kind} image: it has no "
                "shared_info naming the tree (`p2mdump scan IMAGE` finds candidates)")
    ws = word_size
    ws_source = "given"
    if ws in (None, "auto"):
        ws = "auto"
        hint = getattr(source, "word_size_hint", None)
        if hint in (4, 8):
            ws, ws_source = hint, "container"
        elif top_source == "sidecar" and sidecar.get("word_size") in (4, 8):
            ws, ws_source = sidecar["word_size"], "sidecar"
    mp_source = "given" if max_pfn is not None else "default"
    if max_pfn is None and top_source == "container":
        hint = getattr(source, "max_pfn_hint", None)
        if hint:  # 0: not published; walk to the last non-missing entry
            if ws != "auto" and hint > layout_for(int(ws)).capacity:
                raise LayoutError(
                    f"arch.max_pfn {hint:#x} in .xen_shared_info is larger than a "
                    f"{ws}-byte-word tree can hold ({layout_for(int(ws)).capacity:#x} pfns); "
                    "give --max-pfn")
            max_pfn, mp_source = int(hint), "container"
    elif max_pfn is None and top_source == "sidecar" and isinstance(sidecar.get("max_pfn"), int):
        max_pfn, mp_source = sidecar["max_pfn"], "sidecar"
    return Resolved(top_mfn, ws, max_pfn, top_source, mp_source, ws_source)


def _sidecar_fits(sidecar, source) -> bool:
    return (isinstance(sidecar, dict) and source.container == "raw"
            and isinstance(sidecar.get("top_mfn"), int)
            and sidecar.get("container", "raw") == "raw"
            and sidecar.get("base", 0) == getattr(source, "base", 0))


def walk_image(source, top_mfn=None, word_size="auto", max_pfn=None, progress=None,
               crosscheck: bool = True, sidecar: dict | None = None,
               check_table: bool = True):
    """(WalkResult, Resolved): the walk with the container's findings and,
    for an xl dump-core file, the cross-check against .xen_p2m."""
    from .walker import walk

    r = resolve(source, top_mfn, word_size, max_pfn, sidecar)
    result = walk(source, r.top_mfn, word_size=r.word_size, max_pfn=r.max_pfn,
                  progress=progress, check_table=check_table)
    if r.max_pfn_source in ("container", "sidecar"):
        result.max_pfn_source = r.max_pfn_source
    if r.word_size_source in ("container", "sidecar"):
        result.word_size_source = r.word_size_source
    result.findings.extend(source.container_findings())
    if crosscheck and hasattr(source, "pairs"):
        from .crosscheck import crosscheck as check

        result.findings.extend(check(result.table, *source.pairs()))
    return result, r
