"""One sequential pass over a save file's records.

The libxl stream's records are read up to its LIBXC_CONTEXT record, the libxc
stream (image and domain header, then records) up to its END, then the libxl
stream again up to its END.  Page data is never read: a PAGE_DATA record's
header and pfn words are read, its pages stepped over by offset; the pfn
words of consecutive PAGE_DATA records are decoded together (a batch of up
to :data:`BATCH_WORDS`) and go to the :class:`PageIndexBuilder`.  A batch is
decoded before anything else is reported, so findings keep stream order.
Every size taken from the file is checked against the file's real size
before anything is read or allocated from it.
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ... import findings as F
from ...layout import PAGE_SIZE
from ...paging import unfold_cr3
from ...schemas import xl_save as S
from . import headers as H
from .pageindex import HAS_DATA, INVALID_TYPE, PageIndexBuilder, decode_words, split_words

#: a pfn at or past this is beyond any guest (4 PiB of memory) and reported
ABSURD_PFN = 1 << 40
#: vCPU record entries kept (4 records for each of 8192 vCPUs); more are counted
MAX_VCPU_RECORDS = 4 * 8192
#: distinct unknown record names counted one by one; the rest share a name
MAX_UNKNOWN_NAMES = 64
#: pfn words of consecutive PAGE_DATA records decoded at once
BATCH_WORDS = 1 << 16

LIBXL, LIBXC = "libxl", "libxc"
_REC = S.flat_struct(S.RecordHeader)
_PAGE_DATA = S.flat_struct(S.PageDataHeader)
#: a word below ABSURD_PFN is then a plain page (type NOTAB, with data) of that pfn
_NOTAB_IS_ZERO = S.PFINFO_NOTAB == 0 and bool(HAS_DATA[S.PFINFO_NOTAB])
#: a record header and the PAGE_DATA header after it, read at once
_PAGE_DATA_HEAD = struct.Struct(_REC.format + _PAGE_DATA.format.lstrip("<"))
_VCPU = S.flat_struct(S.VcpuHeader)
_P2M_FRAMES = S.flat_struct(S.X86PvP2mFramesHeader)
_RESERVED_MASK = np.uint64(S.PAGE_DATA_RESERVED_MASK)


@dataclass
class P2mFrames:
    """The X86_PV_P2M_FRAMES record: the pfns of the pages holding p2m[start..end]."""
    start_pfn: int
    end_pfn: int
    pfns: np.ndarray      # uint64, one per p2m page, in order
    record_index: int
    offset: int


class Indexer:
    """Walks the records of one save file and keeps what they say."""

    def __init__(self, win, path: str, notes):
        self.win = win
        self.path = path
        self.notes = notes
        self.pages = PageIndexBuilder(win.size // PAGE_SIZE + 1)
        self._pending: list = []    # PAGE_DATA records whose words are not decoded yet
        self._pending_words = 0
        self.record_counts: Counter = Counter()
        self.libxc: dict | None = None
        self.guest_width = self.pt_levels = None
        self.p2m_frames: P2mFrames | None = None
        self.shared_info: bytes | None = None
        self.vcpus: list = []
        self.tsc: dict | None = None
        self.complete = False
        self.end_offset = 0
        self._index = 0
        self._unknown_names: set = set()

    # -- the pass -------------------------------------------------------------------
    def run(self, entry: str, start: int) -> None:
        """Index from ``start``: a libxl stream, or a bare libxc stream."""
        layer = LIBXL
        off = start
        if entry == LIBXC:
            after = self._libxc_headers(off)
            if after is None:
                return
            off, layer = after, LIBXC
        in_checkpoint = False
        size = self.win.size
        while True:
            if layer == LIBXC:
                off = self._page_data_run(off)
            raw = self.win.read(off, S.RECORD_HEADER_SIZE)
            if len(raw) < S.RECORD_HEADER_SIZE:
                self._note_end(layer, off, len(raw))
                return
            rtype, length = _REC.unpack(raw)
            idx = self._index
            self._index += 1
            name = self._count(layer, rtype)
            loc = f"record #{idx} ({layer} {name}) at offset {off:#x}"
            body = off + S.RECORD_HEADER_SIZE
            end = body + S.padded_length(length)
            if layer != LIBXC or rtype != S.REC_PAGE_DATA or end > size:
                self._flush()
            if end > size:
                self._truncated(layer, rtype, loc, body, length)
                return
            if layer == LIBXC:
                action = self._libxc_record(idx, off, loc, rtype, length, body)
            else:
                action = self._libxl_record(loc, rtype, length, in_checkpoint)
            self._check_padding(loc, body + length, end)
            off = end
            if action == "libxc-end":
                if entry == LIBXC:
                    break
                layer, in_checkpoint = LIBXL, False
            elif action == "checkpoint":
                layer, in_checkpoint = LIBXL, True
            elif action == "resume":
                layer, in_checkpoint = LIBXC, False
            elif action == "libxc":
                if self.libxc is None:
                    after = self._libxc_headers(off)
                    if after is None:
                        return
                    off = after
                layer = LIBXC
            elif action == "end":
                break
        self._flush()
        self.complete = True
        self.end_offset = off
        if off < size:
            self.notes.add(F.SAVE_TRAILING, f"{size - off} bytes after the END record (offset "
                           f"{off:#x}) are not part of the stream", severity=F.INFO)
        self._check_required()

    def _libxc_headers(self, off: int) -> int | None:
        hdr = H.parse_libxc_headers(self.win, off, self.path, self.notes)
        if hdr is None:
            return None
        self.libxc = hdr
        return hdr["end"]

    def _count(self, layer: str, rtype: int) -> str:
        if layer == LIBXC:
            name = S.record_name(rtype)
            known = rtype in S.RECORD_NAMES
        else:
            known = rtype in S.LIBXL_RECORD_NAMES
            name = S.LIBXL_RECORD_NAMES.get(rtype, f"UNKNOWN(0x{rtype:08x})")
        if not known and name not in self._unknown_names:
            if len(self._unknown_names) >= MAX_UNKNOWN_NAMES:
                name = "UNKNOWN(more types)"
            else:
                self._unknown_names.add(name)
        self.record_counts[f"{layer}/{name}"] += 1
        return name

    def _note_end(self, layer: str, off: int, got: int) -> None:
        self._flush()
        if got:
            msg = (f"record #{self._index} header at offset {off:#x} is cut short "
                   f"({got} of {S.RECORD_HEADER_SIZE} bytes)")
        else:
            msg = (f"the file ends at offset {off:#x} (before record #{self._index}) without "
                   f"the {layer} END record")
        self.notes.add(F.SAVE_TRUNCATED, msg)

    def _truncated(self, layer, rtype, loc, body, length) -> None:
        tail = ""
        if layer == LIBXC and rtype == S.REC_PAGE_DATA:
            got, total = self._page_data(loc, length, body, truncated=True)
            tail = f"; {got} of its {total} pages indexed"
        self.notes.add(F.SAVE_TRUNCATED, f"{loc}: its {length}-byte body runs past the end of "
                       f"the file ({self.win.size} bytes){tail}")

    def _check_padding(self, loc: str, start: int, end: int) -> None:
        if end > start and any(self.win.read(start, end - start)):
            self._flush()
            self.notes.add(F.SAVE_PADDING, f"{loc}: non-zero padding bytes after the body")

    def _check_required(self) -> None:
        if self.libxc is None:
            self.notes.add(F.SAVE_RECORD, "the stream holds no libxc stream (no LIBXC_CONTEXT "
                           "record): no pages")
            return
        for have, name in ((self.guest_width, "X86_PV_INFO"),
                           (self.p2m_frames, "X86_PV_P2M_FRAMES"),
                           (self.shared_info, "SHARED_INFO")):
            if have is None:
                self.notes.add(F.SAVE_RECORD, f"the libxc stream has no usable {name} record")

    # -- libxl records --------------------------------------------------------------
    def _libxl_record(self, loc, rtype, length, in_checkpoint) -> str | None:
        want = S.LIBXL_RECORD_FIXED_SIZE.get(rtype)
        if want is not None and length != want:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length}, expected {want}")
        if rtype == S.LIBXL_REC_END:
            return "end"
        if rtype == S.LIBXL_REC_LIBXC_CONTEXT:
            return "libxc"
        if rtype == S.LIBXL_REC_CHECKPOINT_END:
            return "resume" if in_checkpoint else None
        if rtype in (S.LIBXL_REC_EMULATOR_XENSTORE_DATA, S.LIBXL_REC_EMULATOR_CONTEXT) \
                and length < S.EmulatorHeader.sizeof():
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length} is shorter than the "
                           f"{S.EmulatorHeader.sizeof()}-byte emulator header")
        elif rtype not in S.LIBXL_RECORD_NAMES:
            self.notes.add(F.SAVE_UNKNOWN_RECORD, f"{loc}: unknown libxl record type "
                           f"{rtype:#x}, skipped by its length {length}")
        return None

    # -- libxc records --------------------------------------------------------------
    def _libxc_record(self, idx, off, loc, rtype, length, body) -> str | None:
        want = S.RECORD_FIXED_SIZE.get(rtype)
        if want is not None and length != want:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length}, expected {want}; "
                           "not decoded")
            return "libxc-end" if rtype == S.REC_END else None
        if rtype == S.REC_END:
            return "libxc-end"
        if rtype == S.REC_CHECKPOINT:
            return "checkpoint"
        if rtype == S.REC_PAGE_DATA:
            self._page_data(loc, length, body)
        elif rtype == S.REC_X86_PV_INFO:
            self._pv_info(loc, body)
        elif rtype == S.REC_X86_PV_P2M_FRAMES:
            self._p2m_frames(idx, off, loc, length, body)
        elif rtype in S.VCPU_RECORDS:
            self._vcpu(idx, off, loc, rtype, length, body)
        elif rtype == S.REC_SHARED_INFO:
            self.shared_info = self.win.read(body, S.SHARED_INFO_RECORD_SIZE)
        elif rtype == S.REC_X86_TSC_INFO:
            self._tsc(loc, body)
        elif rtype in S.POLICY_ENTRY_SIZE:
            unit = S.POLICY_ENTRY_SIZE[rtype]
            if length == 0 or length % unit:
                self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length} is not a "
                               f"multiple of its {unit}-byte entries")
        elif rtype not in S.RECORD_NAMES and not rtype & S.REC_TYPE_OPTIONAL:
            self.notes.add(F.SAVE_UNKNOWN_RECORD, f"{loc}: unknown mandatory record type "
                           f"{rtype:#x}, skipped by its length {length}")
        return None

    def _page_data(self, loc, length, body, truncated=False) -> tuple[int, int]:
        """Check one PAGE_DATA record's header and read its pfn words: queued
        for :meth:`_flush`, or (``truncated``, the record the file ends in)
        indexed at once.  Returns (pages indexed, pages with data) of a
        truncated record."""
        if length < S.PAGE_DATA_HEADER_SIZE:
            self._flush()
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length} is shorter than the "
                           f"{S.PAGE_DATA_HEADER_SIZE}-byte PAGE_DATA header")
            return 0, 0
        raw = self.win.read(body, S.PAGE_DATA_HEADER_SIZE)
        if len(raw) < S.PAGE_DATA_HEADER_SIZE:
            return 0, 0
        count, reserved = _PAGE_DATA.unpack(raw)
        if reserved:
            self._flush()
            self.notes.add(F.SAVE_RESERVED, f"{loc}: PAGE_DATA reserved field {reserved:#x}")
        if count == 0 or count > S.PAGE_DATA_MAX_COUNT:
            self._flush()
            self.notes.add(F.SAVE_PAGE_COUNT, f"{loc}: PAGE_DATA count {count} (a saver writes "
                           f"1 to {S.PAGE_DATA_MAX_COUNT})")
            if count == 0:
                return 0, 0
        words_at = body + S.PAGE_DATA_HEADER_SIZE
        words_len = count * S.PFN_WORD_SIZE
        if S.PAGE_DATA_HEADER_SIZE + words_len > length:
            self._flush()
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: PAGE_DATA count {count} needs "
                           f"{words_len} bytes of pfns, the record has {length}; skipped")
            return 0, 0
        raw = self.win.read(words_at, words_len)
        if len(raw) < words_len:
            return 0, 0
        rec = (loc, length, raw, count, words_at + words_len)
        if truncated:
            self._flush()
            return self._index_record(*rec, truncated=True)
        self._pending.append(rec)
        self._pending_words += count
        if self._pending_words >= BATCH_WORDS:
            self._flush()
        return 0, 0

    def _page_data_run(self, off: int) -> int:
        """Queue the well-formed PAGE_DATA records from ``off`` on (the bulk of
        a stream), one read each for the record header, PAGE_DATA header and
        pfn words; returns the offset of the first record it leaves to the
        general path (another type, or anything that needs a finding)."""
        fd, size = self.win.fd, self.win.size
        head = S.RECORD_HEADER_SIZE + S.PAGE_DATA_HEADER_SIZE
        want = head + S.PAGE_DATA_MAX_COUNT * S.PFN_WORD_SIZE
        taken = 0
        while True:
            try:
                raw = os.pread(fd, want, off)
            except OSError:
                break
            if len(raw) < head:
                break
            rtype, length, count, reserved = _PAGE_DATA_HEAD.unpack_from(raw)
            words_end = head + count * S.PFN_WORD_SIZE
            if (rtype != S.REC_PAGE_DATA or length % S.RECORD_ALIGN or reserved
                    or not 0 < count <= S.PAGE_DATA_MAX_COUNT or len(raw) < words_end
                    or words_end - S.RECORD_HEADER_SIZE > length
                    or off + S.RECORD_HEADER_SIZE + length > size):
                break
            self._pending.append(((self._index, off), length, raw[head:words_end], count,
                                  off + words_end))
            self._pending_words += count
            self._index += 1
            taken += 1
            off += S.RECORD_HEADER_SIZE + length
            if self._pending_words >= BATCH_WORDS:
                self._flush()
        if taken:
            self.record_counts[f"{LIBXC}/{S.record_name(S.REC_PAGE_DATA)}"] += taken
        return off

    def _flush(self) -> None:
        """Decode and index the queued PAGE_DATA records.  When every one is
        well formed (the usual case) they are indexed together; otherwise one
        by one, so that their findings come in stream order."""
        pend = self._pending
        if not pend:
            return
        self._pending, self._pending_words = [], 0
        counts = np.fromiter((r[3] for r in pend), dtype=np.int64, count=len(pend))
        starts = np.zeros(len(pend), dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        words = decode_words(b"".join(r[2] for r in pend), int(counts.sum()))
        lengths = np.fromiter((r[1] for r in pend), dtype=np.int64, count=len(pend))
        firsts = np.fromiter((r[4] for r in pend), dtype=np.int64, count=len(pend))
        if _NOTAB_IS_ZERO and int(words.max()) < ABSURD_PFN:
            # plain pages only (type NOTAB, no reserved bit, pfns in range):
            # the words are the pfns and each has its page, in order
            expected = S.PAGE_DATA_HEADER_SIZE + counts * (S.PFN_WORD_SIZE + PAGE_SIZE)
            if np.array_equal(expected, lengths):
                offsets = np.repeat(firsts - starts * PAGE_SIZE, counts)
                offsets += np.arange(0, len(words) * PAGE_SIZE, PAGE_SIZE, dtype=np.int64)
                self.pages.add_batch(words, np.zeros(len(words), dtype=np.uint8),
                                     offsets.view(np.uint64), all_data=True)
                return
        pfns, types = split_words(words)
        data = HAS_DATA[types]
        ndata = np.add.reduceat(data, starts, dtype=np.int64)
        expected = S.PAGE_DATA_HEADER_SIZE + counts * S.PFN_WORD_SIZE + ndata * PAGE_SIZE
        odd = (words & _RESERVED_MASK) != 0
        odd |= INVALID_TYPE[types]
        odd |= pfns >= np.uint64(ABSURD_PFN)
        if np.any(expected != lengths) or odd.any():
            for loc, *rec in pend:
                if not isinstance(loc, str):
                    idx, at = loc
                    loc = (f"record #{idx} ({LIBXC} {S.record_name(S.REC_PAGE_DATA)}) at "
                           f"offset {at:#x}")
                self._index_record(loc, *rec)
            return
        del odd, words
        # offset of each entry's page: the record's first page + 4096 x its rank
        # among the record's entries with data
        rank = np.cumsum(data, dtype=np.int64)
        base = rank[starts] - data[starts]
        rank -= 1 + np.repeat(base, counts)
        offsets = np.repeat(firsts, counts)
        offsets += rank * PAGE_SIZE
        self.pages.add_batch(pfns, types, offsets.view(np.uint64))

    def _index_record(self, loc, length, raw, count, first_page,
                      truncated=False) -> tuple[int, int]:
        """Decode, check and index one PAGE_DATA record's pfn words; (pages
        indexed, pages with data)."""
        pfns, types = split_words(decode_words(raw, count))
        data = HAS_DATA[types]
        ndata = int(np.count_nonzero(data))
        words_len = count * S.PFN_WORD_SIZE
        expected = S.PAGE_DATA_HEADER_SIZE + words_len + ndata * PAGE_SIZE
        if length != expected:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length}, but {count} pfns "
                           f"of which {ndata} carry a page need {expected}; skipped")
            return 0, ndata
        self._check_words(loc, raw, count, pfns, types)
        invalid = INVALID_TYPE[types]
        keep = ~invalid if invalid.any() else None
        in_file = None
        if truncated:
            in_file = max(0, (self.win.size - first_page) // PAGE_SIZE)
        self.pages.add(pfns, types, first_page, keep=keep, pages_in_file=in_file)
        return (ndata if in_file is None else min(ndata, in_file)), ndata

    def _check_words(self, loc, raw, count, pfns, types) -> None:
        words = decode_words(raw, count)
        bad = np.flatnonzero(words & _RESERVED_MASK)
        if len(bad):
            self.notes.add(F.SAVE_RESERVED, f"{loc}: {len(bad)} pfn word(s) with reserved bits "
                           f"59-52 set (first pfn[{bad[0]}] = {int(words[bad[0]]):#018x}); "
                           "indexed by their pfn bits", count=len(bad))
        bad = np.flatnonzero(INVALID_TYPE[types])
        if len(bad):
            self.notes.add(F.SAVE_PAGE_TYPE, f"{loc}: {len(bad)} pfn(s) of a page type no saver "
                           f"writes (first pfn {int(pfns[bad[0]]):#x} type "
                           f"{int(types[bad[0]]):#x}); left out of the index", count=len(bad))
        bad = np.flatnonzero(pfns >= np.uint64(ABSURD_PFN))
        if len(bad):
            self.notes.add(F.SAVE_ABSURD_PFN, f"{loc}: {len(bad)} pfn(s) at or past "
                           f"{ABSURD_PFN:#x}, beyond any guest (first {int(pfns[bad[0]]):#x})",
                           count=len(bad), pfn_first=int(pfns[bad[0]]))

    def _pv_info(self, loc, body) -> None:
        info = S.X86PvInfo.parse(self.win.read(body, S.X86PvInfo.sizeof()))
        if any(info.reserved):
            self.notes.add(F.SAVE_RESERVED, f"{loc}: X86_PV_INFO reserved bytes not zero")
        if info.guest_width not in S.VCPU_CONTEXT_SIZE:
            self.notes.add(F.SAVE_RECORD, f"{loc}: guest width {info.guest_width} (4 or 8 "
                           "expected); ignored")
        else:
            self.guest_width = info.guest_width
        if info.pt_levels not in (3, 4):
            self.notes.add(F.SAVE_RECORD, f"{loc}: {info.pt_levels} page-table levels "
                           "(3 or 4 expected)")
        self.pt_levels = info.pt_levels

    def _p2m_frames(self, idx, off, loc, length, body) -> None:
        hsize = S.P2M_FRAMES_HEADER_SIZE
        if length < hsize or (length - hsize) % S.PFN_WORD_SIZE:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length} is not {hsize} + a "
                           f"multiple of {S.PFN_WORD_SIZE}; not decoded")
            return
        start, end = _P2M_FRAMES.unpack(self.win.read(body, hsize))
        n = (length - hsize) // S.PFN_WORD_SIZE
        pfns = decode_words(self.win.read(body + hsize, n * S.PFN_WORD_SIZE), n)
        if self.guest_width:
            fpp = PAGE_SIZE // self.guest_width
            want = end // fpp + 1 - start // fpp
            if n != want:
                self.notes.add(F.SAVE_RECORD, f"{loc}: {n} p2m frame(s), but pfns "
                               f"{start:#x}-{end:#x} at {fpp} entries a page need {want}")
        self.p2m_frames = P2mFrames(start, end, pfns.copy(), idx, off)

    def _vcpu(self, idx, off, loc, rtype, length, body) -> None:
        if length < S.VCPU_HEADER_SIZE:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: length {length} is shorter than the "
                           f"{S.VCPU_HEADER_SIZE}-byte vCPU header")
            return
        vcpu_id, reserved = _VCPU.unpack(self.win.read(body, S.VCPU_HEADER_SIZE))
        if reserved:
            self.notes.add(F.SAVE_RESERVED, f"{loc}: vCPU record reserved field {reserved:#x}")
        ctx = length - S.VCPU_HEADER_SIZE
        entry = {"vcpu_id": vcpu_id, "record": S.RECORD_NAMES[rtype], "record_index": idx,
                 "offset": off, "length": ctx}
        if rtype == S.REC_X86_PV_VCPU_BASIC:
            entry.update(self._cr3(loc, body + S.VCPU_HEADER_SIZE, ctx))
        if len(self.vcpus) < MAX_VCPU_RECORDS:
            self.vcpus.append(entry)
        else:
            self.notes.add(F.SAVE_RECORD, f"{loc}: more than {MAX_VCPU_RECORDS} vCPU records; "
                           "not listed")

    def _cr3(self, loc, at, ctx) -> dict:
        ws = self.guest_width
        if ws is None:
            self.notes.add(F.SAVE_RECORD, f"{loc}: X86_PV_VCPU_BASIC before a usable "
                           "X86_PV_INFO: guest width unknown, cr3 not decoded")
            return {}
        if ctx != S.VCPU_CONTEXT_SIZE[ws]:
            self.notes.add(F.SAVE_RECORD_LENGTH, f"{loc}: a {ctx}-byte vCPU context, "
                           f"{S.VCPU_CONTEXT_SIZE[ws]} expected for a {ws * 8}-bit guest")
        schema = S.vcpu_context_cr3(ws)
        if ctx < schema.sizeof():
            return {}
        cr3 = schema.parse(self.win.read(at, schema.sizeof())).cr3
        return {"cr3": cr3, "cr3_pfn": unfold_cr3(cr3, ws)}

    def _tsc(self, loc, body) -> None:
        tsc = S.X86TscInfo.parse(self.win.read(body, S.X86TscInfo.sizeof()))
        if tsc.reserved:
            self.notes.add(F.SAVE_RESERVED, f"{loc}: X86_TSC_INFO reserved field "
                           f"{tsc.reserved:#x}")
        self.tsc = {"mode": tsc.mode, "khz": tsc.khz, "nsec": tsc.nsec,
                    "incarnation": tsc.incarnation}
