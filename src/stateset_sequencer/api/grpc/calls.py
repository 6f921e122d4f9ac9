"""What every call of ours goes through, around its handler (:class:`Gate`):

1. the request id: metadata ``x-request-id`` echoed when usable, else a new one, sent
   back in the initial metadata with whatever the service adds (v1's deprecation flag);
2. the credential (``auth.py``), before the handler sees the request;
3. the handler, a unary one within ``GRPC_REQUEST_TIMEOUT_SECS`` (DEADLINE_EXCEEDED
   after), a streaming one for as long as the client listens;
4. every fault turned into a status: a refusal (:class:`~.errors.GrpcError`) as it says,
   a store fault by class, anything else INTERNAL "internal error" with the traceback in
   the log, never in the answer;
5. one structured log line and the call's count and latency, by method and status code.

A request whose bytes are not its message arrives as :class:`Malformed` (the server
wraps every deserializer, ``server.py``) and is refused INVALID_ARGUMENT in our words,
not grpc's "Exception deserializing request!".

The handlers are methods wrapped by :func:`unary` or :func:`streaming`; their owner is
an :class:`Endpoint` (a servicer holding the gate).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from ...runtime import Services
from ...sequencer.auth import DISABLED_CONTEXT, AuthContext
from ...store.errors import StoreError
from ...store.records import StreamKey
from ..http.metrics import LATENCY_BUCKETS
from ..http.middleware import REQUEST_ID_OK
from .auth import authenticate, metadata_text, peer_address
from .errors import INTERNAL_MESSAGE, RESUME_METADATA, GrpcError, Metadata, store_fault

log = structlog.get_logger("stateset_sequencer.grpc")

REQUEST_ID_METADATA = "x-request-id"
# The HTTP edge's rule for an id worth echoing into logs and answers.
DEPRECATION_LOG_INTERVAL_SECS = 60.0

Context = grpc.aio.ServicerContext[Any, Any]


class GrpcMetrics:
    """The gRPC counters, on the registry the HTTP metrics use (so ``/metrics`` shows
    both); one instance per registry. Counters and a histogram only: under several
    workers (``Metrics.share``) each worker's values are summed, with no gauge mode to
    choose."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "sequencer_grpc_requests",
            "gRPC calls by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "sequencer_grpc_request_latency_seconds",
            "gRPC call duration (a stream's: how long it was open)",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, GrpcMetrics] = weakref.WeakKeyDictionary()


def grpc_metrics(registry: CollectorRegistry) -> GrpcMetrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _METRICS[registry] = GrpcMetrics(registry)
    return found


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request whose bytes did not parse as ``message``."""

    message: str

    def refusal(self) -> GrpcError:
        return GrpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed request: the bytes are not a {self.message} message",
        )


@dataclass(slots=True)
class Call:
    """One call in flight: what its log line names, and where a stream stands."""

    method: str
    request_id: str
    peer: str
    metadata: dict[str, str]
    ctx: AuthContext = DISABLED_CONTEXT
    fields: dict[str, Any] = field(default_factory=dict)
    # A stream's resume point: the first sequence the client has not been sent.
    resume_from: int | None = None

    def bind(self, stream: StreamKey) -> None:
        """Name the stream in this call's log line."""
        self.fields["tenant_id"] = str(stream.tenant_id)
        self.fields["store_id"] = str(stream.store_id)


