"""Write a generated guest as an ``xl save`` file, laid out as Xen's saver lays it out.

The stream, in order (``tools/xl/xl_saverestore.c``,
``tools/libs/light/libxl_stream_write.c``, ``tools/libs/guest/xg_sr_save.c``,
``tools/libs/guest/xg_sr_save_x86_pv.c``): the xl header with the JSON
domain config; the libxl header and its LIBXC_CONTEXT record; the libxc
image and domain headers; X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY,
STATIC_DATA_END; X86_PV_P2M_FRAMES; PAGE_DATA for every pfn 0..end_pfn in
order, at most 1024 a record (``send_all_pages``); with ``resend`` that
many live-migration rounds, each resending the pages dirtied since
(``send_dirty_pages``); X86_TSC_INFO, SHARED_INFO, one X86_PV_VCPU_BASIC per
vCPU; the libxc END; the libxl END.

What the saver does to pages (``write_batch``, ``normalise_pagetable``):
a pfn whose p2m word is not a machine frame of the guest (missing,
identity, foreign) is sent as XTAB without data; a page table carries its
level (L1..L4, pinned for the top-level table the vCPU runs on) and is
*normalised*: Xen's own slots are zeroed (on 64-bit the L4 slots from
HYPERVISOR_VIRT_START to HYPERVISOR_VIRT_END's slot, both included; on PAE
the L3 slots 4..511) and every present entry's MFN becomes the pfn that
maps it; every other page, the p2m pages among them, is sent as it is, so
the p2m pages still hold machine frames.  vCPU 0's cr3 becomes its root
table's pfn (folded as cr3).

A live migration (``resend``): between rounds the guest exchanges the
machine frames of a few pfns (a deterministic choice from the seed), so the
p2m pages holding them change and are resent with their new contents,
together with the pfns themselves.  The last copy of a pfn is the final
state, which the truth describes.

The file is written batch by batch (memory: one batch of 1024 pages plus
the guest's tables), zero pages as holes, atomically.
"""
from __future__ import annotations

import numpy as np

from ..atomic import atomic_output
from ..layout import PAGE_SHIFT, PAGE_SIZE
from ..paging import HYPERVISOR_HOLE, PTE_FRAME_MASK, PTE_PRESENT
from ..schemas import xl_save as S
from ..sidecar import sidecar_path
from . import savestream as W
from .image import sidecar, write_json
from .listguest import ListGuest
from .listimage import list_sidecar
from .prng import Stream
from .saveguest import SaveGuest, build_save_guest

#: the pinned-table flag and the levels, as PAGE_DATA types
PINNED = S.PFINFO_LPINTAB
LEVEL_TYPE = {1: S.PFINFO_L1TAB, 2: S.PFINFO_L2TAB, 3: S.PFINFO_L3TAB, 4: S.PFINFO_L4TAB}
#: pairs of pfns whose frames a guest exchanges per live-migration round (at most)
SWAPS_PER_ROUND = 16
#: the first MFN of the frames Xen maps in its own L4 slots of a 64-bit guest (stand-ins:
#: the saver zeroes those slots, whatever they name)
XEN_SLOT_MFN = 0xF00000


