"""Whole-line slices of a JSONEachRow block, with no copy.

A leaf module (no third-party imports): the live counters' child slices blocks too, and must
not import what ``ordinals`` needs (numpy, pyarrow, clickhouse-connect).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["SLICE_BYTES", "line_slices"]

# A flush block is up to ~100 MB of JSON lines; one C call over all of it (decode, split, join)
# would hold the GIL for ~100 ms while requests wait. Slices of ~2 MB hold it for ~1-2 ms each.
SLICE_BYTES = 2 * 1024 * 1024


def line_slices(block: bytes, size: int = SLICE_BYTES) -> Iterator[memoryview]:
    """The block in consecutive views of whole lines, each about ``size`` bytes (no copy)."""
    view = memoryview(block)
    start, end_of_block = 0, len(block)
    while start < end_of_block:
        end = block.find(b"\n", start + size)
        end = end_of_block if end < 0 else end + 1
        yield view[start:end]
        start = end
