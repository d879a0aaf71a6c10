"""Writing ``.gz`` files fast: one standard gzip member, compressed in parallel blocks.

A displacement field of a 208x176x160 brain is 70 MB of float32 that gzip shrinks by only 7 %;
Python's ``gzip`` (zlib level 1, one thread) spends ~1.8 s on it on a 2-core machine, the largest
part of writing a registration's outputs. Here the payload is cut into blocks compressed
independently on several threads (zlib releases the GIL) with zlib's run-length strategy
(``Z_RLE``: matches at distance 1 only, which is what floats and images with a zero background
offer; ~2.7x faster than level 1 for the same size on fields, smaller on MR images), each block
but the last ending in a sync flush so that the blocks join into a single deflate stream — the
layout of ``pigz``. The result is one ordinary gzip member that every reader (zlib, Python's
gzip, nibabel, ITK/ANTs/3D Slicer) reads.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["BLOCK_BYTES", "gzip_parts", "write_gzip"]

BLOCK_BYTES = 4 << 20  # 4 MiB of input per block
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS


def _deflate(block: memoryview, last: bool) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    return compressor.compress(block) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


def _threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def gzip_parts(
    payload: bytes | bytearray | memoryview, threads: int | None = None
) -> Iterator[bytes]:
    """``payload`` as the parts of one gzip member (header, deflate blocks, trailer), in order.

    Blocks are compressed ahead on the threads and yielded as soon as each is ready in order, so
    a writer holds only the blocks not yet written, not the whole compressed file.

    Parameters
    ----------
    payload : bytes-like
        The uncompressed content.
    threads : int, optional
        Compressing threads (default: the usable cores, at most 8).

    Yields
    ------
    bytes
        To be written one after the other.
    """
    view = memoryview(payload).cast("B")
    size = len(view)
    blocks = [view[s : s + BLOCK_BYTES] for s in range(0, size, BLOCK_BYTES)] or [view[0:0]]
    last = [i == len(blocks) - 1 for i in range(len(blocks))]
    yield _HEADER
    workers = min(threads or _threads(), len(blocks))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            crc = pool.submit(zlib.crc32, view)
            yield from pool.map(_deflate, blocks, last)
            checksum = crc.result()
    else:
        yield from map(_deflate, blocks, last)
        checksum = zlib.crc32(view)
    yield struct.pack("<II", checksum & 0xFFFFFFFF, size & 0xFFFFFFFF)


def write_gzip(
    path: str | os.PathLike, payload: bytes | bytearray | memoryview, threads: int | None = None
) -> None:
    """Write ``payload`` gzip-compressed to ``path`` (see the module docstring)."""
    with Path(path).open("wb") as stream:
        for part in gzip_parts(payload, threads):
            stream.write(part)
