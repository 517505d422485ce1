"""A request id on every response (``X-Request-Id``), for the log lines that explain it.

A client's own ``X-Request-Id`` (short, printable) is kept, so a trace can cross services;
otherwise one is made. The id is what links a 500 answer to the log line that explains it.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID", "answer_with_request_id", "current_request_id", "request_id_middleware",
           "request_id_of"]

REQUEST_ID: ContextVar[str] = ContextVar("adtier_request_id", default="")
_HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def current_request_id() -> str:
    return REQUEST_ID.get()


def _incoming(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == _HEADER and _SAFE.fullmatch(value):
            return value.decode()
    return ""


def request_id_of(scope: Scope) -> str:
    """The client's request id if it sent a usable one, else a new one."""
    return _incoming(scope) or secrets.token_hex(8)


async def answer_with_request_id(app: ASGIApp, scope: Scope, receive: Receive,
                                 send: Send) -> None:
    """``app``'s answer with the request's id in the logs' context and in ``X-Request-Id``."""
    request_id = request_id_of(scope)
    header = (_HEADER, request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    token = REQUEST_ID.set(request_id)
    try:
        await app(scope, receive, send_with_id)
    finally:
        REQUEST_ID.reset(token)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        await answer_with_request_id(app, scope, receive, send)

    return middleware
