"""The FIEMAP ioctl's structures (linux/fiemap.h): a file's extent map.

``scan`` asks the file system for the data extents of a sparse raw image
with one ``FS_IOC_FIEMAP`` call per :data:`EXTENTS_PER_CALL` extents, where
``SEEK_DATA`` / ``SEEK_HOLE`` cost two ``lseek`` calls per extent (a scattered
image has one extent per tree page).  The request is a :data:`Fiemap` header
followed by room for ``fm_extent_count`` :data:`FiemapExtent` records, which
the kernel fills; :data:`EXTENT_DTYPE` is the same record as a numpy dtype
for decoding them in bulk (a test checks both agree).
"""
from __future__ import annotations

import numpy as np
from construct import Int32ul, Int64ul, Padding, Struct

#: struct fiemap (the request header; its extents follow it)
Fiemap = Struct(
    "fm_start" / Int64ul,           # logical offset (bytes) where the mapping starts
    "fm_length" / Int64ul,          # logical length of the mapping asked for
    "fm_flags" / Int32ul,           # FIEMAP_FLAG_* in, the flags used out
    "fm_mapped_extents" / Int32ul,  # extents written by the kernel
    "fm_extent_count" / Int32ul,    # room for this many extents after the header
    Padding(4),                     # fm_reserved
)

#: struct fiemap_extent
FiemapExtent = Struct(
    "fe_logical" / Int64ul,         # byte offset of the extent in the file
    "fe_physical" / Int64ul,        # byte offset on the device
    "fe_length" / Int64ul,          # length in bytes
    Padding(16),                    # fe_reserved64[2]
    "fe_flags" / Int32ul,           # FIEMAP_EXTENT_*
    Padding(12),                    # fe_reserved[3]
)

#: the same record, for decoding an array of extents at once
EXTENT_DTYPE = np.dtype({"names": ["fe_logical", "fe_physical", "fe_length", "fe_flags"],
                         "formats": ["<u8", "<u8", "<u8", "<u4"],
                         "offsets": [0, 8, 16, 40], "itemsize": FiemapExtent.sizeof()})

#: _IOWR('f', 11, struct fiemap)
FS_IOC_FIEMAP = (3 << 30) | (Fiemap.sizeof() << 16) | (ord("f") << 8) | 11
#: fe_flags: the last extent of the file
FIEMAP_EXTENT_LAST = 0x1
#: fe_flags: allocated but never written (reads as zeros; SEEK_DATA may call it a hole)
FIEMAP_EXTENT_UNWRITTEN = 0x800
#: extents asked for per call
EXTENTS_PER_CALL = 4096
