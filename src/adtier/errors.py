"""One error shape for every endpoint: ``{"error": code, "detail": text}`` with its status."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from clickhouse_connect.driver.exceptions import ClickHouseError
from litestar.exceptions import HTTPException, InternalServerException
from redis.exceptions import RedisError

from adtier.api_error import ApiError
from adtier.auth import AuthError
from adtier.ingest.decode import BodyError
from adtier.logs import get_logger
from adtier.request_ids import current_request_id

__all__ = ["ApiError", "ErrorBody", "exception_handlers", "decode_json", "status_code_name"]



class ErrorBody(msgspec.Struct):
    error: str
    detail: str


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
          429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


def status_code_name(status: int) -> str:
    return _CODES.get(status, "error")


async def decode_json(request: Request, decoder: msgspec.json.Decoder) -> Any:
    """A JSON request body through a typed decoder; what does not fit answers 400."""
    try:
        return decoder.decode(await request.body())
    except msgspec.ValidationError as err:
        code = "invalid_item" if "$.items[" in str(err) else "invalid_request"
        raise ApiError(400, code, _items_hint(decoder, str(err))) from err
    except msgspec.DecodeError as err:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {err}") from err
    except RecursionError as err:  # msgspec has no depth limit of its own: the stack is it
        raise ApiError(400, "body_too_deep", "the JSON body is nested too deeply") from err


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorBody(code, detail), status_code=status, headers=headers)


def _api(request: Request, exc: ApiError) -> Response:
    if exc.status >= 500:  # e.g. 503 buffer_full: logged with the id its answer carries
        get_logger("adtier.errors").warning(
            "server_error_answered", request_id=current_request_id(), status=exc.status,
            code=exc.code, path=request.url.path, detail=exc.detail[:300])
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


def _body(_: Request, exc: BodyError) -> Response:
    return error_response(exc.status, exc.code, exc.detail)


def _auth(_: Request, exc: AuthError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, _CODES[exc.status], exc.detail, headers)


def _items_hint(decoder: msgspec.json.Decoder, message: str) -> str:
    """A bulk body sent without its ``{"items": [...]}`` wrapper: say that, not which of the
    item's fields msgspec met first at the top level."""
    wrapped = getattr(getattr(decoder, "type", None), "__origin__", None)
    top_level = " - at `$." not in message
    if wrapped is not None and wrapped.__name__ == "Items" and top_level:
        return ('the body is {"items": [...]}, a list of the objects to upsert: put this '
                "object in that list")
    return message


_TYPE_WORDS = {"Invalid RFC3339 encoded date": "expected a date, YYYY-MM-DD",
               "Invalid RFC3339 encoded datetime": "expected a time, RFC 3339",
               "Expected `int`, got `str`": "expected a whole number",
               "Expected `float`, got `str`": "expected a number",
               "Expected `bool`, got `str`": "expected true or false"}


def _parameter_name(request: Request, key: str) -> str:
    """The name a client sends (``from``), not the handler's argument (``date_from``)."""
    try:
        param = request.route_handler.parsed_fn_signature.parameters.get(key)
    except Exception:  # noqa: BLE001 - naming is best effort, the check already happened
        return key
    kwarg = getattr(param, "kwarg_definition", None)
    for attribute in ("query", "header", "cookie", "name"):
        if name := getattr(kwarg, attribute, None):
            return name
    return key


def _plain(message: str) -> str:
    if message in _TYPE_WORDS:
        return _TYPE_WORDS[message]
    if found := re.fullmatch(r"Expected `str` matching regex '\^\(([\w|]+)\)\$'", message):
        return "expected one of " + ", ".join(found.group(1).split("|"))
    return message.replace("`", "")


def _validation_detail(request: Request, extra: list) -> str:
    """Litestar's per-parameter failures as sentences: ``query parameter `from`: expected a
    date, YYYY-MM-DD (got 'yesterday')``, never its enum reprs or argument names."""
    parts = []
    for item in extra:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        source = getattr(item.get("source"), "value", item.get("source")) or "request"
        message = _plain(str(item.get("message", "invalid")))
        if not item.get("key"):
            parts.append(message)
            continue
        name = _parameter_name(request, item["key"])
        got = request.query_params.get(name) if source == "query" else None
        parts.append(f"{source} parameter `{name}`: {message}"
                     + (f" (got {got!r})" if got is not None else ""))
    return "; ".join(parts)


# Litestar's words when the client goes before its body has arrived; it has no class of its own.
_LEFT_MID_BODY = "client disconnected prematurely"


def _left(request: Request) -> Response:
    """A client that left mid-body: nothing of ours failed, and no one reads the answer."""
    get_logger("adtier.errors").info("client_disconnected", request_id=current_request_id(),
                                     method=request.method, path=request.url.path)
    return error_response(400, "client_disconnected", "the client left before its body ended")


def _http(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, InternalServerException) and exc.detail == _LEFT_MID_BODY:
        return _left(request)
    if exc.status_code >= 500:
        return _internal(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    extra = getattr(exc, "extra", None)
    if isinstance(extra, list) and extra and exc.status_code == 400:
        detail = _validation_detail(request, extra)
    elif extra:
        detail = f"{detail}: {extra}"
    return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), detail,
                          exc.headers)


# Loggers are taken per call in these rare paths, so they write where logging is configured now.
def _too_deep(request: Request, exc: RecursionError) -> Response:
    # Bodies decoded by the framework (typed parameters): only client data nests this deep.
    get_logger("adtier.errors").warning("body_too_deep", request_id=current_request_id(),
                                        path=request.url.path)
    return error_response(400, "body_too_deep", "the body is nested too deeply")


def _internal(request: Request, exc: Exception) -> Response:
    """Every 500 is logged with the request id that its answer carries in X-Request-Id."""
    request_id = current_request_id()
    get_logger("adtier.errors").error(
        "internal_error", request_id=request_id, method=request.method, path=request.url.path,
        error=f"{type(exc).__name__}: {exc}"[:500], exc_info=exc)
    return error_response(500, "internal_error", f"internal error; request id {request_id}")


def _store_unavailable(store: str) -> Callable[[Request, Exception], Response]:
    """A store that did not complete a request: 503 with Retry-After (every route's store
    work is safe to retry), logged with the request id; the store's error text (addresses,
    statements) goes to the log only."""

    def handler(request: Request, exc: Exception) -> Response:
        get_logger("adtier.errors").error(
            "store_error", store=store, request_id=current_request_id(), method=request.method,
            path=request.url.path, error=f"{type(exc).__name__}: {exc}"[:500])
        return error_response(503, "store_unavailable",
                              f"{store} did not complete the request; retry", {"Retry-After": "5"})

    return handler


exception_handlers = {ApiError: _api, BodyError: _body, AuthError: _auth, HTTPException: _http,
                      RecursionError: _too_deep, ClickHouseError: _store_unavailable("ClickHouse"),
                      RedisError: _store_unavailable("Redis"), Exception: _internal}
