"""``ApiError``: an answer a handler refuses with, as ``{"error": code, "detail": text}``.

Apart from ``errors`` (which turns it into a response) so that the maths behind an answer
(measurement, privacy release) can raise it without importing the web stack.
"""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
