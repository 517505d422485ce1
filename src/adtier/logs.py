"""Structured logs (structlog): readable lines on a terminal, JSON lines otherwise.

``ADTIER_LOG_FORMAT=json|console`` chooses explicitly. Log lines and tqdm progress bars share
stderr: a line is written with the bars cleared and redrawn after it, so they never interleave.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging", "get_logger", "BarSafeStderr"]


class BarSafeStderr:
    """stderr for log lines: while a tqdm bar is on screen, the line goes above it."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._pending = ""  # print() writes the line and its newline separately

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def write(self, text: str) -> int:
        from tqdm import tqdm

        self._pending += text
        if "\n" not in self._pending:
            return len(text)
        lines, _, self._pending = self._pending.rpartition("\n")
        if not getattr(tqdm, "_instances", None):
            self.stream.write(lines + "\n")
        else:
            with tqdm.external_write_mode(file=self.stream):
                self.stream.write(lines + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """``json=None``: JSON lines unless stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=BarSafeStderr()),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
