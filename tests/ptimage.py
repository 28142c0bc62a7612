"""Page tables and linear p2m lists built by hand, word by word, for the tests.

The index math here is written out on its own (not the walker's).  A
:class:`Memory` is machine memory as a dict of frames; it becomes a sparse
raw image, or is written into the frames of an existing file.
:func:`build_list_guest` lays out a Linux 3.19+ style linear p2m list (list
pages mapped at ``p2m_vaddr`` by the guest's page tables) with every odd
case a test needs, page by page.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2mdump.layout import Layout, layout_for
from p2mdump.paging import (KERNPG_TABLE, PAE, PAGE_KERNEL, PAGE_KERNEL_RO, PTE_FRAME_MASK,
                            PTE_PAT_LARGE, PTE_PRESENT, PTE_PSE, PagingMode, fold_cr3)
from p2mdump.sources.raw import RawImage

KIB4 = 4096
MIB2 = 2 << 20
GIB = 1 << 30
#: list pages one level-2 (PMD) entry covers: 2 MiB of virtual space
PAGES_PER_PMD = 512


class Memory:
    """Machine memory written by hand: 64-bit words in 4 KiB frames, saved as a
    sparse raw image of ``nframes`` frames (frames at or past it are not in the image).

    New frames come from ``first_free`` upwards, or from ``pool`` (an
    iterable of MFNs) when given: the frames a container holds."""

    def __init__(self, nframes: int, first_free: int = 1, pool=None):
        self.nframes = nframes
        self.frames: dict[int, np.ndarray] = {}
        self.next = first_free
        self.pool = None if pool is None else iter(pool)

    def alloc(self) -> int:
        """A new all-zero frame (a fresh page-table page)."""
        if self.pool is not None:
            mfn = next(m for m in self.pool if m not in self.frames)
        else:
            while self.next in self.frames:
                self.next += 1
            mfn = self.next
        self.frames[mfn] = np.zeros(512, dtype="<u8")
        return mfn

    def alloc_aligned(self, count: int, align: int) -> int:
        """``count`` new consecutive all-zero frames from a multiple of ``align``."""
        assert self.pool is None, "aligned runs come from first_free upwards"
        base = -(-self.next // align) * align
        while any(m in self.frames for m in range(base, base + count)):
            base += align
        for m in range(base, base + count):
            self.frames[m] = np.zeros(512, dtype="<u8")
        return base

    def put(self, mfn: int, index: int, value: int) -> None:
        self.frames.setdefault(mfn, np.zeros(512, dtype="<u8"))[index] = value

    def put_bytes(self, mfn: int, data: bytes) -> None:
        """Frame ``mfn`` holds ``data`` (4096 bytes)."""
        assert len(data) == KIB4
        self.frames[mfn] = np.frombuffer(data, dtype="<u8").copy()

    def get(self, mfn: int, index: int) -> int:
        return int(self.frames[mfn][index])

    def image(self, path) -> RawImage:
        with open(path, "wb") as fh:
            fh.truncate(self.nframes * KIB4)
            for mfn, words in sorted(self.frames.items()):
                if mfn < self.nframes:
                    fh.seek(mfn * KIB4)
                    fh.write(words.tobytes())
        return RawImage(path)

    def patch(self, path, offset_of=lambda mfn: mfn * KIB4) -> None:
        """Write every frame into the existing file ``path`` at ``offset_of(mfn)``."""
        with open(path, "r+b") as fh:
            for mfn, words in sorted(self.frames.items()):
                fh.seek(offset_of(mfn))
                fh.write(words.tobytes())


def table(mfn):
    return (mfn << 12) | KERNPG_TABLE


def page(mfn):
    return (mfn << 12) | PAGE_KERNEL


def large(mfn, pat=False):
    return (mfn << 12) | PAGE_KERNEL | PTE_PSE | (PTE_PAT_LARGE if pat else 0)


def levels_of(mode):
    return {"x86-64": 4, "x86-64-5level": 5, "pae": 3}[mode.name]


def index(mode, va, level):
    """Entry index of ``va`` at ``level``, written out for the tests."""
    shift = 12 + 9 * (level - 1)
    bits = 2 if (mode is PAE and level == 3) else 9
    return (va >> shift) & ((1 << bits) - 1)


def install(mem, mode, root, va, leaf_level, entry):
    """Write ``entry`` as the level-``leaf_level`` entry of ``va``, making the
    tables above it on the way."""
    tbl = root
    for level in range(levels_of(mode), leaf_level, -1):
        i = index(mode, va, level)
        e = mem.get(tbl, i)
        if e & PTE_PRESENT:
            child = (e & PTE_FRAME_MASK) >> 12
        else:
            child = mem.alloc()
            mem.put(tbl, i, table(child))
        tbl = child
    mem.put(tbl, index(mode, va, leaf_level), entry)
    return tbl


def table_of(mem, mode, root, va, level):
    """MFN of the level-``level`` table on ``va``'s path (written by install)."""
    tbl = root
    for lv in range(levels_of(mode), level, -1):
        tbl = (mem.get(tbl, index(mode, va, lv)) & PTE_FRAME_MASK) >> 12
    return tbl


