"""Where a guest's p2m is, and walking it: tree or linear list.

A guest publishes its p2m as a three-level tree (``p2m_top_mfn``, shared_info
``arch.pfn_to_mfn_frame_list_list``), as a linear list mapped by its page
tables (``arch.p2m_cr3`` / ``arch.p2m_vaddr``), or both.  :func:`resolve`
decides which representation to walk and with which parameters, from (in this
order) the caller's options, the container's shared_info (an ``xl dump-core``
file) and the sidecar ``IMAGE.json`` that ``p2mdump generate`` writes.  Like
Xen's own save and dump-core code, a published list (p2m_cr3 != 0) is
preferred over the tree; ``representation`` forces one.  :func:`resolve_all`
names every representation the guest publishes (``verify`` walks both and
compares them).

After the walk the container's own findings are added and, for an ``xl
dump-core`` file, the cross-check of the table against ``.xen_p2m``.
"""
from __future__ import annotations

from .errors import EXIT_USAGE, LayoutError, P2MDumpError, TreeError
from .layout import layout_for
from .paging import word_size_from_vaddr
from .record import Record

REPRESENTATIONS = ("auto", "tree", "list")
#: the representation of an xl save stream's recorded p2m (p2mdump.savewalk)
SAVED = "save-p2m-frames"


class TopMfnRequired(P2MDumpError):
    """No --top-mfn (or list parameters) and the container does not name the p2m."""

    exit_code = EXIT_USAGE


class Resolved(Record):
    """Which representation to walk, with which parameters, and where each came from."""

    __slots__ = ("top_mfn", "word_size", "max_pfn", "top_mfn_source", "max_pfn_source",
                 "word_size_source", "representation", "p2m_cr3", "p2m_vaddr",
                 "p2m_generation", "five_level", "list_source", "extra_notes")

    def __init__(self, top_mfn: int | None, word_size: int | str, max_pfn: int | None,
                 top_mfn_source: str, max_pfn_source: str, word_size_source: str = "given",
                 representation: str = "tree", p2m_cr3: int | None = None,
                 p2m_vaddr: int | None = None, p2m_generation: int | None = None,
                 five_level: bool = False, list_source: str = "given",
                 extra_notes: list | None = None):
        self.top_mfn = top_mfn
        self.word_size = word_size   # 4, 8 or "auto"
        self.max_pfn = max_pfn
        #: where each came from: "given", "container", "sidecar" or "default"
        self.top_mfn_source = top_mfn_source
        self.max_pfn_source = max_pfn_source
        self.word_size_source = word_size_source
        #: "tree", "list" or "save-p2m-frames"
        self.representation = representation
        #: the list's parameters (representation "list")
        self.p2m_cr3 = p2m_cr3
        self.p2m_vaddr = p2m_vaddr
        self.p2m_generation = p2m_generation
        self.five_level = five_level
        self.list_source = list_source
        #: further lines for :meth:`notes` (a --top-mfn left unused, a clamped max_pfn)
        self.extra_notes = [] if extra_notes is None else extra_notes

    def notes(self) -> list:
        out = list(self.extra_notes)
        if self.representation == SAVED:
            out.append("the p2m the saver recorded: the pages named by the stream's "
                       "X86_PV_P2M_FRAMES record (machine frames of the saving host)")
        if self.representation == "list":
            where = {"container": "from .xen_shared_info arch.p2m_cr3/p2m_vaddr",
                     "sidecar": "from the generator's sidecar IMAGE.json",
                     "given": "as given"}[self.list_source]
            out.append(f"linear p2m list: p2m_cr3 {self.p2m_cr3:#x}, p2m_vaddr "
                       f"{self.p2m_vaddr:#x} {where}")
        if self.top_mfn_source == "sidecar":
            out.append(f"top MFN {self.top_mfn:#x}"
                       + (f", max_pfn {self.max_pfn:#x}" if self.max_pfn_source == "sidecar"
                          else "") + " from the generator's sidecar IMAGE.json")
        elif self.max_pfn_source == "sidecar":
            out.append(f"max_pfn {self.max_pfn:#x} from the generator's sidecar IMAGE.json")
        if self.top_mfn_source == "container":
            out.append(f"top MFN {self.top_mfn:#x} from .xen_shared_info "
                       "arch.pfn_to_mfn_frame_list_list")
        if self.word_size_source == "container":
            out.append(f"word size {self.word_size} from "
                       + ("X86_PV_INFO" if self.representation == SAVED else "e_machine"))
        if self.max_pfn_source == "container":
            out.append(f"max_pfn {self.max_pfn:#x} from .xen_shared_info arch.max_pfn")
        return out


