"""Findings: what a walk saw that a reader should know about.

A finding is data, not an exception.  Severity ``info`` is for what a healthy
guest also has (well-formed shared placeholder pages); ``warning`` is for
damage or anything suspicious.
"""
from __future__ import annotations

from .record import Record

INFO = "info"
WARNING = "warning"

# finding kinds
UNREADABLE = "unreadable-frame"      # a pointer names a frame not (fully) in the image
MFN_ZERO = "mfn-zero"                # a pointer slot holds MFN 0
SHARED_PAGE = "shared-page"          # one MFN referenced from more than one slot
CROSS_LEVEL = "cross-level-page"     # one MFN used at two tree levels
PAST_MAX_PFN = "entries-past-max-pfn"  # non-missing entries at or past max_pfn
DUPLICATE_MFN = "duplicate-mfn"      # two pfns -> the same valid mfn
EMPTY_TREE = "empty-tree"            # no pfn maps to anything
TABLE_BUDGET = "table-beyond-image"  # a table length the image's frames cannot back


class Finding(Record):
    """One thing a walk saw: its kind, severity and message, and where."""

    __slots__ = ("kind", "severity", "message", "level", "slot", "mfn", "parent_mfn", "count",
                 "pfn_first", "pfn_last", "examples", "vaddr_first", "vaddr_last")

    def __init__(self, kind: str, severity: str, message: str, level: str | None = None,
                 slot: int | None = None, mfn: int | None = None,
                 parent_mfn: int | None = None, count: int = 1, pfn_first: int | None = None,
                 pfn_last: int | None = None, examples: list | None = None,
                 vaddr_first: int | None = None, vaddr_last: int | None = None):
        self.kind = kind
        self.severity = severity
        self.message = message
        #: tree level of the page the finding is about: "top", "mid" or "leaf"
        self.level = level
        #: index of the (first) pointer slot naming that page, in its parent page
        self.slot = slot
        #: MFN of the page the finding is about
        self.mfn = mfn
        #: MFN of the page holding the slot
        self.parent_mfn = parent_mfn
        #: number of slots / entries concerned
        self.count = count
        #: first and last pfn concerned (inclusive)
        self.pfn_first = pfn_first
        self.pfn_last = pfn_last
        #: a few concrete examples, for duplicates and the like
        self.examples = [] if examples is None else examples
        #: first and last guest virtual address concerned (page-table findings)
        self.vaddr_first = vaddr_first
        self.vaddr_last = vaddr_last

    @property
    def is_warning(self) -> bool:
        return self.severity == WARNING

    def to_dict(self) -> dict:
        """Every field, lists and dicts copied (as ``dataclasses.asdict`` gives them)."""
        return {n: _copied(getattr(self, n)) for n in self.__slots__}

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}: {self.message}"


def _copied(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_copied(k), _copied(v)) for k, v in value.items())
    return value


# container findings (xl dump-core / ELF) and the .xen_p2m cross-check
CONTAINER = "container"                      # something odd in the container's headers
DUMP_DUPLICATE_PFN = "dump-duplicate-pfn"    # .xen_p2m names one pfn twice
DUMP_DUPLICATE_GMFN = "dump-duplicate-gmfn"  # .xen_p2m names one gmfn twice
DUMP_UNSORTED = "dump-unsorted"              # .xen_p2m pfns not strictly ascending
DUMP_LACKS_PFN = "dump-lacks-pfn"            # the tree maps a pfn .xen_p2m lacks
DUMP_GMFN_MISMATCH = "dump-gmfn-mismatch"    # a .xen_p2m pair's gmfn differs from the tree
DUMP_UNKNOWN_PAGE = "dump-unknown-page"      # a .xen_p2m page the tree does not map

# page-table walk findings (p2mdump.pagetable); ``level`` is "pt-l1" .. "pt-l5"
PT_NOT_PRESENT = "pt-not-present"    # a table entry on the path lacks the present bit
PT_UNREADABLE = "pt-unreadable"      # a table entry names a table frame not in the image
PT_FRAME_ZERO = "pt-frame-zero"      # a table entry names frame 0
PT_LOOP = "pt-loop"                  # one table page used at two levels (a table that maps itself)
PT_LARGE_PAGE = "pt-large-page"      # a 2 MiB / 1 GiB mapping on the path
PT_SHARED_TABLE = "pt-shared-table"  # one table page named by several entries

# list walk findings (p2mdump.listwalk)
LIST_GENERATION_ODD = "p2m-generation-odd"   # the dump caught a p2m update in progress
#: the list's virtual range is odd (hypervisor hole, ...)
LIST_RANGE = "list-range"
LIST_SHORT = "list-short"                    # max_pfn goes past what the list maps

# xl save files (p2mdump.sources.xl_save); each message names the record index and offset
SAVE_TRUNCATED = "save-truncated"            # the stream ends inside a record or before END
SAVE_RECORD_LENGTH = "save-record-length"    # a record's length disagrees with its contents
SAVE_PAGE_COUNT = "save-page-count"          # a PAGE_DATA count of 0 or over 1024
SAVE_RESERVED = "save-reserved-bits"         # reserved bits or fields not zero
SAVE_PAGE_TYPE = "save-bad-page-type"        # a PAGE_DATA type no saver writes (5-8)
SAVE_ABSURD_PFN = "save-absurd-pfn"          # a pfn beyond what any guest can have
SAVE_UNKNOWN_RECORD = "save-unknown-record"  # a mandatory record type p2mdump does not know
SAVE_PADDING = "save-padding"                # non-zero bytes in a record's padding
SAVE_CONFIG = "save-config"                  # the domain config is not (valid) JSON
SAVE_RECORD = "save-record"                  # a known record with odd contents
SAVE_TRAILING = "save-trailing-data"         # bytes after the END record
SAVE_TOO_MANY = "save-too-many-findings"     # further findings of one kind not listed

# saved-p2m findings (p2mdump.savewalk): an xl save stream's X86_PV_P2M_FRAMES
SAVE_P2M_RECORD = "save-p2m-record"            # the record disagrees with itself or the stream
SAVE_P2M_SHORT = "save-p2m-short"            # arch.max_pfn goes past the saved p2m
SAVE_P2M_FRAME_NO_DATA = "save-p2m-frame-no-data"    # a named p2m frame has no page data
SAVE_P2M_FRAME_UNMAPPED = "save-p2m-frame-unmapped"  # a p2m frame's pfn is not mapped
SAVE_VALID_NO_DATA = "save-valid-no-data"    # a pfn maps to a frame but has no page data
SAVE_DATA_UNMAPPED = "save-data-unmapped"    # a page in the stream for a pfn not mapped