class CountingImage(RawImage):
    """A raw image that counts how often each frame is read."""

    def __init__(self, path):
        super().__init__(path)
        self.reads = {}

    def read_frames_into(self, mfn, buf):
        got = super().read_frames_into(mfn, buf)
        for m in range(mfn, mfn + got):
            self.reads[m] = self.reads.get(m, 0) + 1
        return got


# -- linear p2m lists -------------------------------------------------------------------------

#: what one list page can be: its own frame of entries ("own"); the shared
#: all-INVALID frame (Linux p2m_missing: "missing"); a non-present PTE
#: ("unmapped"); a PTE naming a frame outside the image ("absent") or frame 0
#: ("zero").  Whole PMDs (512 list pages): one 2 MiB page ("large"), a
#: non-present PMD entry ("nopmd"), a PMD naming the shared PTE page whose
#: entries all map the missing frame (Linux p2m_missing_pte: "shared-pte").
PAGE_KINDS = ("own", "missing", "unmapped", "absent", "zero")
PMD_KINDS = ("large", "nopmd", "shared-pte")
#: the kinds whose pages hold entries (the others read as missing)
HOLDING = ("own", "large")


@dataclass
class ListGuest:
    """A hand-built list guest."""

    mode: PagingMode
    root: int
    p2m_vaddr: int
    max_pfn: int
    #: kind of each list page
    kinds: list
    #: what the list says for pfns 0..max_pfn-1, as its walk must read it
    expected: np.ndarray
    #: list page -> MFN of the frame holding it (own and large pages)
    frames: dict
    #: MFN of the shared all-INVALID frame (None when no page uses it)
    missing_frame: int | None

    @property
    def word_size(self) -> int:
        return self.mode.word_size

    @property
    def layout(self) -> Layout:
        return layout_for(self.word_size)

    @property
    def cr3(self) -> int:
        return fold_cr3(self.root, self.word_size)

    @property
    def levels(self) -> int:
        return levels_of(self.mode)

    def pages_of(self, *kinds) -> list:
        return [i for i, k in enumerate(self.kinds) if k in kinds]

    def entry_vaddr(self, pfn: int) -> int:
        return self.p2m_vaddr + pfn * self.word_size


def random_entries(L: Layout, count: int, rng) -> np.ndarray:
    """p2m words of every kind: valid MFNs, INVALID, identity and foreign frames."""
    mfns = rng.integers(1, 1 << (L.bits - 2), count, dtype=np.uint64)
    which = rng.choice(4, count, p=[0.7, 0.15, 0.1, 0.05])
    pfns = np.arange(count, dtype=np.uint64)
    words = np.where(which == 0, mfns, np.uint64(L.invalid))
    words = np.where(which == 2, pfns | np.uint64(L.identity_bit), words)
    words = np.where(which == 3, mfns | np.uint64(L.foreign_bit), words)
    return words.astype(L.numpy_dtype)