def resolve(source, top_mfn=None, word_size="auto", max_pfn=None,
            sidecar: dict | None = None, *, representation: str = "auto",
            p2m_cr3: int | None = None, p2m_vaddr: int | None = None,
            five_level: bool = False) -> Resolved:
    """Fill in what the caller left out and pick the representation."""
    if representation not in REPRESENTATIONS:
        raise LayoutError(f"representation must be one of {', '.join(REPRESENTATIONS)}")
    if getattr(source, "is_hvm", False):
        raise TreeError(source.top_mfn_problem or f"{source.describe()}: HVM guest, no PV "
                        "p2m tree")
    if getattr(source, "saved_p2m", False):
        return _resolve_saved(source, top_mfn, word_size, max_pfn, representation, p2m_cr3,
                              p2m_vaddr)
    given_list = p2m_cr3 is not None or p2m_vaddr is not None
    want_list = representation == "list" or (representation == "auto" and (
        given_list or (top_mfn is None and (
            _container_list(source)
            or (not _container_tree(source) and _sidecar_list(sidecar, source))))))
    if want_list:
        r = _resolve_list(source, word_size, max_pfn, sidecar, p2m_cr3, p2m_vaddr, five_level)
        if top_mfn is not None:
            r.extra_notes.append(f"--top-mfn {top_mfn:#x} not used: the linear list is walked "
                                 "(as Xen's tools prefer it; --representation tree walks the "
                                 "tree, verify walks both)")
        return r
    if given_list:
        raise LayoutError("--p2m-cr3/--p2m-vaddr name a linear list; they do not go with "
                          "--representation tree")
    return _resolve_tree(source, top_mfn, word_size, max_pfn, sidecar)


def resolve_all(source, top_mfn=None, word_size="auto", max_pfn=None,
                sidecar: dict | None = None, *, representation: str = "auto",
                p2m_cr3: int | None = None, p2m_vaddr: int | None = None,
                five_level: bool = False) -> list:
    """Every representation to walk, preferred first: [list, tree] when
    ``representation`` is auto and the guest publishes both -- the
    container's shared_info names a top MFN and a p2m_cr3, the sidecar's
    representation is "both", or --top-mfn is given with --p2m-cr3 /
    --p2m-vaddr -- else the one :func:`resolve` picks.

    The tree is walked to the list's max_pfn, or to the most pfns a tree
    holds (2^27 on 64-bit) when the list is longer."""
    both_given = representation == "auto" and top_mfn is not None and (
        p2m_cr3 is not None or p2m_vaddr is not None)
    first = resolve(source, None if both_given else top_mfn, word_size, max_pfn, sidecar,
                    representation=representation, p2m_cr3=p2m_cr3, p2m_vaddr=p2m_vaddr,
                    five_level=five_level)
    if representation != "auto" or first.representation != "list":
        return [first]
    if both_given:
        top, top_source = top_mfn, "given"
    elif first.list_source == "container" and _container_tree(source):
        top, top_source = int(source.top_mfn_hint), "container"
    elif (first.list_source == "sidecar" and sidecar is not None
          and sidecar.get("representation") == "both"
          and isinstance(sidecar.get("top_mfn"), int)):
        top, top_source = sidecar["top_mfn"], "sidecar"
    else:
        return [first]
    ws = first.word_size
    if ws in (None, "auto"):
        assert first.p2m_vaddr is not None  # a list's resolution has one
        ws = word_size_from_vaddr(first.p2m_vaddr)
    capacity = layout_for(int(ws)).capacity
    tree_max = first.max_pfn
    notes = []
    if tree_max is not None and tree_max > capacity:
        tree_max = capacity
        notes.append(f"the tree is walked to pfn {capacity:#x}, the most a {int(ws) * 8}-bit "
                     f"tree holds (the list goes on to {first.max_pfn:#x})")
    tree = first.replace(top_mfn=top, top_mfn_source=top_source, max_pfn=tree_max,
                         representation="tree", p2m_cr3=None, p2m_vaddr=None,
                         p2m_generation=None, extra_notes=notes)
    return [first, tree]


