"""The edge of every request, as one pure-ASGI layer (a stack of BaseHTTPMiddleware
layers would cost a task and a queue per request each):

1. ``x-request-id`` echoed or generated, and the security headers on every response;
   the deprecation headers on every response of a legacy path (:func:`is_legacy_path`);
2. metrics by route template and one structured access-log line;
3. the request timeout (504 if the handler has not started answering);
4. the admin allowlist, by path (:func:`is_admin_path`, whether a route serves the path or
   not) and on every route that declares ``admin_ip_guard``, before anything else;
5. the credential, from the headers alone, on every route that needs one, before a byte
   of the body is read (FastAPI reads a body before it solves a route's dependencies, so
   a ``Depends`` would come too late): the per-source throttle of refused credentials,
   the credential itself and the rate limits, answered at once on refusal; the context
   goes on to ``deps.authenticate`` in the request state;
6. the route's body limit (413 from ``Content-Length`` at once, or while streaming).

CORS, when configured, sits outside this layer (``app.py``), so a preflight is answered
without a credential and without reaching any of the above.

Which routes need a credential is decided here, in :data:`PUBLIC_PATHS`: every API route
needs one except those, and FastAPI's own pages (``/docs``, ``/redoc``, ``/openapi.json``
and their assets) are public. A test holds each route's ``Auth`` dependency to this list.
A request that matches no route, or none with its method, passes through untouched to
the router's 404 or 405.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...config import Settings
from ...runtime import Services
from ...sequencer.policies import MAX_POLICY_BODY_BYTES
from .deps import admin_ip_guard, authenticate_request, check_admin_ip
from .errors import ApiError, AuthFailure

log = structlog.get_logger("stateset_sequencer.http")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
UNMATCHED = "<unmatched>"
REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

PUBLIC_PATHS = frozenset({"/health", "/ready", "/api/v1/agents/register"})
"""The API routes answered without a credential (route templates)."""

# The reference's 0.8 rules, by request path (docs/EDGE.md).
ADMIN_PATHS = frozenset({"/metrics", "/health/detailed", "/admin", "/admin/", "/api/v1/admin"})
ADMIN_PREFIX = "/api/v1/admin/"
LEGACY_PREFIXES = (
    "/v1/events",  # with /v1/events/ingest below it
    "/v1/head",
    "/v1/commitments",
    "/v1/proofs",
    "/v1/entities",
    "/v1/projections",
    "/v1/anchor",
)
SUCCESSOR = "/api/v1/ves/events/ingest"
OPENAPI_YAML = "/docs/openapi.yaml"
DEPRECATION_HEADERS = [
    (b"deprecation", b"true"),
    (b"sunset", b"Mon, 01 Mar 2027 00:00:00 GMT"),
    (b"link", f'<{SUCCESSOR}>; rel="successor-version", <{OPENAPI_YAML}>; rel="help"'.encode()),
]
DEPRECATION_LOG_INTERVAL_SECS = 60.0


def is_admin_path(path: str) -> bool:
    """Behind ``ADMIN_IP_ALLOWLIST`` whatever route (if any) serves it."""
    return path in ADMIN_PATHS or path.startswith(ADMIN_PREFIX)


def is_legacy_path(path: str) -> bool:
    """A path of the pre-VES API (with or without ``/api``): answered with the
    deprecation headers. ``/api/v1/ves/...`` is not one."""
    bare = path.removeprefix("/api") if path.startswith("/api/") else path
    return any(bare == prefix or bare.startswith(prefix + "/") for prefix in LEGACY_PREFIXES)


def document_deprecations(document: dict[str, Any]) -> None:
    """Mark the legacy operations ``deprecated`` in the OpenAPI document."""
    for path, item in document.get("paths", {}).items():
        if is_legacy_path(path):
            for operation in item.values():
                if isinstance(operation, dict):
                    operation["deprecated"] = True


class DeprecationLog:
    """One warning per legacy route and interval, counting the calls it stands for: a
    client still on the legacy reads would otherwise double the log's volume."""

    def __init__(
        self, interval: float = DEPRECATION_LOG_INTERVAL_SECS, clock: Any = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._due: dict[str, float] = {}  # keyed by route template: a bounded set
        self._calls: dict[str, int] = {}

    def note(self, route: str, method: str, path: str, request_id: str) -> bool:
        """Count one call; True when it was logged."""
        now = self.clock()
        self._calls[route] = self._calls.get(route, 0) + 1
        if now < self._due.get(route, float("-inf")):
            return False
        self._due[route] = now + self.interval
        calls = self._calls.pop(route)
        log.warning(
            "deprecated legacy API called",
            method=method,
            route=route,
            path=path[:200],
            request_id=request_id,
            calls=calls,
            successor=SUCCESSOR,
            sunset="2027-03-01",
        )
        return True


POLICY_PATH = "/api/v1/agents/{agent_id}/policy"


@dataclass(frozen=True, slots=True)
class BodyLimit:
    bytes: int
    setting: str  # what an operator changes to move it


def body_limit(path: str, settings: Settings) -> BodyLimit:
    """A route's body limit, by its template: ingest takes batches of events, the schema
    registry takes schemas, schema validation takes one event payload; everything else
    takes a few fields of JSON."""
    if path.endswith("/ingest"):
        return BodyLimit(settings.MAX_BODY_SIZE_BYTES, "MAX_BODY_SIZE_BYTES")
    if path == "/api/v1/schemas/validate":
        return BodyLimit(
            settings.MAX_EVENT_PAYLOAD_SIZE + settings.MAX_JSON_BODY_BYTES,
            "MAX_EVENT_PAYLOAD_SIZE",
        )
    if path.startswith("/api/v1/schemas"):
        return BodyLimit(settings.MAX_SCHEMA_BODY_BYTES, "MAX_SCHEMA_BODY_BYTES")
    if path == POLICY_PATH:
        # Room for the largest policy the rules allow, even with every character escaped.
        return BodyLimit(
            max(settings.MAX_JSON_BODY_BYTES, MAX_POLICY_BODY_BYTES), "MAX_JSON_BODY_BYTES"
        )
    return BodyLimit(settings.MAX_JSON_BODY_BYTES, "MAX_JSON_BODY_BYTES")


# Routes that answer for as long as the client listens: no request timeout (a live stream
# bounds its own writes, api/http/stream.py).
LONG_LIVED_PATHS = frozenset({"/api/v1/ves/events/stream"})


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    path: str  # the route template, for metrics and the log
    credential: bool
    admin_ip_guard: bool
    body: BodyLimit
    long_lived: bool = False


class BodyTooLarge(Exception):
    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(limit.bytes)
        self.limit = limit


def body_too_large(limit: BodyLimit) -> ApiError:
    return ApiError(
        "PAYLOAD_TOO_LARGE",
        f"Request body exceeds {limit.bytes} bytes, the limit of this route "
        f"(set by {limit.setting})",
        reason="BODY_TOO_LARGE",
        details={"limit_bytes": limit.bytes},
    )


def _calls(dependant: Dependant) -> set[Any]:
    found: set[Any] = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _calls(sub)
    return found


def route_policy(route: RouteContext, settings: Settings) -> RoutePolicy:
    path = str(route.path)
    if not isinstance(route.original_route, APIRoute):
        # FastAPI's pages and the documentation's assets.
        return RoutePolicy(path, False, False, body_limit(path, settings))
    return RoutePolicy(
        path,
        credential=path not in PUBLIC_PATHS,
        admin_ip_guard=admin_ip_guard in _calls(route.dependant),
        body=body_limit(path, settings),
        long_lived=path in LONG_LIVED_PATHS,
    )


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services
        self.metrics = services.metrics
        self.timeout = services.settings.REQUEST_TIMEOUT_SECS
        # A request no route takes is answered 404 or 405 without its body being read;
        # only a declared length past the largest limit is refused first.
        self.unrouted = BodyLimit(services.settings.MAX_BODY_SIZE_BYTES, "MAX_BODY_SIZE_BYTES")
        self._routes: list[tuple[RouteContext, RoutePolicy]] | None = None
        self._static: dict[tuple[str, str], RoutePolicy] = {}
        self.deprecations = DeprecationLog()

    def _policy(self, scope: Scope) -> RoutePolicy | None:
        """The policy of the route the router will pick (its first full match), or None
        when no route matches the path and method."""
        if self._routes is None:
            # Built on the first request: every router is included by then.
            self._routes = [
                (route, route_policy(route, self.services.settings))
                for route in iter_route_contexts(scope["app"].routes)
            ]
        key = (scope.get("method", ""), scope.get("path", ""))
        cached = self._static.get(key)
        if cached is not None:
            return cached
        for route, policy in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                if isinstance(route.original_route, APIRoute) and "{" not in policy.path:
                    # A route path without parameters matches that one path alone, so the
                    # hot routes (ingest, head) skip the scan next time; the cache holds at
                    # most one entry per such route and method (a mount, which matches
                    # any path below it, is never cached).
                    self._static[key] = policy
                return policy
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = [500]
        response_started = [False]
        policy = self._policy(scope)
        path_text: str = scope.get("path", "")
        legacy = is_legacy_path(path_text)
        if legacy:
            route = policy.path if policy is not None else UNMATCHED
            self.deprecations.note(route, scope.get("method", ""), path_text, request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-request-id", b"cache-control")
                ]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                headers.extend(SECURITY_HEADERS)
                if legacy:
                    headers.extend(DEPRECATION_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        limit = policy.body if policy is not None else self.unrouted
        timeout = None if policy is not None and policy.long_lived else self.timeout
        try:
            await asyncio.wait_for(
                self._serve(scope, receive, send_wrapper, policy, limit), timeout
            )
        except BodyTooLarge as exc:
            if not response_started[0]:
                await _send_error(send_wrapper, body_too_large(exc.limit), request_id)
        except TimeoutError:
            if not response_started[0]:
                await _send_error(
                    send_wrapper,
                    ApiError("TIMEOUT", f"Request did not finish within {self.timeout:g} s"),
                    request_id,
                )
        except Exception:
            # Answer here rather than in Starlette's outer error layer, so a 500 also
            # carries the request id and the security headers.
            log.exception("unhandled error", request_id=request_id)
            if not response_started[0]:
                await _send_error(
                    send_wrapper, ApiError("INTERNAL_ERROR", "Internal server error"), request_id
                )
        finally:
            path = policy.path if policy is not None else None
            self._observe(scope, state, path, status_holder[0], time.perf_counter() - started)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        policy: RoutePolicy | None,
        limit: BodyLimit,
    ) -> None:
        guarded = is_admin_path(scope.get("path", "")) or (
            policy is not None and policy.admin_ip_guard
        )
        if guarded or (policy is not None and policy.credential):
            request = Request(scope)
            try:
                if guarded:
                    check_admin_ip(request, self.services)
                if policy is not None and policy.credential:
                    await authenticate_request(request, self.services)
            except AuthFailure as refusal:
                # Answered with the body unread: the server drops what the client still
                # sends, within a deadline (connections.py).
                await refusal.response()(scope, receive, send)
                return
        declared = _content_length(scope)
        if declared is not None and declared > limit.bytes:
            raise BodyTooLarge(limit)
        await self.app(scope, _limited(receive, limit), send)

    def _observe(
        self,
        scope: Scope,
        state: dict[str, Any],
        matched: str | None,
        status: int,
        seconds: float,
    ) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or matched or "unmatched"
        method = scope.get("method", "")
        labels = (method, path, str(status))
        self.metrics.http_requests.labels(*labels).inc()
        self.metrics.http_latency.labels(*labels).observe(seconds)
        log.info(
            "request",
            request_id=state.get("request_id"),
            method=method,
            route=path,
            status=status,
            duration_ms=round(seconds * 1000, 3),
            tenant_id=state.get("tenant_id"),
            store_id=state.get("store_id"),
            subject=state.get("subject"),
        )


def _limited(receive: Receive, limit: BodyLimit) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit.bytes:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if REQUEST_ID_OK.match(text):
                return text
            break  # an unusable id is replaced rather than echoed into logs and headers
    return str(uuid.uuid4())


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, error: ApiError, request_id: str) -> None:
    response = error.response(request_id)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
