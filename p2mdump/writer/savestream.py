"""The byte-level pieces of an ``xl save`` file: headers, records, and a sparse record writer.

Everything is built from the Construct schemas of :mod:`p2mdump.schemas.xl_save`
(which states every constant).  What goes into them follows Xen's saver:

* ``tools/xl/xl_saverestore.c`` (``save_domain_core_writeconfig``): the xl
  header, mandatory flags STREAMv2 | JSON, the optional data being a u32
  config length (NUL included) and the JSON domain configuration;
* ``tools/libs/light/libxl_stream_write.c``: the libxl header (version 2,
  little-endian, no options), a LIBXC_CONTEXT record of length 0 followed by
  the libxc stream, and the libxl END record;
* ``tools/libs/guest/xg_sr_save.c`` (``write_headers``): the libxc image
  header (version 3, little-endian) and the domain header (x86 PV, page
  shift 12, the Xen version);
* ``tools/libs/guest/xg_sr_common_x86.c``: the TSC and CPU policy records.

:class:`RecordStream` writes records one after the other into a file
descriptor and turns all-zero page data into holes (the file is sparse), so
a multi-GiB stream of mostly empty pages costs little disk.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..arrays import true_runs
from ..atomic import pwrite_all
from ..layout import PAGE_SHIFT, PAGE_SIZE
from ..schemas import xl_save as S

#: the Xen version a generated stream claims (the domain header's major.minor)
XEN_VERSION = (4, 17)
#: the TSC record of a generated guest: mode 0 (default), a 2.5 GHz TSC
TSC_KHZ = 2_500_000


# -- xl header ---------------------------------------------------------------------------

def domain_config(*, name: str, word_size: int, max_pfn: int, vcpus: int) -> dict:
    """A plausible libxl domain configuration (the JSON ``xl save`` stores) of a PV guest
    with ``max_pfn`` pages of memory."""
    memkb = max_pfn * (PAGE_SIZE // 1024)
    return {
        "c_info": {"type": "pv", "name": name, "uuid": "00000000-0000-0000-0000-000000000000",
                   "run_hotplug_scripts": "True"},
        "b_info": {"max_vcpus": vcpus, "avail_vcpus": list(range(vcpus)),
                   "max_memkb": memkb, "target_memkb": memkb,
                   "shadow_memkb": 0, "sched_params": {}, "claim_mode": "True",
                   "type.pv": {"kernel": "/boot/vmlinuz", "cmdline": "root=/dev/xvda1 ro",
                               "e820_host": "False"},
                   "arch_x86": {"msr_relaxed": "False"},
                   "guest_width": word_size},
        "disks": [{"pdev_path": "/dev/vg/guest", "vdev": "xvda", "backend": "phy",
                   "format": "raw", "readwrite": 1}],
        "nics": [{"devid": 0, "mac": "00:16:3e:00:00:01", "bridge": "xenbr0"}],
        "on_reboot": "restart",
        "on_soft_reset": "soft_reset",
    }


def xl_header(config: dict) -> bytes:
    """The xl header and its optional data: u32 config_len, the JSON text with its NUL."""
    text = json.dumps(config, indent=4).encode("utf-8") + b"\0"
    optional = S.XlConfigLength.build(dict(config_len=len(text))) + text
    return S.XlHeader.build(dict(
        byteorder=S.XL_BYTEORDER_MARKER,
        mandatory_flags=S.XL_MANDATORY_FLAG_STREAMV2 | S.XL_MANDATORY_FLAG_JSON,
        optional_flags=0, optional_data_len=len(optional))) + optional


def libxl_header() -> bytes:
    return S.LibxlHeader.build(dict(ident=S.LIBXL_IDENT, version=S.LIBXL_VERSION, options=0))


def libxc_headers(version=XEN_VERSION) -> bytes:
    """The libxc image header (v3, little-endian) and the x86 PV domain header."""
    major, minor = version
    return S.LibxcImageHeader.build(dict(
        marker=S.LIBXC_MARKER, ident=S.LIBXC_IDENT, version=max(S.LIBXC_VERSIONS),
        options=0, reserved1=0, reserved2=0)) + S.LibxcDomainHeader.build(dict(
            type=S.DHDR_TYPE_X86_PV, page_shift=PAGE_SHIFT, reserved=0,
            xen_major=major, xen_minor=minor))


# -- record bodies -------------------------------------------------------------------------

def pv_info(word_size: int, levels: int) -> bytes:
    return S.X86PvInfo.build(dict(guest_width=word_size, pt_levels=levels, reserved=bytes(6)))


def cpuid_policy() -> bytes:
    """A small CPUID policy: the leaves a Xen 4.17 host reports first (vendor, family,
    feature words), as xen_cpuid_leaf_t entries."""
    ebx, edx, ecx = (int.from_bytes(b"Genu", "little"), int.from_bytes(b"ineI", "little"),
                     int.from_bytes(b"ntel", "little"))
    leaves = [(0x0, 0xFFFFFFFF, 0xD, ebx, ecx, edx),
              (0x1, 0xFFFFFFFF, 0x000906EA, 0x00010800, 0xF6FA3203, 0x0F8BFBFF),
              (0x7, 0x0, 0x0, 0x009C2FBB, 0x0, 0xBC000400),
              (0xD, 0x0, 0x7, 0x340, 0x340, 0x0),
              (0x80000000, 0xFFFFFFFF, 0x80000008, 0, 0, 0),
              (0x80000001, 0xFFFFFFFF, 0x0, 0x0, 0x121, 0x2C100800)]
    return b"".join(S.CpuidLeaf.build(dict(leaf=a, subleaf=b, a=c, b=d, c=e, d=f))
                    for a, b, c, d, e, f in leaves)


def msr_policy() -> bytes:
    """A small MSR policy (xen_msr_entry_t): PLATFORM_INFO and ARCH_CAPABILITIES."""
    return b"".join(S.MsrEntry.build(dict(idx=idx, flags=0, val=val))
                    for idx, val in ((0xCE, 0x0), (0x10A, 0x0)))


def tsc_info() -> bytes:
    return S.X86TscInfo.build(dict(mode=0, khz=TSC_KHZ, nsec=0, incarnation=0, reserved=0))


def vcpu_basic(vcpu_id: int, word_size: int, cr3: int) -> bytes:
    """An X86_PV_VCPU_BASIC body: the vCPU header and a vcpu_guest_context of the guest
    width, zero but for ctrlreg[3] (``cr3``: already a folded *pfn*)."""
    ctx = bytearray(S.VCPU_CONTEXT_SIZE[word_size])
    off = S.VCPU_CR3_OFFSET[word_size]
    ctx[off:off + word_size] = cr3.to_bytes(word_size, "little")
    return S.VcpuHeader.build(dict(vcpu_id=vcpu_id, reserved=0)) + bytes(ctx)


def p2m_frames(end_pfn: int, pfns: np.ndarray) -> bytes:
    """The X86_PV_P2M_FRAMES body: start 0, ``end_pfn`` (inclusive), the p2m frames' pfns."""
    head = S.X86PvP2mFramesHeader.build(dict(start_pfn=0, end_pfn=end_pfn))
    return head + np.ascontiguousarray(pfns, dtype="<u8").tobytes()