def xen_slots(mode, level: int) -> range:
    """The entries of a ``level`` table that the saver zeroes as Xen's own."""
    if mode.word_size == 8:
        if level != 4:
            return range(0)
        start, end = HYPERVISOR_HOLE[8]
        first = mode.index(start, 4)
        # Xen's last index is that of HYPERVISOR_VIRT_END (one past the hole), included
        last = mode.index(end + 1, 4)
        return range(first, last + 1)
    if level == 3:
        return range(mode.top_entries, PAGE_SIZE // 8)
    return range(0)


def with_xen_slots(mode, level: int, ptes: np.ndarray) -> np.ndarray:
    """A 64-bit guest's L4 as Xen keeps it: its own slots filled in (each naming a frame of
    Xen's).  Other tables are returned unchanged."""
    if mode.word_size != 8 or level != 4:
        return ptes
    out = ptes.copy()
    first = mode.index(HYPERVISOR_HOLE[8][0], 4)
    last = mode.index(HYPERVISOR_HOLE[8][1], 4)
    n = last - first + 1
    out[first:last + 1] = ((np.arange(n, dtype=np.uint64) + np.uint64(XEN_SLOT_MFN))
                           << np.uint64(PAGE_SHIFT)) | np.uint64(PTE_PRESENT)
    return out


def normalise_pagetable(save: SaveGuest, level: int, ptes: np.ndarray) -> np.ndarray:
    """The page table ``ptes`` (512 64-bit entries at ``level``) as the saver sends it."""
    out = np.array(ptes, dtype=np.uint64)
    slots = xen_slots(save.mode, level)
    out[slots.start:slots.stop] = 0
    present = (out & np.uint64(PTE_PRESENT)) != 0
    if present.any():
        frames = (out[present] & np.uint64(PTE_FRAME_MASK)) >> np.uint64(PAGE_SHIFT)
        pfns = save.pfn_of(frames)
        out[present] = (out[present] & ~np.uint64(PTE_FRAME_MASK)) | (pfns << np.uint64(PAGE_SHIFT))
    return out


def page_batch(save: SaveGuest, pfns: np.ndarray):
    """The PAGE_DATA words and page contents of ``pfns`` (ascending, at most
    1024), as ``write_batch`` sends them: a (k, 4096) uint8 array for the k
    words with data, or, for a guest without data frames, a
    :class:`~.savestream.SparsePages` (only the structure pages are not zero),
    or None when no word has data."""
    p2m_words = np.empty(len(pfns), dtype=save.layout.numpy_dtype)
    # runs of consecutive pfns are read at once
    brk = np.flatnonzero(np.diff(pfns.astype(np.int64)) != 1) + 1
    pos = 0
    for run in np.split(pfns, brk):
        a = int(run[0])
        p2m_words[pos:pos + len(run)] = save.words(a, a + len(run))
        pos += len(run)
    own = save.own_mask(p2m_words)
    types = np.full(len(pfns), S.PFINFO_XTAB, dtype=np.uint64)
    types[own] = S.PFINFO_NOTAB
    opfns, omfns = pfns[own], p2m_words[own].astype(np.uint64)
    pages = None
    if len(opfns):
        pages = save.data_frames(opfns, omfns)
        if pages is None:
            pages = W.SparsePages(len(opfns))
        struct = save.structure_words(omfns)
        for i in np.flatnonzero(save.is_structure(omfns)).tolist():
            mfn = int(omfns[i])
            words = struct[mfn]
            level = save.levels.get(mfn)
            if level is not None:
                words = normalise_pagetable(save, level,
                                            with_xen_slots(save.mode, level, words))
                kind = LEVEL_TYPE[level] | (PINNED if mfn == save.root_mfn else 0)
                types[np.flatnonzero(own)[i]] = kind
            pages[i] = np.frombuffer(np.ascontiguousarray(words).tobytes(), dtype=np.uint8)
    words = (types << np.uint64(S.PAGE_DATA_TYPE_SHIFT)) | pfns.astype(np.uint64)
    return words, pages


def send_pages(out: W.RecordStream, save: SaveGuest, pfns: np.ndarray) -> int:
    """PAGE_DATA records for ``pfns`` (ascending) in batches; returns pages with data."""
    sent = 0
    for a in range(0, len(pfns), S.PAGE_DATA_MAX_COUNT):
        words, pages = page_batch(save, pfns[a:a + S.PAGE_DATA_MAX_COUNT])
        out.page_data(words, pages)
        sent += 0 if pages is None else len(pages)
    return sent


def choose_swaps(save: SaveGuest, rng: Stream):
    """Pairs of own, non-structure pfns (at most SWAPS_PER_ROUND) whose frames the guest
    exchanges before a round: (a, b) arrays."""
    span = save.end_pfn + 1
    draws = (rng.words(4 * SWAPS_PER_ROUND) % np.uint64(span)).astype(np.uint64)
    cand = []
    seen = set()
    for p in draws.tolist():
        if p in seen:
            continue
        seen.add(p)
        w = save.words(p, p + 1)
        if save.own_mask(w)[0] and not save.is_structure(w.astype(np.uint64))[0]:
            cand.append(p)
    k = min(SWAPS_PER_ROUND, len(cand) // 2)
    return (np.array(cand[:k], dtype=np.uint64), np.array(cand[k:2 * k], dtype=np.uint64))


def dirty_pfns(save: SaveGuest, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pfns a round resends after (a, b) swapped: them and the p2m frames holding them."""
    fpp = save.layout.per_page
    swapped = np.concatenate([a, b])
    frames = save.p2m_frame_pfns[(swapped // np.uint64(fpp)).astype(np.int64)]
    return np.unique(np.concatenate([swapped, frames]))


def write_xl_save(save: SaveGuest, path, *, resend: int = 0, vcpus: int = 1,
                  name: str = "p2mdump-guest") -> tuple[SaveGuest, dict]:
    """Write ``save`` as an ``xl save`` file at ``path``.  Returns the guest in its
    final state (after the resend rounds) and a description of the stream."""
    ws = save.spec.word_size
    config = W.domain_config(name=name, word_size=ws, max_pfn=save.max_pfn, vcpus=vcpus)
    rng = Stream(save.spec.seed ^ 0x5A7E5A7E)
    rounds = []
    with atomic_output(path, "wb") as fh:
        out = W.RecordStream(fh.fileno())
        out.raw(W.xl_header(config))
        out.raw(W.libxl_header())
        out.record(S.LIBXL_REC_LIBXC_CONTEXT)
        libxc_start = out.offset
        out.raw(W.libxc_headers())
        out.record(S.REC_X86_PV_INFO, W.pv_info(ws, save.mode.levels))
        out.record(S.REC_X86_CPUID_POLICY, W.cpuid_policy())
        out.record(S.REC_X86_MSR_POLICY, W.msr_policy())
        out.record(S.REC_STATIC_DATA_END)
        out.record(S.REC_X86_PV_P2M_FRAMES, W.p2m_frames(save.end_pfn, save.p2m_frame_pfns))
        first = out.offset
        sent = 0
        step = 1 << 18
        for a in range(0, save.end_pfn + 1, step):
            pfns = np.arange(a, min(a + step, save.end_pfn + 1), dtype=np.uint64)
            sent += send_pages(out, save, pfns)
        for _ in range(resend):
            sa, sb = choose_swaps(save, rng)
            save = save.with_swaps(sa, sb)
            dirty = dirty_pfns(save, sa, sb)
            pages = send_pages(out, save, dirty) if len(dirty) else 0
            rounds.append({"swapped_pfns": sorted(int(x) for x in np.concatenate([sa, sb])),
                           "resent_pfns": len(dirty), "resent_pages": pages})
        out.record(S.REC_X86_TSC_INFO, W.tsc_info())
        out.record(S.REC_SHARED_INFO, save.shared_info_page())
        for vcpu in range(vcpus):
            out.record(S.REC_X86_PV_VCPU_BASIC, W.vcpu_basic(vcpu, ws, save.cr3()))
        out.record(S.REC_END)
        out.record(S.LIBXL_REC_END)
        size = out.finish()
    info = {"size": size, "records": out.records, "libxc_offset": libxc_start,
            "page_data_offset": first, "end_pfn": save.end_pfn,
            "p2m_frames": len(save.p2m_frame_pfns), "pages_sent": sent,
            "page_bytes_written": out.page_bytes_written, "vcpus": vcpus,
            "cr3_pfn": int(save.pfn_of([save.root_mfn])[0]),
            "root_level": save.mode.levels, "resend_rounds": rounds}
    return save, info


def generate_xl_save(spec, out, *, truth=None, sidecar_file=None, resend: int = 0,
                     xen_save_bug: bool = False) -> SaveGuest:
    """Build ``spec`` and write it as an ``xl save`` file ``out``, its sidecar and, when
    asked, the truth (of the final state).  Returns the final :class:`SaveGuest`."""
    save = build_save_guest(spec, xen_save_bug=xen_save_bug)
    save, info = write_xl_save(save, out, resend=resend)
    extra = {"xl_save": info,
             "structure_pfns": [int(save.struct_pfns[0]), int(save.struct_pfns[-1]) + 1]}
    if xen_save_bug:
        extra["xen_save_bug"] = {"end_pfn": save.end_pfn,
                                 "dropped": [save.end_pfn + 1, save.max_pfn]}
    if isinstance(save.guest, ListGuest):
        data = list_sidecar(save.guest, "xl-save", 0, extra)
    else:
        data = sidecar(save.guest, "xl-save", 0, extra)
    write_json(sidecar_file or sidecar_path(out), data)
    if truth is not None:
        save.write_truth(truth)
    return save
