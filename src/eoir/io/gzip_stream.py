"""Writing ``.gz`` files on all cores: ISA-L's threaded gzip behind the file object nibabel wants.

A brain's displacement field is tens of MB of float32 that gzip barely shrinks; Python's ``gzip``
compresses it on one core, the largest part of writing a registration's outputs. ISA-L's
threaded writer (``isal.igzip_threaded``, from python-isal) compresses blocks on several threads
into one standard gzip member that every reader (zlib, Python's gzip, nibabel, ITK/ANTs/3D
Slicer) reads. nibabel checks its position before writing the data (``tell``/``seek``), which a
compressed stream cannot answer itself: :class:`GzipStream` counts the bytes it was given.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from isal import igzip_threaded

__all__ = ["GzipStream"]

LEVEL = 1  # ISA-L's levels are 0-3; 1 is close to zlib's 6 in size at several times its speed


def _threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


class GzipStream(io.RawIOBase):
    """A write-only binary file object that gzip-compresses into ``target`` on several threads.

    Parameters
    ----------
    target : binary file object
        Receives one gzip member; not closed by :meth:`close`.
    threads : int, optional
        Compressing threads (default: the usable cores, at most 8).

    Notes
    -----
    ``tell()`` counts uncompressed bytes; ``seek()`` only to the current position (what a
    writer checks before writing data at an offset). Use as a context manager: leaving it
    normally writes the rest and the trailer; leaving it on an error stops the compressing
    threads, and the unfinished file is to be discarded.
    """

    def __init__(self, target: BinaryIO, threads: int | None = None) -> None:
        self._stream = igzip_threaded.open(
            target, "wb", compresslevel=LEVEL, threads=threads or _threads()
        )
        self._size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset != self._size:
            raise OSError("a gzip stream only moves forward by writing")
        return self._size

    def write(self, data) -> int:
        """Append ``data`` (bytes-like); returns its length in bytes."""
        size = self._stream.write(data)
        self._size += size
        return size

    def close(self) -> None:
        """Compress the rest and write the trailer (CRC-32, length)."""
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()
