"""The API docs: Swagger UI served from the installed ``swagger-ui-py`` package (no CDN), the
bearer scheme, the real error shape, request bodies for the handlers that decode their own
body, and the pixel (a plain ASGI route, invisible to Litestar's generator).

Litestar generates the document from the handlers' types; ``complete`` fills in what types
alone cannot say, in this one place, so route modules keep reading raw bodies (their strict
typed decoders answer 400 naming the field) unchanged. It runs in the render plugins (the
public hook through which Litestar hands out its document), once per document.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from adtier.console.assets import VENDOR_PATH
from adtier.console.docs_models import BODIES, FILES, PIXEL_PATH, RESPONSES
from adtier.errors import ErrorBody

__all__ = ["openapi_config", "complete"]

_SWAGGER = f"{VENDOR_PATH}/swagger"
_REF = "#/components/schemas/{name}"
# Routes a player or a probe calls without a bearer key.
_ANONYMOUS = {"/healthz", "/readyz", "/metrics"}


_completed: set[int] = set()


def _complete_once(doc: dict[str, Any]) -> dict[str, Any]:
    # Litestar builds the dict once and hands the same one to every render
    if id(doc) not in _completed:
        complete(doc)
        _completed.add(id(doc))
    return doc


class _Json(JsonRenderPlugin):
    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, _complete_once(openapi_schema))


class _Swagger(SwaggerRenderPlugin):
    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, _complete_once(openapi_schema))


def openapi_config(version: str) -> OpenAPIConfig:
    swagger = _Swagger(
        js_url=f"{_SWAGGER}/swagger-ui-bundle.js", css_url=f"{_SWAGGER}/swagger-ui.css",
        standalone_preset_js_url=f"{_SWAGGER}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{_SWAGGER}/favicon-32x32.png'>",
        path="/swagger")
    return OpenAPIConfig(
        title="adtier", version=version,
        description="Ad events in; audiences, measurement and features out. Every request "
                    "but the pixel and the probes sends `Authorization: Bearer <key>`; every "
                    "error answers `{\"error\": code, \"detail\": text}`. A console for "
                    "people is at `/console`.",
        path="/docs", render_plugins=[swagger, _Json()],
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer",
                                     description="an API key (`adtier keys create`)"),
            "pixel_key": SecurityScheme(type="apiKey", security_scheme_in="query", name="k",
                                        description="an ingest key, in the tracking URL"),
        }),
        security=[{"bearer": []}],
    )


def _schemas(types: list[Any]) -> tuple[list[dict], dict[str, Any]]:
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    return list(refs), components


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": _REF.format(name="ErrorBody")}}}}


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    bodies = list(BODIES.items())
    responses = list(RESPONSES.items())
    types = [ErrorBody, *(b.type for _, b in bodies), *(t for _, t in responses)]
    refs, components = _schemas(types)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    body_refs = dict(zip((k for k, _ in bodies), refs[1:1 + len(bodies)]))
    response_refs = dict(zip((k for k, _ in responses), refs[1 + len(bodies):]))
    doc["paths"][PIXEL_PATH[0]] = PIXEL_PATH[1]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            _operation(path, method, op, body_refs, response_refs)
    return doc


def _operation(path: str, method: str, op: dict[str, Any], body_refs: dict, response_refs: dict
               ) -> None:
    key = (method.upper(), path)
    if key in body_refs:
        spec = BODIES[key]
        op["requestBody"] = {"required": True, "description": spec.description,
                             "content": {media: {"schema": body_refs[key]}
                                         for media in spec.media_types}}
    answers = op.setdefault("responses", {})
    if key in response_refs:
        ok = next((c for c in ("200", "201", "202") if c in answers), "200")
        answers[ok] = {"description": answers.get(ok, {}).get("description", "OK"),
                       "content": {"application/json": {"schema": response_refs[key]}}}
    if key in FILES:
        answers["200"] = {"description": answers.get("200", {}).get("description", "OK"),
                          "content": FILES[key]}
    for code in list(answers):
        if int(code) >= 400:  # Litestar's default shape is not what the server sends
            answers[code] = _error(answers[code].get("description") or "error")
    if path in _ANONYMOUS:
        op["security"] = []
        return
    if op.get("security") == [{"pixel_key": []}]:
        return
    if "requestBody" in op or op.get("parameters"):
        answers.setdefault("400", _error("a parameter or the body is not valid"))
    answers.setdefault("401", _error("no key, or an unknown or revoked key"))
    answers.setdefault("403", _error("the key's role may not call this"))
    if "{" in path:
        answers.setdefault("404", _error("no such id, or not one this key may see"))
    if path.startswith("/v1/"):
        answers.setdefault("503", _error("a store did not answer; retry after Retry-After"))
