"""The result of walking one representation of a guest's p2m.

Tree (:mod:`p2mdump.walker`) and list (:mod:`p2mdump.listwalk`) walks both
return a :class:`WalkResult`: the same pfn-indexed table of raw entries and
the same kind of findings, so every output and analysis works on either.
A streamed walk (``stream=``) keeps no entries: its table is a
:class:`~p2mdump.table.StreamedTable`, which has the counts and the runs.
"""
from __future__ import annotations

from . import findings as F
from .layout import LEVEL_LEAF, Layout
from .record import Record
from .table import RunTable


class WalkResult(Record):
    """The table of one walk and what the walk saw."""

    __slots__ = ("table", "layout", "top_mfn", "findings", "max_pfn_source",
                 "word_size_source", "pages_read", "mid_placeholder", "leaf_placeholders",
                 "source", "table_checked", "representation", "list_info", "save_info",
                 "raw_written")

    def __init__(self, table: RunTable, layout: Layout, top_mfn: int | None,
                 findings: list | None = None, max_pfn_source: str = "given",
                 word_size_source: str = "given", pages_read: int = 0,
                 mid_placeholder: int | None = None, leaf_placeholders: list | None = None,
                 source: str = "", table_checked: bool = False, representation: str = "tree",
                 list_info: dict | None = None, save_info: dict | None = None,
                 raw_written: bool = False):
        self.table = table
        self.layout = layout
        #: MFN of the top page (tree); None for a list walk
        self.top_mfn = top_mfn
        self.findings = [] if findings is None else findings
        #: "given" when max_pfn came from the caller, else "last-non-missing"
        self.max_pfn_source = max_pfn_source
        #: how the word size was chosen: "given" or "detected"
        self.word_size_source = word_size_source
        #: distinct frames read from the image
        self.pages_read = pages_read
        #: MFN of the shared mid placeholder (p2m_mid_missing_mfn), if seen
        self.mid_placeholder = mid_placeholder
        #: MFNs of shared all-INVALID leaf pages (p2m_missing, p2m_identity)
        self.leaf_placeholders = [] if leaf_placeholders is None else leaf_placeholders
        self.source = source
        #: whether the whole-table checks ran (see :meth:`check_table`)
        self.table_checked = table_checked
        #: which representation was walked: "tree" (p2m_top_mfn), "list" (the
        #: linear list through the guest's page tables) or "save-p2m-frames" (the
        #: p2m pages an xl save stream names)
        self.representation = representation
        #: the list's parameters (p2m_cr3, p2m_vaddr, generation, paging, ...)
        self.list_info = list_info
        #: the saved p2m's X86_PV_P2M_FRAMES record (representation "save-p2m-frames")
        self.save_info = save_info
        #: the walk built the table in the raw output file it was given
        #: (``raw_fd``), so that output is already complete
        self.raw_written = raw_written

    @property
    def max_pfn(self) -> int:
        return len(self.table)

    @property
    def word_size(self) -> int:
        return self.layout.word_size

    def check_table(self) -> None:
        """Add the whole-table findings (once)."""
        if not self.table_checked:
            self.table_checked = True
            self.findings.extend(table_findings(self.table))

    def warnings(self) -> list:
        return [f for f in self.findings if f.is_warning]

    def summary(self) -> dict:
        counts = self.table.counts()
        out = {
            "representation": self.representation,
            "source": self.source,
            "word_size": self.layout.word_size,
            "word_size_source": self.word_size_source,
            "top_mfn": self.top_mfn,
            "max_pfn": self.max_pfn,
            "max_pfn_source": self.max_pfn_source,
            "counts": counts,
            "pages_read": self.pages_read,
            "mid_placeholder": self.mid_placeholder,
            "leaf_placeholders": list(self.leaf_placeholders),
            "warnings": len(self.warnings()),
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.list_info is not None:
            out["list"] = dict(self.list_info)
        if self.save_info is not None:
            out["save"] = dict(self.save_info)
        return out


def table_findings(table: RunTable) -> list:
    """Findings that need the whole table: duplicate machine frames."""
    out = []
    total, examples = table.duplicate_mfns()
    if total:
        ex = ", ".join(f"mfn {m:#x} <- pfns {a:#x} and {b:#x}" for m, a, b in examples)
        out.append(F.Finding(
            F.DUPLICATE_MFN, F.WARNING,
            f"{total} pfns map to a machine frame another pfn already maps ({ex})",
            level=LEVEL_LEAF, count=total,
            mfn=examples[0][0] if examples else None,
            pfn_first=min(examples[0][1:]) if examples else None,
            examples=[{"mfn": m, "pfns": [a, b]} for m, a, b in examples]))
    return out
