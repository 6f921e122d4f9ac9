"""``/health`` (liveness), ``/ready`` (probes the database), ``/health/detailed`` and
``/metrics`` (operators only, behind ``ADMIN_IP_ALLOWLIST``), with the reference's bodies."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from ...anchoring.breaker import BreakerState
from ...runtime.service import Services
from ...sequencer.auth import AuthError, ensure_admin, ensure_operator
from ...store.errors import StoreError
from ...store.records import PoolStats
from ...ves.codec import format_rfc3339
from .deps import Auth, ServicesDep, admin_ip_guard
from .errors import ANY_ERROR_SCHEMA, agent_error, responses

log = structlog.get_logger("stateset_sequencer.http")
router = APIRouter(tags=["health"])
SERVICE = "stateset-sequencer"
DB_HEALTHY_MS = 100.0
DB_DEGRADED_MS = 500.0


class Health(BaseModel):
    status: str
    service: str
    version: str
    timestamp: str


class ReadyDatabase(BaseModel):
    connected: bool
    response_time_ms: float


class ReadyPool(BaseModel):
    status: str
    utilization: str
    active: int
    idle: int


class Ready(BaseModel):
    status: str
    database: ReadyDatabase
    pool: ReadyPool


def _now() -> str:
    return format_rfc3339(datetime.now(UTC))


def pool_status(stats: PoolStats) -> tuple[str, float]:
    """The reference's pool bands: <70 % healthy, <85 % moderate, <95 % stressed."""
    utilization = 100.0 * stats.active / stats.maximum if stats.maximum else 0.0
    if utilization >= 95:
        return "critical", utilization
    if utilization >= 85:
        return "stressed", utilization
    if utilization >= 70:
        return "moderate", utilization
    return "healthy", utilization


# The edge layer answers these on any route, before the handler runs (body too large,
# request timeout), so even the unauthenticated probes document them.
EDGE_RESPONSES = {status: body for status, body in responses().items() if status in (413, 504)}


def _probe(request: Request, response: Response) -> Response:
    """HEAD answers as GET does, headers (``content-length`` included) without the body:
    load balancers probe with either."""
    if request.method != "HEAD":
        return response
    return Response(status_code=response.status_code, headers=dict(response.headers))


