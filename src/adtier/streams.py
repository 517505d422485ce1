"""Response bodies streamed from iterators: temporary files, and streams that must fail loudly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["StreamFailed", "file_chunks", "fail_loudly"]


class StreamFailed(RuntimeError):
    """A streamed body could not be completed: the connection is aborted."""


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, then the file is removed (also when the client goes away)."""
    try:
        with path.open("rb") as f:
            while chunk := f.read(size):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def fail_loudly(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, with any error re-raised as ``StreamFailed``.

    Litestar runs a sync iterator through ``AsyncIteratorWrapper``, which turns its
    StopIteration into a ``ValueError`` and ends the body on any ``ValueError``, so a body that
    fails half-way with one (pyarrow's parse errors are ValueErrors) would end as a clean, short 200:
    a consumer would take it as complete and, for an export, move its watermark past rows it
    never got. Any other exception aborts the response instead."""
    try:
        yield from chunks
    except StreamFailed:
        raise
    except Exception as err:  # noqa: BLE001 - every failure must abort, whatever its type
        raise StreamFailed(f"the response body failed half-way: {err}") from err
