"""The edge of every request, as one pure-ASGI layer (a stack of BaseHTTPMiddleware
layers would cost a task and a queue per request each):

1. ``x-request-id`` echoed or generated, and the security headers on every response;
2. metrics by route template and one structured access-log line;
3. the request timeout (504 if the handler has not started answering);
4. the body-size limit (413 from ``Content-Length`` at once, or while streaming).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError
from .metrics import Metrics

log = structlog.get_logger("stateset_sequencer.http")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        timeout_seconds: float,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.timeout = timeout_seconds

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
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body:
                raise BodyTooLarge
            body_receive = self._limited(receive)
            await asyncio.wait_for(self.app(scope, body_receive, send_wrapper), self.timeout)
        except BodyTooLarge:
            if not response_started[0]:
                await _send_error(
                    send_wrapper,
                    ApiError(
                        "PAYLOAD_TOO_LARGE",
                        f"Request body exceeds {self.max_body} bytes",
                        reason="BODY_TOO_LARGE",
                    ),
                    request_id,
                )
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
            self._observe(scope, state, status_holder[0], time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        return wrapped

    def _observe(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
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


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID_OK.match(text):
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
