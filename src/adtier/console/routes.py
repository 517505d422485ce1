"""The console's pages and assets: ``/console`` (one HTML page; the modules route by hash),
``/console/static/*`` (this package's files) and ``/console/vendor/*`` (plotly.js and Swagger
UI from their installed packages). Nothing here reads data: the page calls the public API."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.response import File
from litestar.static_files import create_static_files_router

from adtier.console.assets import STATIC_DIR, VENDOR_PATH, plotly_js, swagger_dir

__all__ = ["CONSOLE_ROUTES"]

# The page itself is tiny and changes with releases: revalidate. Vendor files carry their
# package's version in nothing but the wheel, so an hour of caching is the compromise.
_NO_CACHE = CacheControlHeader(no_cache=True)
_VENDOR_CACHE = CacheControlHeader(max_age=3600)
# What the page may load: only this origin (no CDN can slip in); plotly needs inline styles.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'")


@get(["/console", "/console/"], include_in_schema=False, cache_control=_NO_CACHE)
async def console_page() -> Response:
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type="text/html",
                    headers={"Content-Security-Policy": _CSP,
                             "Referrer-Policy": "no-referrer"})


@get(f"{VENDOR_PATH}/plotly.min.js", include_in_schema=False, cache_control=_VENDOR_CACHE)
async def plotly_bundle() -> File:
    return File(plotly_js(), content_disposition_type="inline",
                media_type="text/javascript; charset=utf-8")


CONSOLE_ROUTES = [
    console_page,
    plotly_bundle,
    create_static_files_router(path="/console/static", directories=[STATIC_DIR],
                               include_in_schema=False, cache_control=_NO_CACHE,
                               name="console_static"),
    create_static_files_router(path=f"{VENDOR_PATH}/swagger", directories=[swagger_dir()],
                               include_in_schema=False, cache_control=_VENDOR_CACHE,
                               name="swagger_static"),
]