# -- the stream ------------------------------------------------------------------------------

class SparsePages:
    """``count`` pages of a PAGE_DATA record that are zero but for ``rows``
    (index -> 4096 uint8): a batch of a guest without data frames costs no
    zero-filled array.  Indexed like the (count, 4096) array it stands for
    when a row is assigned."""

    def __init__(self, count: int):
        self.count = count
        self.rows: dict = {}

    def __len__(self) -> int:
        return self.count

    def __setitem__(self, i: int, page) -> None:
        self.rows[int(i)] = np.asarray(page, dtype=np.uint8).reshape(PAGE_SIZE)


class RecordStream:
    """Records written one after the other at increasing offsets of ``fd``.

    Page data that is all zero is skipped (a hole) rather than written; the
    caller sizes the file with :meth:`finish`."""

    def __init__(self, fd: int, offset: int = 0):
        self.fd = fd
        self.offset = offset
        self.records = 0
        self.page_bytes_written = 0

    def raw(self, data: bytes) -> None:
        """Bytes outside any record (the headers)."""
        pwrite_all(self.fd, data, self.offset)
        self.offset += len(data)

    def record(self, rtype: int, body: bytes = b"") -> None:
        """One record: header, body, zero padding to 8."""
        pad = S.padded_length(len(body)) - len(body)
        self.raw(S.RecordHeader.build(dict(type=rtype, length=len(body))) + body + bytes(pad))
        self.records += 1

    def page_data(self, words: np.ndarray, pages) -> None:
        """A PAGE_DATA record: the pfn words (type in bits 63-60) and ``pages``
        ((k, 4096) uint8 or :class:`SparsePages` for the k words whose type
        carries data, or None when there is none); zero pages become holes."""
        count = len(words)
        if not 0 < count <= S.PAGE_DATA_MAX_COUNT:
            raise ValueError(f"a PAGE_DATA record holds 1..{S.PAGE_DATA_MAX_COUNT} pfns")
        npages = 0 if pages is None else len(pages)
        head = S.PageDataHeader.build(dict(count=count, reserved=0))
        body_len = len(head) + count * S.PFN_WORD_SIZE + npages * PAGE_SIZE
        self.raw(S.RecordHeader.build(dict(type=S.REC_PAGE_DATA, length=body_len)) + head
                 + np.ascontiguousarray(words, dtype="<u8").tobytes())
        if npages:
            self._pages(pages)
        self.records += 1   # 8 + 8*count + 4096*k: already a multiple of 8, no padding

    def _pages(self, pages) -> None:
        """Write the non-zero pages of ``pages`` in runs; leave zero pages as holes."""
        if isinstance(pages, SparsePages):
            for i, page in sorted(pages.rows.items()):
                if page.any():
                    pwrite_all(self.fd, page, self.offset + i * PAGE_SIZE)
                    self.page_bytes_written += PAGE_SIZE
            self.offset += len(pages) * PAGE_SIZE
            return
        nonzero = pages.reshape(len(pages), -1).any(axis=1)
        for a, b in true_runs(nonzero, 0, len(pages)):
            pwrite_all(self.fd, pages[a:b], self.offset + a * PAGE_SIZE)
            self.page_bytes_written += (b - a) * PAGE_SIZE
        self.offset += len(pages) * PAGE_SIZE

    def finish(self) -> int:
        """Size the file to the end of the last record (a trailing hole stays a hole)."""
        os.ftruncate(self.fd, self.offset)
        return self.offset
