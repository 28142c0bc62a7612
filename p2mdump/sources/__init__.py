"""Frame sources: turn an image file into 4096-byte machine frames by MFN."""
from .base import FrameSource
from .raw import RawImage

__all__ = ["FrameSource", "RawImage", "open_image"]


def open_image(path, *, base: int = 0, container: str = "raw") -> FrameSource:
    """Open ``path`` as a frame source (``container`` 'raw' for now)."""
    if container not in ("raw", "auto"):
        from ..errors import ImageError
        raise ImageError(f"unknown container {container!r}")
    return RawImage(path, base=base)
