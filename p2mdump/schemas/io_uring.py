"""The io_uring structures (linux/io_uring.h) that :mod:`p2mdump.pageread` uses.

Reading hundreds of thousands of scattered pages costs a ``preadv`` each;
an io_uring takes thousands of read requests (:data:`Sqe`) with one
``io_uring_enter`` call and answers each with a completion (:data:`Cqe`).
The ring is set up by ``io_uring_setup`` with a :data:`Params` record, whose
:data:`SqOffsets` / :data:`CqOffsets` say where the ring's counters and
arrays lie in its mappings.  :data:`SQE_DTYPE` and :data:`CQE_DTYPE` are the
same records as numpy dtypes, for filling and reading a batch at once (a
test checks both agree).
"""
from __future__ import annotations

import numpy as np
from construct import Int8ul, Int16ul, Int32sl, Int32ul, Int64ul, Padding, Struct

#: struct io_sqring_offsets
SqOffsets = Struct(
    "head" / Int32ul, "tail" / Int32ul, "ring_mask" / Int32ul, "ring_entries" / Int32ul,
    "flags" / Int32ul, "dropped" / Int32ul, "array" / Int32ul, Padding(4),   # resv1
    "user_addr" / Int64ul,
)

#: struct io_cqring_offsets
CqOffsets = Struct(
    "head" / Int32ul, "tail" / Int32ul, "ring_mask" / Int32ul, "ring_entries" / Int32ul,
    "overflow" / Int32ul, "cqes" / Int32ul, "flags" / Int32ul, Padding(4),   # resv1
    "user_addr" / Int64ul,
)

#: struct io_uring_params (in: entries' flags; out: sizes, features, offsets)
Params = Struct(
    "sq_entries" / Int32ul,
    "cq_entries" / Int32ul,
    "flags" / Int32ul,              # IORING_SETUP_*
    "sq_thread_cpu" / Int32ul,
    "sq_thread_idle" / Int32ul,
    "features" / Int32ul,           # IORING_FEAT_*
    "wq_fd" / Int32ul,
    Padding(12),                    # resv[3]
    "sq_off" / SqOffsets,
    "cq_off" / CqOffsets,
)

#: struct io_uring_sqe, as a read request uses it
Sqe = Struct(
    "opcode" / Int8ul,              # IORING_OP_*
    "flags" / Int8ul,               # IOSQE_*
    "ioprio" / Int16ul,
    "fd" / Int32sl,
    "off" / Int64ul,                # file offset
    "addr" / Int64ul,               # buffer address
    "len" / Int32ul,                # buffer length
    "rw_flags" / Int32ul,
    "user_data" / Int64ul,          # given back in the completion
    Padding(24),                    # buf_index, personality, splice_fd_in, addr3, pad
)

#: struct io_uring_cqe
Cqe = Struct(
    "user_data" / Int64ul,
    "res" / Int32sl,                # bytes read, or -errno
    "flags" / Int32ul,
)

#: the same records, for a batch at once
SQE_DTYPE = np.dtype({"names": ["opcode", "flags", "ioprio", "fd", "off", "addr", "len",
                                "rw_flags", "user_data"],
                      "formats": ["u1", "u1", "<u2", "<i4", "<u8", "<u8", "<u4", "<u4", "<u8"],
                      "offsets": [0, 1, 2, 4, 8, 16, 24, 28, 32],
                      "itemsize": Sqe.sizeof()})
CQE_DTYPE = np.dtype({"names": ["user_data", "res", "flags"],
                      "formats": ["<u8", "<i4", "<u4"], "offsets": [0, 8, 12],
                      "itemsize": Cqe.sizeof()})

#: system call numbers, the same in the tables of the 64-bit Linux machines
#: of :data:`MACHINES` (``platform.machine()``); MIPS and Alpha number them otherwise
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
MACHINES = frozenset({"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64", "s390x",
                      "loongarch64"})
#: mmap offsets of the submission ring, the completion ring and the SQE array
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
#: features: both rings in one mapping (Linux 5.4)
IORING_FEAT_SINGLE_MMAP = 1 << 0
#: io_uring_enter: wait for min_complete completions
IORING_ENTER_GETEVENTS = 1 << 0
#: read into one buffer at a file offset (Linux 5.6)
IORING_OP_READ = 22