def build_list_guest(mem: Memory, mode: PagingMode, p2m_vaddr: int, max_pfn: int, kinds,
                     *, root: int | None = None, content=None, seed: int = 0,
                     self_map=None) -> ListGuest:
    """Lay out a linear p2m list of ``max_pfn`` pfns at ``p2m_vaddr`` (2 MiB
    aligned) in ``mem``, under the top table ``root`` (a new frame by default).

    ``kinds``: one of :data:`PAGE_KINDS` / :data:`PMD_KINDS` per list page (a
    PMD kind covers whole PMDs).  ``content``: the list's words for pfns
    0..max_pfn-1 (random by default).  ``self_map``: {pfn: list page}: the
    pfn (in a page holding entries) maps the frame of that list page, as a
    real guest's list pages are guest pages of its own."""
    L = layout_for(mode.word_size)
    fpp = L.per_page
    n_pages = L.leaves_for(max_pfn)
    assert len(kinds) == n_pages and p2m_vaddr % MIB2 == 0
    rng = np.random.default_rng(seed)
    if root is None:
        root = mem.alloc()
    words = np.full(n_pages * fpp, L.invalid, dtype=L.numpy_dtype)
    words[:max_pfn] = random_entries(L, max_pfn, rng) if content is None else content
    missing = None
    frames: dict[int, int] = {}

    def missing_frame():
        nonlocal missing
        if missing is None:
            missing = mem.alloc()
            mem.put_bytes(missing, b"\xff" * KIB4)
        return missing

    shared_pte = None
    for g in range(0, n_pages, PAGES_PER_PMD):
        group = kinds[g:g + PAGES_PER_PMD]
        va = p2m_vaddr + g * KIB4
        pmd_kinds = set(group) & set(PMD_KINDS)
        if pmd_kinds:
            assert len(set(group)) == 1, f"PMD kind {pmd_kinds} must cover the whole PMD"
            kind = group[0]
            if kind == "large":
                base = mem.alloc_aligned(PAGES_PER_PMD, PAGES_PER_PMD)
                install(mem, mode, root, va, 2, large(base))
                frames.update({g + j: base + j for j in range(len(group))})
            elif kind == "nopmd":
                install(mem, mode, root, va, 2, 0x1234000)        # a frame, no present bit
            else:
                if shared_pte is None:
                    shared_pte = mem.alloc()
                    mem.frames[shared_pte][:] = (missing_frame() << 12) | PAGE_KERNEL_RO
                install(mem, mode, root, va, 2, table(shared_pte))
            continue
        for j, kind in enumerate(group):
            i = g + j
            va_i = p2m_vaddr + i * KIB4
            if kind == "own":
                frames[i] = mem.alloc()
                entry = page(frames[i])
            elif kind == "missing":
                entry = (missing_frame() << 12) | PAGE_KERNEL_RO
            elif kind == "unmapped":
                entry = 0x5000                                    # a frame, no present bit
            elif kind == "absent":
                entry = page(mem.nframes + 7 + i)
            elif kind == "zero":
                entry = page(0)
            else:
                raise AssertionError(f"unknown list page kind {kind!r}")
            install(mem, mode, root, va_i, 1, entry)
    for pfn, list_page in (self_map or {}).items():
        assert kinds[pfn // fpp] in HOLDING and pfn < max_pfn
        words[pfn] = frames[list_page]
    for i, frame in frames.items():
        mem.put_bytes(frame, words[i * fpp:(i + 1) * fpp].tobytes())
    expected = words.reshape(n_pages, fpp).copy()
    held = np.array([k in HOLDING for k in kinds])
    expected[~held] = L.invalid
    return ListGuest(mode, root, p2m_vaddr, max_pfn, list(kinds),
                     expected.reshape(-1)[:max_pfn].copy(), frames, missing)
