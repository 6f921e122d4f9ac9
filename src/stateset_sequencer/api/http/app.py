"""The FastAPI application over started :class:`Services`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ...runtime import Services
from ...sequencer import api_keys as api_keys_rules
from ...sequencer.registration import Registrar
from ...store.errors import StoreError
from ...ves.storable import make_storable
from . import (
    agent_keys,
    anchoring,
    api_keys,
    commitments,
    cursors,
    events,
    health,
    ingest,
    openapi_yaml,
    policies,
    projections,
    registration,
    schemas,
    stream,
)
from .errors import AgentError, ApiError, AuthFailure, store_fault
from .middleware import (
    OPENAPI_YAML,
    PUBLIC_PATHS,
    BodyTooLarge,
    EdgeMiddleware,
    body_too_large,
    document_deprecations,
)
from .validation import body_parse_error, request_error

log = structlog.get_logger("stateset_sequencer.http")

# Where /docs and /redoc load Swagger UI and ReDoc from: the files a package ships, so
# the pages work without reaching any other host.
DOCS_ASSETS = "/docs/assets"
_ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
SHOWN_PATH_BYTES = 200
# CORS (CORS_ALLOW_ORIGINS): the reference's methods and headers, plus X-API-Key, a
# credential header this service accepts (docs/EDGE.md).
CORS_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "X-API-Key"]
CORS_EXPOSE_HEADERS = ["x-request-id", "x-error-code", "Retry-After"]


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="StateSet Sequencer",
        version=services.version,
        description=(
            "Verifiable event sequencer (VES v1 and v2), wire-compatible with the StateSet Rust "
            "reference. Authenticate with `Authorization: ApiKey ss_…`, a raw `ss_…` key, "
            "`X-API-Key`, or `Authorization: Bearer <JWT>`."
        ),
        # Served below from local assets instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    settings = services.settings
    app.state.registrar = Registrar(
        enabled=settings.public_registration_enabled,
        per_minute=settings.PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE,
        window_seconds=settings.PUBLIC_AGENT_REGISTRATION_WINDOW_SECONDS,
        max_entries=settings.PUBLIC_AGENT_REGISTRATION_MAX_ENTRIES,
    )
    # Routes with fixed segments go before the routers with ``{agent_id}`` segments.
    app.include_router(health.router)
    app.include_router(registration.router)
    app.include_router(ingest.router)
    # Before the event reads, whose /ves/events/{event_id} would take "stream" for an id.
    app.include_router(stream.router)
    app.include_router(events.router)
    app.include_router(cursors.router)
    app.include_router(agent_keys.router)
    app.include_router(policies.router)
    app.include_router(api_keys.admin_router)
    app.include_router(api_keys.agents_router)
    app.include_router(schemas.router)
    app.include_router(projections.router)
    app.include_router(commitments.router)
    app.include_router(commitments.anchor_service_router)
    app.include_router(anchoring.router)
    _install_docs(app)
    _install_error_handlers(app)
    app.add_middleware(EdgeMiddleware, services=services)
    if services.cors_origins is not None:
        # Added last, so outermost: a preflight is answered before the edge asks for a
        # credential or a body limit (docs/EDGE.md).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=services.cors_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
        )
    _install_openapi(app, services)
    return app


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _install_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=_ASSET_DIR), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # The default validator badge is an image from another host.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    async def openapi_as_yaml(request: Request) -> Response:
        # The reference's deprecation ``link`` names the document at this path.
        return Response(openapi_yaml.dumps(app.openapi()), media_type="application/yaml")

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(OPENAPI_YAML, openapi_as_yaml, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the routes at ``path`` serve (for a 405's ``Allow``); Starlette's own
    answer names only the first route that matched the path. HEAD only where declared:
    FastAPI routes do not answer it for GET."""
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response(_request_id(request))

    @app.exception_handler(AuthFailure)
    async def auth_failure(request: Request, exc: AuthFailure) -> JSONResponse:
        return exc.response()

    @app.exception_handler(AgentError)
    async def agent_error(request: Request, exc: AgentError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return request_error(exc).response(_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):
            # FastAPI wraps any fault while reading a body model into a 400; a body cut
            # off by our size limit is still a 413.
            return body_too_large(exc.__cause__.limit).response(_request_id(request))
        parse_fault = body_parse_error(exc.__cause__)
        if parse_fault is not None:  # the same fault, in our words (validation.py)
            return parse_fault.response(_request_id(request))
        path = request.url.path
        # Only routing (and the static assets) raise these: handlers raise our own errors.
        if exc.status_code == 404:
            return ApiError(
                "RESOURCE_NOT_FOUND",
                f"No route serves {request.method} {_shown(path)}",
                reason="ROUTE_NOT_FOUND",
                details={"path": _shown(path)},
            ).response(_request_id(request))
        if exc.status_code == 405:
            allow = allowed_methods(request.app, path)
            response = ApiError(
                "INVALID_REQUEST_BODY",
                f"{request.method} is not allowed on {_shown(path)}",
                status=405,
                reason="METHOD_NOT_ALLOWED",
                details={"path": _shown(path), "method": request.method, "allow": allow},
            ).response(_request_id(request))
            response.headers["Allow"] = ", ".join(allow)
            return response
        return ApiError("INVALID_REQUEST_BODY", str(exc.detail), status=exc.status_code).response(
            _request_id(request)
        )

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        """Every route's store faults, through the one table (``errors.STORE_FAULTS``)."""
        log.error(
            "database error",
            request_id=_request_id(request),
            error=type(exc).__name__,
            detail=str(exc)[:300],
        )
        return store_fault(exc).response(_request_id(request))


SECURITY_SCHEMES: dict[str, Any] = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`ApiKey ss_…` (or the raw `ss_…` key). Keys always start with `ss_`.",
    },
    "XApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The `ss_…` key alone; read only when `Authorization` is absent.",
    },
    "BearerJWT": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An HS256 token signed with `JWT_SECRET` (claims `sub`, `perms`, ...).",
    },
}
# Any one of the schemes will do.
CREDENTIALS: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]


