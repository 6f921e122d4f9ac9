"""The FastAPI application over started :class:`Services`."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...runtime import Services
from ...store.errors import StoreError
from . import agent_keys, api_keys, events, health, ingest, schemas
from .errors import AgentError, ApiError, AuthFailure, store_fault
from .middleware import BodyTooLarge, EdgeMiddleware
from .validation import request_error

log = structlog.get_logger("stateset_sequencer.http")

_STATUS_CODES = {404: "RESOURCE_NOT_FOUND", 405: "INVALID_REQUEST_BODY"}


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="StateSet Sequencer",
        version=services.version,
        description=(
            "Verifiable event sequencer (VES v1.0), wire-compatible with the StateSet Rust "
            "reference. Authenticate with `Authorization: ApiKey ss_…`, a raw `ss_…` key, "
            "`X-API-Key`, or `Authorization: Bearer <JWT>`."
        ),
    )
    app.state.services = services
    # Routes with fixed segments go before the routers with ``{agent_id}`` segments.
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(events.router)
    app.include_router(agent_keys.router)
    app.include_router(api_keys.admin_router)
    app.include_router(api_keys.agents_router)
    app.include_router(schemas.router)
    _install_error_handlers(app)
    app.add_middleware(
        EdgeMiddleware,
        metrics=services.metrics,
        max_body_bytes=services.settings.MAX_BODY_SIZE_BYTES,
        timeout_seconds=services.settings.REQUEST_TIMEOUT_SECS,
    )
    _install_openapi(app, services)
    return app


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


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
            limit = request.app.state.services.settings.MAX_BODY_SIZE_BYTES
            return ApiError(
                "PAYLOAD_TOO_LARGE",
                f"Request body exceeds {limit} bytes",
                reason="BODY_TOO_LARGE",
            ).response(_request_id(request))
        code = _STATUS_CODES.get(exc.status_code, "INVALID_REQUEST_BODY")
        return ApiError(code, str(exc.detail), status=exc.status_code).response(
            _request_id(request)
        )

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        """Every route's store faults, through the one table (``errors.STORE_FAULTS``)."""
        log.error("database error", error=type(exc).__name__, detail=str(exc)[:300])
        return store_fault(exc).response(_request_id(request))


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
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
