"""The Litestar application factory: a role's routes and lifespans (adtier.lifespans), the
error shape, OpenAPI."""

from __future__ import annotations

import os
import sys
from functools import partial

from litestar import Litestar
from litestar.types import Receive, Scope, Send

from adtier import __version__
from adtier.catalog import CATALOG_ROUTES
from adtier.console import CONSOLE_API_ROUTES, CONSOLE_ROUTES, openapi_config
from adtier.console.headers import browser_headers_middleware
from adtier.embedded_valkey import die_with_parent
from adtier.errors import exception_handlers
from adtier.features.routes import FEATURE_ROUTES
from adtier.ingest.pixel import (
    GIF_HEADERS,
    PIXEL_PATH,
    PixelTemplateController,
    answer_pixel,
    pixel_route,
)
from adtier.ingest.routes import (
    EVENTS_PATH,
    BatchStatusController,
    EventsController,
    answer_events,
    events_handler,
)
from adtier.ingest.vast_xml import VastController
from adtier.key_routes import KeysController
from adtier.lifespans import for_role
from adtier.logs import configure_logging
from adtier.measure import MEASURE_ROUTES
from adtier.ops import OpsController
from adtier.privacy.http import PRIVACY_ROUTES
from adtier.request_ids import (
    REQUEST_ID,
    answer_with_request_id,
    request_id_middleware,
    request_id_of,
)
from adtier.segments.routes import SEGMENT_ROUTES
from adtier.settings import Settings, load_settings
from adtier.state import app_state_of

__all__ = ["AdtierApp", "create_app"]

# What an ingest-role server answers: events in (batches, pixels, the VAST tags that carry the
# pixels) and its health; nothing that reads ClickHouse.
INGEST_ROUTES = [EventsController, pixel_route, PixelTemplateController, VastController,
                 OpsController]
# Everything, for an `all` server (in the OpenAPI document's order).
ALL_ROUTES = [EventsController, BatchStatusController, PixelTemplateController, pixel_route,
              KeysController, OpsController, *CATALOG_ROUTES, *SEGMENT_ROUTES, *MEASURE_ROUTES,
              *FEATURE_ROUTES, VastController, *CONSOLE_ROUTES, *CONSOLE_API_ROUTES,
              *PRIVACY_ROUTES]


class AdtierApp(Litestar):
    """Litestar, with tracking pixels and event batches answered before routing.

    A pixel is one request per event: Litestar's router, exception middleware and our two
    middlewares took about a third of a pixel's request-loop CPU. ``answer_pixel`` never
    raises (a pixel always answers its GIF), needs none of them, and does here what the request
    id middleware does (``X-Request-Id``, the id in the logs); the browser headers are for
    other paths. ``POST /v1/events`` goes to ``answer_events``, which answers errors with the
    app's exception handlers. Every other request, ``/v1/px/`` and ``/v1/events/`` included,
    is routed as before."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._events_handler = events_handler(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http":
            path = scope["path"]
            if path == PIXEL_PATH:
                scope["app"] = scope["litestar_app"] = self
                request_id = request_id_of(scope)
                token = REQUEST_ID.set(request_id)
                try:
                    await answer_pixel(app_state_of(self), scope, send,
                                       [*GIF_HEADERS, (b"x-request-id", request_id.encode())])
                finally:
                    REQUEST_ID.reset(token)
                return
            if (path == EVENTS_PATH and scope["method"] == "POST"
                    and self._events_handler is not None):
                await self._answer_events(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = scope["litestar_app"] = self
        scope["route_handler"] = self._events_handler
        await answer_with_request_id(partial(answer_events, self), scope, receive, send)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    # Flusher threads share the GIL with the request loop; a short switch interval keeps a
    # flusher's Python work from holding up each of the many small wake-ups of a request.
    sys.setswitchinterval(0.0005)
    if os.environ.get("ADTIER_DIE_WITH_PARENT") == "1":
        die_with_parent()  # a server worker must not outlive `adtier serve`, even after SIGKILL
    configure_logging(settings.log_level, settings.log_as_json)
    return AdtierApp(
        route_handlers=INGEST_ROUTES if settings.role == "ingest" else ALL_ROUTES,
        lifespan=for_role(settings),
        exception_handlers=exception_handlers,
        middleware=[request_id_middleware, browser_headers_middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(__version__),
    )
