"""Reading ``xl save`` files: Xen's migration stream v2 in its three entry forms.

* the xl format: ``tools/xl/xl.h`` save_file_header, the domain config, then a
  libxl stream;
* a bare libxl stream (``"LibxlFmt"``), as ``xl migrate`` sends it;
* a bare libxc stream (marker ~0, ``"XENF"``).

:func:`open_save` indexes the file in one pass (:mod:`.indexer`) and returns a
:class:`SaveStream` that serves pages by pfn.  The layouts are in
:mod:`p2mdump.schemas.xl_save`.
"""
from .indexer import P2mFrames
from .stream import CONTAINER, SaveStream, open_save

__all__ = ["CONTAINER", "P2mFrames", "SaveStream", "open_save"]
