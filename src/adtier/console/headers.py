"""Security headers for the pages people open in a browser (``/console``, ``/docs``).

Every answer under those paths: no MIME sniffing (``X-Content-Type-Options``). The HTML pages
also refuse framing (``frame-ancestors``, and ``X-Frame-Options`` for older browsers), so a
signed-in console cannot be clickjacked, and load script from this server only. The console
page sets its own stricter policy (routes.py); Swagger UI's page starts itself with an inline
script holding the document, hence ``'unsafe-inline'`` for scripts there (never a remote one).
The API and the pixel are left alone: no browser renders them, and they are the hot path.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DOCS_CSP", "browser_headers_middleware"]

DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_PREFIXES = ("/console", "/docs")


def _for_pages(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    extra = [(b"x-content-type-options", b"nosniff")]
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html"):
        extra += [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                  (b"content-security-policy", DOCS_CSP.encode())]
    return [*headers, *(h for h in extra if h[0] not in names)]


def browser_headers_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PREFIXES):
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _for_pages(list(message.get("headers", ())))
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
