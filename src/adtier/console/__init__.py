"""The web console (``/console``) and the offline API docs (``/docs``).

A page for advertisers (their campaigns, forecasts, segments) and one for operators (the
pipeline), served by ``adtier serve`` with every asset local: the page"s own modules in
``static/``, and the chart library and Swagger UI from the installed packages that ship them
(``plotly``"s ``plotly.min.js``, ``swagger-ui-py``"s Swagger UI dist). The page calls only the
public API with the signed-in key, so tenant rules and privacy stay the API"s.

Names are imported lazily, as every package"s are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adtier.lazy import lazy_names

if TYPE_CHECKING:
    from adtier.console.endpoints import CONSOLE_API_ROUTES
    from adtier.console.openapi import openapi_config
    from adtier.console.routes import CONSOLE_ROUTES

__all__ = ["CONSOLE_ROUTES", "CONSOLE_API_ROUTES", "openapi_config"]

_WHERE = {"CONSOLE_ROUTES": "routes", "CONSOLE_API_ROUTES": "endpoints",
          "openapi_config": "openapi"}

__getattr__ = lazy_names(__name__, _WHERE)
