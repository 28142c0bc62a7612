"""The result of walking one representation of a guest's p2m.

Tree (:mod:`p2mdump.walker`) and list (:mod:`p2mdump.listwalk`) walks both
return a :class:`WalkResult`: the same pfn-indexed table of raw entries and
the same kind of findings, so every output and analysis works on either.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import findings as F
from .layout import LEVEL_LEAF, Layout
from .table import P2MTable


@dataclass
class WalkResult:
    table: P2MTable
    layout: Layout
    #: MFN of the top page (tree); None for a list walk
    top_mfn: int | None
    findings: list = field(default_factory=list)
    #: "given" when max_pfn came from the caller, else "last-non-missing"
    max_pfn_source: str = "given"
    #: how the word size was chosen: "given" or "detected"
    word_size_source: str = "given"
    #: distinct frames read from the image
    pages_read: int = 0
    #: MFN of the shared mid placeholder (p2m_mid_missing_mfn), if seen
    mid_placeholder: int | None = None
    #: MFNs of shared all-INVALID leaf pages (p2m_missing, p2m_identity)
    leaf_placeholders: list = field(default_factory=list)
    source: str = ""
    #: whether the whole-table checks ran (see :meth:`check_table`)
    table_checked: bool = False
    #: which representation was walked: "tree" (p2m_top_mfn), "list" (the
    #: linear list through the guest's page tables) or "save-p2m-frames" (the
    #: p2m pages an xl save stream names)
    representation: str = "tree"
    #: the list's parameters (p2m_cr3, p2m_vaddr, generation, paging, ...)
    list_info: dict | None = None
    #: the saved p2m's X86_PV_P2M_FRAMES record (representation "save-p2m-frames")
    save_info: dict | None = None
    #: the walk built the table in the raw output file it was given
    #: (``raw_fd``), so that output is already complete
    raw_written: bool = False

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


def table_findings(table: P2MTable) -> list:
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
