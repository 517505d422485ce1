"""Streaming a temporary file as a response body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_chunks"]


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, then the file is removed (also when the client goes away)."""
    try:
        with path.open("rb") as f:
            while chunk := f.read(size):
                yield chunk
    finally:
        path.unlink(missing_ok=True)
