"""The OpenAPI document and the pages that show it: ids, the bearer key, offline docs.

Three rules the document keeps, each derived from the routes rather than written by hand:

1. **Operation ids are the route functions' names** (`post_decisions`, `list_alerts`), so a
   generated client's method names survive a path or tag change. Two routes may not share
   a function name (tests/integration/test_openapi.py checks it).
2. **Auth is documented from the dependencies that enforce it.** A route whose dependencies
   include `deps.require_scope(scope)` (or the ingest route's cached equivalent) lists the
   `bearerAuth` scheme with that scope, and documents 401 and 403 with the error body
   every refusal uses (`app._error_body`). Every `/v1/…` route needs a key even without a
   scope (`auth.middleware.RequestGuard`), so it documents 401 too.
3. **The docs pages need no internet.** Swagger UI and ReDoc load their script, style
   and icon from this app (`/docs/assets/…`, the files `fastapi-offline` ships), never
   from a CDN or Google Fonts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from shadoweval.auth.models import Scope
from shadoweval.exceptions import AuthenticationFailed, PermissionDenied
from shadoweval.ingest.router import ingest_principal

# Scope checks that are not `deps.require_scope` closures: the ingest route's own, cached one.
_OTHER_SCOPE_CHECKS: dict[Callable[..., Any], Scope] = {ingest_principal: Scope.INGEST}

SECURITY_SCHEME = "bearerAuth"
ERROR_SCHEMA = "Error"
ASSETS_PATH = "/docs/assets"
PROTECTED_PREFIX = "/v1/"

# Routes that answer in a format other than JSON, and what they say it is.
_PLAIN_TEXT_OPERATIONS: dict[str, str] = {
    "/metrics": "Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).",
}
_PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ErrorBody(BaseModel):
    """The body of every refusal: a stable `code` to branch on, a message for people, and
    any context the error carries (e.g. `required_scope` on a 403)."""

    model_config = ConfigDict(extra="allow", title=ERROR_SCHEMA)

    detail: str = Field(description="What went wrong, for people.")
    code: str = Field(description="A stable error code, for programs.")


class Readiness(BaseModel):
    """The readiness probe's answer (200 ready; 503 not ready; 507 disk full)."""

    model_config = ConfigDict(extra="allow", title="Readiness")

    status: str = Field(description="`ready` or `not ready`.")
    revision: str | None = Field(default=None, description="The database's migration revision.")
    detail: str | None = Field(default=None, description="Why it is not ready.")
    code: str | None = Field(default=None, description="A stable error code when not ready.")


def operation_id(route: APIRoute) -> str:
    """The operation id: the route function's name, e.g. `post_decisions`."""
    return route.name


# --- which scope a route needs ----------------------------------------------------------


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _dependency_calls(sub)


def _scope_of(call: Callable[..., Any]) -> Scope | None:
    """The scope a dependency checks, if it is a scope check."""
    if call in _OTHER_SCOPE_CHECKS:
        return _OTHER_SCOPE_CHECKS[call]
    # `deps.require_scope(scope)` returns a closure over `scope`.
    if getattr(call, "__qualname__", "").startswith("require_scope."):
        captured = inspect.getclosurevars(call).nonlocals.get("scope")
        if isinstance(captured, Scope):
            return captured
    return None


def api_routes(app: FastAPI) -> Iterator[RouteContext]:
    """The app's documented routes as served: with the prefix and dependencies of the
    routers that include them."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def route_scopes(route: RouteContext) -> list[Scope]:
    """Every scope the route's dependencies check, in `Scope` order."""
    found = {scope for call in _dependency_calls(route.dependant) if (scope := _scope_of(call))}
    return [scope for scope in Scope if scope in found]


def needs_key(route: RouteContext) -> bool:
    return bool(route_scopes(route)) or str(route.path_format).startswith(PROTECTED_PREFIX)


# --- the document -----------------------------------------------------------------------


def _error_response(description: str, code: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"},
                "example": {"detail": description, "code": code},
            }
        },
    }


def _document_auth(operation: dict[str, Any], scopes: list[Scope]) -> None:
    # OpenAPI 3.1 lets a non-OAuth requirement name the roles it needs: here, the scopes.
    operation["security"] = [{SECURITY_SCHEME: [scope.value for scope in scopes]}]
    responses = operation.setdefault("responses", {})
    unauthenticated = _error_response(
        "No API key, or an unknown, revoked or expired one.", AuthenticationFailed.code
    )
    unauthenticated["headers"] = {
        "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
    }
    responses["401"] = {**responses.get("401", {}), **unauthenticated}
    if scopes:
        names = ", ".join(f"`{scope.value}`" for scope in scopes)
        forbidden = _error_response(f"The API key lacks the {names} scope.", PermissionDenied.code)
        own = responses.get("403", {}).get("description")
        if own:  # the route refuses for a reason of its own too: keep it
            forbidden["description"] = f"{forbidden['description']} Or: {own}"
        responses["403"] = {**responses.get("403", {}), **forbidden}
        note = f"Needs an API key with the {names} scope."
        description = operation.get("description", "")
        operation["description"] = f"{description}\n\n{note}" if description else note


def _document_plain_text(operation: dict[str, Any], description: str) -> None:
    ok = operation.setdefault("responses", {}).setdefault("200", {})
    ok["description"] = description
    ok["content"] = {_PROMETHEUS_MEDIA_TYPE: {"schema": {"type": "string"}}}


def _document_readiness(operation: dict[str, Any]) -> None:
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}
    operation["responses"] = {
        "200": {"description": "Ready: the database answers and is migrated.", "content": body},
        "503": {"description": "Not ready: unreachable, stalled or not migrated.", "content": body},
        "507": {"description": "The database's disk is full.", "content": body},
    }


def complete(app: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer scheme, each operation's auth and its refusals, and the operational
    routes' real answers to a document `fastapi.openapi.utils.get_openapi` built."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`shadoweval keys create`), sent as "
        "`Authorization: Bearer <key>`. Scopes are independent: ingest, read, operate, admin.",
    }
    schemas = components.setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = ErrorBody.model_json_schema()
    schemas["Readiness"] = Readiness.model_json_schema()
    for route in api_routes(app):
        path_item = document.get("paths", {}).get(route.path_format, {})
        scopes = route_scopes(route)
        for method in route.methods or ():
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            if needs_key(route):
                _document_auth(operation, scopes)
            else:
                operation["security"] = []  # open: probes and scrapers send no key
            if route.path_format in _PLAIN_TEXT_OPERATIONS:
                _document_plain_text(operation, _PLAIN_TEXT_OPERATIONS[route.path_format])
            if route.path_format == "/readyz":
                _document_readiness(operation)
    return document


# --- the docs pages ---------------------------------------------------------------------


def _assets_directory() -> str:
    # fastapi-offline ships Swagger UI, ReDoc and the favicon; only its files are used.
    return str(resources.files("fastapi_offline") / "static")


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` with assets from this app.

    The app must be created with `docs_url=None, redoc_url=None` (FastAPI's own pages
    load their assets from a CDN)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_assets_directory()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=None,
            # No validator badge: it would send the document to validator.swagger.io.
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