def is_public(route: RouteContext) -> bool:
    """A route answered without a credential: the edge decides it (``PUBLIC_PATHS``), and
    the document says what the edge does."""
    return route.path in PUBLIC_PATHS


def _document_security(app: FastAPI, document: dict[str, Any]) -> None:
    """Declare the credential schemes (so Swagger UI offers "Authorize") and each
    operation's: any scheme on authenticated routes, none on public ones."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    document["security"] = CREDENTIALS
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        item = document["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is not None:
                operation["security"] = [] if is_public(route) else CREDENTIALS


# A key's name in listings and revocations: a prefix of its SHA-256, in hex.
KEY_PREFIX_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^[0-9a-fA-F]{{{api_keys_rules.MIN_PREFIX},64}}$",
    "description": f"{api_keys_rules.MIN_PREFIX}-64 hex digits of the key's SHA-256 "
    "(the keyHashPrefix of a listing)",
}
# Path parameters whose rule the handler applies to the raw string: (path, name) -> schema.
PATH_PARAMETER_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v1/admin/api-keys/{key_hash_prefix}", "key_hash_prefix"): KEY_PREFIX_SCHEMA,
    ("/api/v1/agents/{agent_id}/api-keys/{key_prefix}", "key_prefix"): KEY_PREFIX_SCHEMA,
}


def _document_constraints(document: dict[str, Any]) -> None:
    """State rules the handlers check on plain strings, so that what the document calls
    valid is what the routes accept."""
    for (path, name), schema in PATH_PARAMETER_RULES.items():
        for operation in document["paths"][path].values():
            for parameter in operation.get("parameters", ()):
                if parameter["name"] == name:
                    parameter["schema"] = {**parameter["schema"], **schema}


def _shown(path: str) -> str:
    """A request path as an error body repeats it: bounded, and valid text whatever was
    sent (a path may hold any percent-decoded byte)."""
    return make_storable(path, max_bytes=SHOWN_PATH_BYTES)


def _install_openapi(app: FastAPI, services: Services) -> None:
    """FastAPI's document plus the component schemas of the hand-parsed ingest body, with
    the configured ingest limits stated."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in ingest.extra_schemas().items():
            components.setdefault(name, schema)
        ingest.document_limits(document, services.sequencer.limits)
        _document_security(app, document)
        _document_constraints(document)
        document_deprecations(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