def _resolve_saved(source, top_mfn, word_size, max_pfn, representation, p2m_cr3,
                   p2m_vaddr) -> Resolved:
    """An xl save stream: its saved p2m (X86_PV_P2M_FRAMES) is the one to read."""
    asked = [name for name, value in (("--top-mfn", top_mfn), ("--p2m-cr3", p2m_cr3),
                                      ("--p2m-vaddr", p2m_vaddr)) if value is not None]
    if representation != "auto":
        asked.append(f"--representation {representation}")
    if asked:
        raise LayoutError(
            f"{source.path}: {', '.join(asked)} do(es) not apply to an xl save stream: its pages "
            "are keyed by pfn and its page tables were rewritten to pfns by the saver, so the "
            "guest's tree or list cannot be walked there; the p2m the saver recorded "
            "(X86_PV_P2M_FRAMES) is read instead")
    ws, ws_source = _word_size(source, word_size, None, False)
    return Resolved(None, ws, max_pfn, "none", "given" if max_pfn is not None else "default",
                    ws_source, SAVED)


def _container_list(source) -> bool:
    return bool(getattr(source, "p2m_cr3_hint", None))


def _container_tree(source) -> bool:
    return getattr(source, "top_mfn_hint", None) is not None


def _word_size(source, word_size, sidecar, from_sidecar: bool):
    """(word size or "auto", where it came from): given, else e_machine, else the sidecar."""
    ws, ws_source = word_size, "given"
    if ws in (None, "auto"):
        ws = "auto"
        hint = getattr(source, "word_size_hint", None)
        if hint in (4, 8):
            ws, ws_source = hint, "container"
        elif from_sidecar and sidecar.get("word_size") in (4, 8):
            ws, ws_source = sidecar["word_size"], "sidecar"
    return ws, ws_source


def _resolve_list(source, word_size, max_pfn, sidecar, p2m_cr3, p2m_vaddr, five_level):
    list_source = "given"
    generation = None
    if p2m_cr3 is None and p2m_vaddr is None:
        if _container_list(source):
            p2m_cr3, p2m_vaddr = source.p2m_cr3_hint, source.p2m_vaddr_hint
            generation = source.p2m_generation_hint
            list_source = "container"
        elif _sidecar_list(sidecar, source):
            p2m_cr3, p2m_vaddr = sidecar["p2m_cr3"], sidecar["p2m_vaddr"]
            generation = sidecar.get("p2m_generation")
            list_source = "sidecar"
        else:
            problem = getattr(source, "top_mfn_problem", None)
            raise TopMfnRequired(
                f"{source.path}: no linear p2m list is named: give --p2m-cr3 and --p2m-vaddr"
                + (f" ({problem})" if problem else ""))
    if p2m_cr3 is None or p2m_vaddr is None:
        raise TopMfnRequired("a linear p2m list needs both --p2m-cr3 and --p2m-vaddr")
    ws, ws_source = _word_size(source, word_size, sidecar, list_source == "sidecar")
    mp_source = "given" if max_pfn is not None else "default"
    if max_pfn is None:
        if list_source == "container" and getattr(source, "max_pfn_hint", None):
            max_pfn, mp_source = int(source.max_pfn_hint), "container"
        elif _sidecar_fits(sidecar, source) and isinstance(sidecar.get("max_pfn"), int):
            max_pfn, mp_source = sidecar["max_pfn"], "sidecar"
        else:
            raise TopMfnRequired("a linear p2m list walk needs --max-pfn (shared_info "
                                 "arch.max_pfn): the list's length is published nowhere else")
    return Resolved(None, ws, max_pfn, "none", mp_source, ws_source, "list", p2m_cr3,
                    p2m_vaddr, generation, five_level, list_source)


def _resolve_tree(source, top_mfn, word_size, max_pfn, sidecar) -> Resolved:
    top_source = "given"
    if top_mfn is None:
        hint = getattr(source, "top_mfn_hint", None)
        if hint is not None:
            top_mfn, top_source = int(hint), "container"
        elif _sidecar_fits(sidecar, source) and isinstance(sidecar.get("top_mfn"), int):
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
    ws, ws_source = _word_size(source, word_size, sidecar, top_source == "sidecar")
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
            and sidecar.get("container", "raw") == "raw"
            and sidecar.get("base", 0) == getattr(source, "base", 0))


def _sidecar_list(sidecar, source) -> bool:
    return (_sidecar_fits(sidecar, source) and sidecar.get("representation") in ("list", "both")
            and isinstance(sidecar.get("p2m_cr3"), int)
            and isinstance(sidecar.get("p2m_vaddr"), int))


#: the representations whose walk can hand its table on instead of keeping it
STREAMED = ("tree", "list")


