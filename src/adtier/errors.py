"""One error shape for every endpoint: ``{"error": code, "detail": text}`` with its status."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from adtier.auth import AuthError
from adtier.ingest.decode import BodyError

__all__ = ["ApiError", "ErrorBody", "exception_handlers", "error_response", "decode_json"]


class ErrorBody(msgspec.Struct):
    error: str
    detail: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
          429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


async def decode_json(request: Request, decoder: msgspec.json.Decoder) -> Any:
    """A JSON request body through a typed decoder; what does not fit answers 400."""
    try:
        return decoder.decode(await request.body())
    except msgspec.ValidationError as err:
        code = "invalid_item" if "$.items[" in str(err) else "invalid_request"
        raise ApiError(400, code, str(err)) from err
    except msgspec.DecodeError as err:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {err}") from err


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorBody(code, detail), status_code=status, headers=headers)


def _api(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


def _body(_: Request, exc: BodyError) -> Response:
    return error_response(exc.status, exc.code, exc.detail)


def _auth(_: Request, exc: AuthError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, _CODES[exc.status], exc.detail, headers)


def _http(_: Request, exc: HTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), detail,
                          exc.headers)


exception_handlers = {ApiError: _api, BodyError: _body, AuthError: _auth, HTTPException: _http}