@router.head("/health", response_model=Health, responses=EDGE_RESPONSES)
@router.get("/health", response_model=Health, responses=EDGE_RESPONSES)
async def health(request: Request, services: ServicesDep) -> Response:
    """Liveness: always 200 while the process serves, with no checks."""
    body = {
        "status": "healthy",
        "service": SERVICE,
        "version": services.version,
        "timestamp": _now(),
    }
    return _probe(request, JSONResponse(body))


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **EDGE_RESPONSES,
    503: {
        "description": "not ready",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


@router.head("/ready", response_model=Ready, responses=READY_RESPONSES)
@router.get("/ready", response_model=Ready, responses=READY_RESPONSES)
async def ready(request: Request, services: ServicesDep) -> Response:
    try:
        seconds = await services.store.ping()
    except StoreError:
        return _probe(request, PlainTextResponse("Service unavailable", status_code=503))
    stats = services.store.pool_stats()
    services.metrics.set_pool(stats.active, stats.idle, stats.total, stats.maximum)
    status, utilization = pool_status(stats)
    body = {
        "status": "ready",
        "database": {"connected": True, "response_time_ms": round(seconds * 1000, 3)},
        "pool": {
            "status": status,
            "utilization": f"{utilization:.1f}%",
            "active": stats.active,
            "idle": stats.idle,
        },
    }
    return _probe(request, JSONResponse(body))


def _require_operator(ctx: Any) -> None:
    """Both views aggregate every tenant: operator credentials only, a tenant admin is
    refused (403 OPERATOR_REQUIRED)."""
    try:
        if not (ctx.can_admin or ctx.can_metrics):
            ensure_admin(ctx)  # the reference's refusal of a non-admin, kept as it was
        ensure_operator(ctx)
    except AuthError as exc:
        raise agent_error(exc.reason, exc.message) from None


@router.get(
    "/health/detailed",
    dependencies=[Depends(admin_ip_guard)],
    responses={**responses(), 503: {"description": "unhealthy"}},
)
async def health_detailed(services: ServicesDep, ctx: Auth) -> JSONResponse:
    _require_operator(ctx)
    components: dict[str, Any] = {}
    name = services.store.capabilities.name  # "postgresql" or "sqlite", as the reference
    try:
        seconds = await services.store.ping()
        ms = seconds * 1000
        db_status = (
            "healthy" if ms < DB_HEALTHY_MS else "degraded" if ms < DB_DEGRADED_MS else "unhealthy"
        )
        components["database"] = {
            "name": name,
            "status": db_status,
            "response_time_ms": round(ms, 3),
        }
    except StoreError as exc:
        log.warning("health probe: database unhealthy", error=type(exc).__name__)
        db_status = "unhealthy"
        components["database"] = {
            "name": name,
            "status": "unhealthy",
            "message": "the database did not answer",
            "response_time_ms": None,
        }
    stats = services.store.pool_stats()
    band, utilization = pool_status(stats)
    pool_health = {"critical": "unhealthy", "stressed": "degraded"}.get(band, "healthy")
    components["pool"] = {
        "status": pool_health,
        "total_connections": stats.total,
        "active_connections": stats.active,
        "idle_connections": stats.idle,
        "max_connections": stats.maximum,
        "utilization_percent": round(utilization, 1),
    }
    components["workers"] = {
        "status": "healthy",
        "stream_writers": services.sequencer.active_streams(),
    }
    components["anchoring"] = anchoring_component(services)
    # An open breaker stalls anchoring only: degraded, never the 503 that would take a
    # node that still sequences out of its load balancer.
    states = {db_status, pool_health, components["anchoring"]["status"]}
    states.discard("disabled")
    overall = (
        "unhealthy" if "unhealthy" in states else "degraded" if "degraded" in states else "healthy"
    )
    body = {
        "status": overall,
        "service": SERVICE,
        "version": services.version,
        "timestamp": _now(),
        "components": components,
        "system": {"python_version": platform.python_version()},
    }
    return JSONResponse(body, status_code=503 if overall == "unhealthy" else 200)


def anchoring_component(services: Services) -> dict[str, Any]:
    """The chain client's breaker and the anchor worker, from what they already know: a
    health probe never waits on the node."""
    chain = services.chain
    if chain is None:
        return {"status": "disabled", "message": "anchoring is not configured"}
    breaker = chain.status()
    worker = services.anchor_worker
    return {
        "status": "healthy" if breaker.state is BreakerState.CLOSED else "degraded",
        "registry": chain.registry,
        "sender": chain.sender,
        "circuit_breaker": {
            "state": breaker.state.value,
            "recent_failures": breaker.recent_failures,
            "retry_in_seconds": None
            if breaker.retry_in_s is None
            else round(breaker.retry_in_s, 1),
            "last_error": breaker.last_error,
        },
        "worker": None
        if worker is None
        else {
            "leading": worker.leader.leading,
            "sent": worker.sent,
            "confirmed": worker.confirmed,
            "reanchored": worker.reanchored,
        },
    }


@router.get(
    "/metrics",
    dependencies=[Depends(admin_ip_guard)],
    response_class=PlainTextResponse,
    responses={
        **responses(),
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        # A non-admin key gets the reference's plain-text refusal; a tenant admin, the
        # allowlist and the auth layer refuse with JSON bodies.
        403: {
            "description": "forbidden",
            "content": {
                "application/json": {"schema": ANY_ERROR_SCHEMA},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
    },
)
async def metrics(services: ServicesDep, ctx: Auth) -> Response:
    if not (ctx.can_admin or ctx.can_metrics):
        return PlainTextResponse("Admin permission required", status_code=403)
    _require_operator(ctx)
    observe(services)
    return Response(
        services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def observe(services: Services) -> None:
    """The gauges read at scrape time (the pool, the live subscriptions, uptime). Under
    several workers each refreshes its own every few seconds (runtime/workers.py), since
    a scrape is answered by one of them from every worker's last values."""
    stats = services.store.pool_stats()
    services.metrics.set_pool(stats.active, stats.idle, stats.total, stats.maximum)
    services.metrics.set_streams(services.live.subscribers, services.live.connected)
    services.metrics.tick()