def can_stream(r: Resolved, source=None) -> bool:
    """Whether the walk of ``r`` can hand its table on instead of keeping it
    (``stream=`` of :func:`walk_resolved`): a tree's or a list's can; given
    ``source``, also that no cross-check needs the whole table afterwards
    (:func:`cross_checked`)."""
    return r.representation in STREAMED and (source is None or not cross_checked(source))


def cross_checked(source) -> bool:
    """Whether a walk of ``source`` is cross-checked against the whole table
    afterwards (an xl dump-core's .xen_p2m, :func:`add_container_findings`)."""
    return hasattr(source, "used_pair_chunks")


def walk_resolved(source, r: Resolved, progress=None, check_table: bool = True,
                  raw_fd: int | None = None, stream=None, scan_ahead: bool | None = None):
    """Walk what :func:`resolve` chose; a :class:`~p2mdump.result.WalkResult`.
    ``raw_fd``: an empty file the walk may build the raw table in
    (``result.raw_written`` says whether it did).  ``stream``: a tree's or
    a list's table is handed to it and not kept (see
    :func:`p2mdump.walker.walk`).  ``scan_ahead``: the kept table will be
    scanned for its runs (see :func:`p2mdump.walker.walk`); default: when
    ``check_table`` or when a cross-check will scan it
    (:func:`cross_checked`)."""
    if scan_ahead is None:
        scan_ahead = check_table or cross_checked(source)
    if stream is not None and not can_stream(r):
        raise ValueError("only a tree's or a list's walk is streamed")
    if r.representation == SAVED:
        from .savewalk import walk_saved_p2m

        return walk_saved_p2m(source.stream, max_pfn=r.max_pfn, progress=progress,
                              word_size=r.word_size if r.word_size_source == "given" else "auto",
                              check_table=check_table)
    if r.representation == "list":
        from .listwalk import walk_list

        try:
            result = walk_list(source, r.p2m_cr3, r.p2m_vaddr, word_size=r.word_size,
                               max_pfn=r.max_pfn, five_level=r.five_level,
                               generation=r.p2m_generation, progress=progress,
                               check_table=check_table, raw_fd=raw_fd, stream=stream)
        except TreeError as exc:
            if r.list_source == "container":
                raise type(exc)(f"{exc} (the list named by .xen_shared_info arch.p2m_cr3 "
                                f"{r.p2m_cr3:#x}, arch.p2m_vaddr {r.p2m_vaddr:#x}"
                                + (f"; {source.top_mfn_problem}" if getattr(
                                    source, "top_mfn_problem", None) else "")
                                + ")") from None
            raise
    else:
        from .walker import walk

        assert r.top_mfn is not None    # a tree's resolution has one
        result = walk(source, r.top_mfn, word_size=r.word_size, max_pfn=r.max_pfn,
                      progress=progress, check_table=check_table, raw_fd=raw_fd,
                      max_pfn_claimed=r.max_pfn_source in ("container", "sidecar"),
                      stream=stream, scan_ahead=scan_ahead)
    if r.max_pfn_source in ("container", "sidecar"):
        result.max_pfn_source = r.max_pfn_source
    if r.word_size_source in ("container", "sidecar"):
        result.word_size_source = r.word_size_source
    return result


def walk_image(source, top_mfn=None, word_size="auto", max_pfn=None, progress=None,
               crosscheck: bool = True, sidecar: dict | None = None,
               check_table: bool = True, *, representation: str = "auto",
               p2m_cr3: int | None = None, p2m_vaddr: int | None = None,
               five_level: bool = False, raw_fd: int | None = None):
    """(WalkResult, Resolved): the walk with the container's findings and,
    for an xl dump-core file, the cross-check against .xen_p2m."""
    r = resolve(source, top_mfn, word_size, max_pfn, sidecar, representation=representation,
                p2m_cr3=p2m_cr3, p2m_vaddr=p2m_vaddr, five_level=five_level)
    result = walk_resolved(source, r, progress=progress, check_table=check_table,
                           raw_fd=raw_fd)
    add_container_findings(source, result, crosscheck=crosscheck)
    return result, r


def add_container_findings(source, result, crosscheck: bool = True) -> None:
    """Add the container's own findings to a walk and, for an xl dump-core
    file, the cross-check of the walked table against .xen_p2m."""
    result.findings.extend(source.container_findings())
    if crosscheck and cross_checked(source):
        from .crosscheck import crosscheck_source

        result.findings.extend(crosscheck_source(result.table, source,
                                                 list_info=result.list_info))
