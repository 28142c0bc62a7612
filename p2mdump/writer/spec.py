"""A guest layout spec: what the generated p2m should say, and how the guest publishes it.

Ranges are half-open ``(start, end)`` pfn pairs.  Later rules win:
``ram`` (populated, valid MFNs) < ``holes`` and ``ballooned`` (missing) <
``identity`` (``pfn | IDENTITY_FRAME_BIT``) < ``foreign``
(``FOREIGN_FRAME(mfn)`` of another domain's frame).

``representation`` says how the guest publishes its p2m (reference
sections 2 and 3): ``tree`` (the 3-level MFN tree of Linux up to 3.18),
``list`` (the virtually mapped linear list of Linux 3.19+, reached through
shared_info ``p2m_cr3`` / ``p2m_vaddr``; FLL = ~0 as with
SIF_VIRT_P2M_4TOOLS) or ``both`` (the list plus the MFN tree built over it,
as a guest booted without SIF_VIRT_P2M_4TOOLS, or dom0, keeps).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SpecError
from ..layout import PAGE_SIZE, WORD_SIZES, layout_for
from ..paging import MACHINE_ADDRESS_LIMIT, MAX_LIST_PFNS
from . import listlayout

MFN_ORDERS = ("linear", "chunked", "shuffled")
PLACEMENTS = ("compact", "scattered")
IDENTITY_LEAVES = ("identity", "missing")
REPRESENTATIONS = ("tree", "list", "both")
#: spec fields that only a list / both guest uses (left out of a tree
#: guest's dict, so tree sidecars stay what they were)
LIST_FIELDS = {"representation": "tree", "p2m_vaddr": None, "p2m_generation": 0,
               "allow_odd_generation": False, "other_mappings": True}
#: spec fields that hold an integer (or None) and a boolean: a spec read from
#: JSON is checked against them before any is used
INT_FIELDS = ("word_size", "max_pfn", "mfn_base", "scatter_span", "seed", "p2m_vaddr",
              "p2m_generation", "mfn_offset")
BOOL_FIELDS = ("shuffle_leaves", "data", "allow_odd_generation", "other_mappings")


@dataclass
class GuestSpec:
    #: guest word size: 8 (x86_64) or 4 (i386 PAE)
    word_size: int = 8
    #: published arch.max_pfn: the number of pfns the table covers
    max_pfn: int = 0x8000
    #: populated RAM pfn ranges; None means [(0, max_pfn)]
    ram: list | None = None
    #: pfn ranges that are missing although inside RAM (E820 holes)
    holes: list = field(default_factory=list)
    #: pfn ranges given back to Xen by the balloon driver (missing)
    ballooned: list = field(default_factory=list)
    #: 1:1 ranges (non-RAM E820 regions): entries pfn | IDENTITY_FRAME_BIT
    identity: list = field(default_factory=list)
    #: pfn ranges mapping grant-mapped frames of other domains
    foreign: list = field(default_factory=list)
    #: how the guest's own MFNs are numbered in pfn order
    mfn_order: str = "linear"
    #: first MFN of the guest's RAM; None: right after the tree pages
    mfn_base: int | None = None
    #: "compact": tree pages at MFNs 1..; "scattered": spread over scatter_span
    placement: str = "compact"
    #: frames over which scattered tree pages are spread
    scatter_span: int = 1 << 22
    #: which frame a mid slot of a whole-identity leaf names: a p2m_identity
    #: page of its own ("identity", 3.18 after a rebuild / linear-list kernels)
    #: or p2m_missing ("missing", the 3.x boot order)
    identity_leaf: str = "identity"
    #: put real leaf pages in random MFN order instead of pfn order
    shuffle_leaves: bool = False
    #: write a stamped data frame (pfn, mfn) for every valid pfn
    data: bool = False
    seed: int = 0
    #: how the guest publishes its p2m: "tree", "list" or "both"
    representation: str = "tree"
    #: virtual address of the list; None: where Linux puts it
    #: (:func:`.listlayout.default_vaddr`)
    p2m_vaddr: int | None = None
    #: shared_info arch.p2m_generation (even; odd means "update in progress")
    p2m_generation: int = 0
    #: accept an odd p2m_generation (a guest dumped mid-update)
    allow_odd_generation: bool = False
    #: map a few other kernel pages beside the list (in its page tables, just
    #: before and after it) and a separate region elsewhere
    other_mappings: bool = True
    #: added to every machine frame of the guest (structure pages, RAM,
    #: foreign frames, shared_info; mfn_base counts from it), so that guests
    #: generated at disjoint offsets can share one host image
    mfn_offset: int = 0

    def __post_init__(self):
        self._check_types()
        if self.word_size not in WORD_SIZES:
            raise SpecError(f"word_size must be 4 or 8, not {self.word_size!r}")
        if self.representation not in REPRESENTATIONS:
            raise SpecError(f"representation must be one of {', '.join(REPRESENTATIONS)}")
        lay = layout_for(self.word_size)
        if self.representation == "list":
            # a list-only guest may describe more pfns than a tree (2^27 / 2^30)
            capacity, what = MAX_LIST_PFNS[self.word_size], "list"
        else:
            capacity, what = lay.capacity, "tree"
        if self.ram is None:
            self.ram = [(0, self.max_pfn)]
        for name in ("ram", "holes", "ballooned", "identity", "foreign"):
            ranges = [tuple(int(x) for x in r) for r in getattr(self, name)]
            for a, b in ranges:
                if not 0 <= a <= b:
                    raise SpecError(f"{name}: bad range {a:#x}-{b:#x}")
                if b > capacity:
                    raise SpecError(f"{name}: range end {b:#x} is past the capacity of a "
                                    f"{self.word_size}-byte {what} ({capacity:#x} pfns)")
            setattr(self, name, ranges)
        if not 0 <= self.max_pfn <= capacity:
            raise SpecError(f"max_pfn {self.max_pfn:#x} is past the capacity of a "
                            f"{self.word_size}-byte {what} ({capacity:#x} pfns)")
        self._check_list_fields(lay)
        if not isinstance(self.mfn_offset, int) or self.mfn_offset < 0:
            raise SpecError(f"mfn_offset must be a non-negative integer (got {self.mfn_offset!r})")
        if self.mfn_order not in MFN_ORDERS:
            raise SpecError(f"mfn_order must be one of {', '.join(MFN_ORDERS)}")
        if self.placement not in PLACEMENTS:
            raise SpecError(f"placement must be one of {', '.join(PLACEMENTS)}")
        if self.identity_leaf not in IDENTITY_LEAVES:
            raise SpecError(f"identity_leaf must be one of {', '.join(IDENTITY_LEAVES)}")

    def _check_types(self) -> None:
        """Numbers are integers (not booleans or strings), flags booleans, and
        the guest's machine frames stay below the largest machine address."""
        for name in INT_FIELDS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise SpecError(f"{name} must be an integer, not {v!r}")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{name} must be true or false, not {getattr(self, name)!r}")
        for name in ("ram", "holes", "ballooned", "identity", "foreign"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (list, tuple)):
                raise SpecError(f"{name} must be a list of [start, end) pfn pairs, not {v!r}")
        limit = MACHINE_ADDRESS_LIMIT // PAGE_SIZE
        for name in ("mfn_base", "mfn_offset", "scatter_span", "max_pfn"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < limit:
                raise SpecError(f"{name} {v:#x} is out of range: machine frames end at "
                                f"{limit:#x} (52-bit machine addresses)")
        top = (self.mfn_offset + (self.mfn_base or 0) + self.max_pfn
               + (self.scatter_span if self.placement == "scattered" else 0))
        if top >= limit:
            raise SpecError(f"the guest's machine frames would reach MFN {top:#x} "
                            f"(mfn_offset + mfn_base + max_pfn), past the last one, "
                            f"{limit - 1:#x} (52-bit machine addresses)")

    def _check_list_fields(self, lay) -> None:
        if self.representation == "tree":
            for name, default in LIST_FIELDS.items():
                if getattr(self, name) != default:
                    raise SpecError(f"{name} applies to list and both representations only")
            return
        if self.identity_leaf != "identity":
            raise SpecError("identity_leaf applies to tree guests only (a list page of "
                            "identity pfns maps p2m_identity)")
        if self.max_pfn < 1:
            raise SpecError("a list guest needs max_pfn of at least 1")
        if self.p2m_vaddr is not None:
            try:
                self.p2m_vaddr = int(self.p2m_vaddr)
            except (TypeError, ValueError):
                raise SpecError(f"p2m_vaddr {self.p2m_vaddr!r} is not a number") from None
        gen = self.p2m_generation
        if not isinstance(gen, int) or not 0 <= gen <= lay.word_mask:
            raise SpecError(f"p2m_generation must be a {self.word_size}-byte unsigned number")
        if gen % 2 and not self.allow_odd_generation:
            raise SpecError(f"p2m_generation {gen} is odd (the guest is changing its list "
                            "mapping); allow_odd_generation (--allow-odd-generation) "
                            "writes one on purpose")
        nbytes = self.list_pfns * self.word_size
        vaddr = self.list_vaddr
        problem = listlayout.vaddr_problem(self.word_size, vaddr, nbytes)
        if problem:
            raise SpecError(f"{problem} (a list of {self.list_pfns:#x} pfns, {nbytes:#x} bytes)")

    @property
    def list_pfns(self) -> int:
        """xen_p2m_size: the length of the guest's list (whole mid regions)."""
        return listlayout.list_pfns(self.extent, self.word_size)

    @property
    def list_vaddr(self) -> int:
        """Where the list starts: ``p2m_vaddr`` or the Linux-like default."""
        if self.p2m_vaddr is not None:
            return int(self.p2m_vaddr)
        return listlayout.default_vaddr(self.word_size, self.list_pfns * self.word_size)

    @property
    def extent(self) -> int:
        """pfns the tree must describe: max_pfn or the end of the last range."""
        ends = [b for name in ("ram", "holes", "ballooned", "identity", "foreign")
                for _, b in getattr(self, name)]
        return max([self.max_pfn] + ends)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.representation == "tree":
            for name in LIST_FIELDS:
                del out[name]
        if not self.mfn_offset:
            del out["mfn_offset"]     # sidecars of unshifted guests stay as they were
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "GuestSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"bad spec: {exc}") from None


def e820_example(word_size: int = 8, **overrides) -> GuestSpec:
    """The E820 example of the comment at the top of Linux arch/x86/xen/p2m.c.

    RAM to 1029 MB (pfn 0x40500), ACPI/reserved/gap to 2001 MB (0x7D100) set
    1:1, RAM again to 2048 MB; ``dom0_mem=max:3GB,1GB``: only the first 1 GB
    (0x40000 pfns) is populated, the rest of the RAM is not present (balloon),
    and max_pfn covers 3 GB (0xC0000 pfns).
    """
    spec: dict[str, Any] = dict(word_size=word_size, max_pfn=0xC0000,
                ram=[(0, 0x40000)],
                identity=[(0x40500, 0x7D100)])
    spec.update(overrides)
    return GuestSpec(**spec)