class Gate:
    """The shared steps (module docstring), the gRPC metrics, and the open streams, which
    :meth:`close` ends with UNAVAILABLE and where to resume."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.metrics = grpc_metrics(services.metrics.registry)
        self.timeout = services.settings.GRPC_REQUEST_TIMEOUT_SECS
        self.closing = False
        self._streams: set[asyncio.Task[Any]] = set()
        self._deprecation_due: dict[str, float] = {}

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def close(self) -> None:
        """End every open stream (each tells its client where to resume)."""
        self.closing = True
        for task in list(self._streams):
            task.cancel()

    def deprecated(self, call: Call, successor: str) -> None:
        """A warning per method and minute, not per call, for the v1 service."""
        now = time.monotonic()
        if now < self._deprecation_due.get(call.method, float("-inf")):
            return
        self._deprecation_due[call.method] = now + DEPRECATION_LOG_INTERVAL_SECS
        log.warning(
            "deprecated gRPC API called; migrate to stateset.sequencer.v2",
            method=call.method,
            successor=successor,
            request_id=call.request_id,
        )

    async def serve(
        self,
        method: str,
        context: Context,
        body: Callable[[Call], Awaitable[Any]],
        *,
        streaming: bool,
        initial: Metadata = (),
    ) -> Any:
        started = time.perf_counter()
        metadata = metadata_text(context)
        call = Call(method, _request_id(metadata), context.peer(), metadata)
        code = grpc.StatusCode.OK
        task = asyncio.current_task()
        if streaming and task is not None:
            self._streams.add(task)
        try:
            try:
                await context.send_initial_metadata(
                    ((REQUEST_ID_METADATA, call.request_id), *initial)
                )
                call.ctx = await authenticate(
                    self.services,
                    metadata,
                    source=peer_address(call.peer),
                    method=method,
                    request_id=call.request_id,
                )
                call.fields["subject"] = call.ctx.subject
                if streaming:
                    return await body(call)
                async with asyncio.timeout(self.timeout):
                    try:
                        return await body(call)
                    except TimeoutError:
                        # The handler's own (the deadline's arrives as a cancellation,
                        # turned into TimeoutError only where the block ends).
                        raise GrpcError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None
            except TimeoutError:
                raise GrpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the call did not finish within {self.timeout:g} s "
                    "(GRPC_REQUEST_TIMEOUT_SECS)",
                ) from None
            except StoreError as exc:
                log.error(
                    "grpc store fault",
                    method=method,
                    request_id=call.request_id,
                    error=type(exc).__name__,
                    detail=str(exc)[:500],
                )
                raise store_fault(exc) from None
            except asyncio.CancelledError:
                if not (self.closing and task is not None and task.cancelling()):
                    raise
                task.uncancel()
                raise _shutting_down(call) from None
            except (GrpcError, grpc.aio.AbortError):
                raise
            except Exception:
                log.exception("grpc handler fault", method=method, request_id=call.request_id)
                raise GrpcError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None
        except GrpcError as exc:
            code = exc.code
            await context.abort(exc.code, exc.message, exc.trailing)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if task is not None:
                self._streams.discard(task)
            self._observe(call, code, time.perf_counter() - started)

    def _observe(self, call: Call, code: grpc.StatusCode, seconds: float) -> None:
        self.metrics.requests.labels(call.method, code.name).inc()
        self.metrics.latency.labels(call.method, code.name).observe(seconds)
        log.info(
            "grpc request",
            request_id=call.request_id,
            method=call.method,
            code=code.name,
            duration_ms=round(seconds * 1000, 3),
            peer=call.peer,
            **call.fields,
        )


def _shutting_down(call: Call) -> GrpcError:
    if call.resume_from is None:
        return GrpcError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    return GrpcError(
        grpc.StatusCode.UNAVAILABLE,
        f"the server is shutting down; resume from_sequence={call.resume_from}",
        ((RESUME_METADATA, str(call.resume_from)),),
    )


def _request_id(metadata: dict[str, str]) -> str:
    given = metadata.get(REQUEST_ID_METADATA)
    if given is not None and REQUEST_ID_OK.match(given):
        return given
    return str(uuid.uuid4())


# --- the handler decorators -----------------------------------------------------------------


class Endpoint(Protocol):
    """A servicer of ours: its gate, its full service name, what its answers' initial
    metadata adds to the request id."""

    gate: Gate
    service_name: ClassVar[str]
    initial_metadata: ClassVar[Metadata]


E = TypeVar("E", bound=Endpoint)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(
    fn: Callable[[E, Req, Call], Awaitable[Resp]],
) -> Callable[[E, Req | Malformed, Context], Coroutine[Any, Any, Resp]]:
    """A unary method ``fn(self, request, call)`` as the handler grpc calls."""

    @functools.wraps(fn)
    async def handler(self: E, request: Req | Malformed, context: Context) -> Resp:
        async def body(call: Call) -> Resp:
            if isinstance(request, Malformed):
                raise request.refusal()
            return await fn(self, request, call)

        method = f"/{self.service_name}/{fn.__name__}"
        result: Resp = await self.gate.serve(
            method, context, body, streaming=False, initial=self.initial_metadata
        )
        return result

    return handler


def streaming(
    fn: Callable[[E, Req, Context, Call], Awaitable[None]],
) -> Callable[[E, Req | Malformed, Context], Coroutine[Any, Any, None]]:
    """A response-streaming method ``fn(self, request, context, call)``, which writes its
    messages with ``context.write`` (through ``streams.Writer``), as the handler grpc
    calls."""

    @functools.wraps(fn)
    async def handler(self: E, request: Req | Malformed, context: Context) -> None:
        async def body(call: Call) -> None:
            if isinstance(request, Malformed):
                raise request.refusal()
            await fn(self, request, context, call)

        method = f"/{self.service_name}/{fn.__name__}"
        await self.gate.serve(method, context, body, streaming=True, initial=self.initial_metadata)

    return handler
