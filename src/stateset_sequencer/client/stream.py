"""Following a stream as it grows: :meth:`StreamRoutes.tail`, over Server-Sent Events
(``GET /api/v1/ves/events/stream``, the default) or gRPC ``Sequencer/StreamEvents``.

A tail outlives its connections. The client keeps the stream's position (the last
sequence yielded, or the position a heartbeat reported, which also counts events a filter
skipped) and, when a connection ends, opens the next one just after it (``from`` and
``Last-Event-ID`` over SSE, ``from_sequence`` over gRPC). So a dropped connection, a
server restarted, or a cut-off for reading too slowly (``subscriber_too_slow``) costs
latency only: no event is yielded twice (anything at or below the position is dropped)
and none is skipped. Without ``from_sequence`` the tail asks the head first and starts just
after it, so that even a connection lost before its first message resumes from a known
place.

When to try again follows the client's :class:`RetryPolicy`, as every call does:

* a connection that could not be opened (refused, reset, a retryable status such as 503,
  or a stream that ended with an ``error`` message before delivering anything) is a failed
  attempt. The next goes to the next base URL after the policy's backoff (``Retry-After``
  honoured); when the policy's attempts or deadline are spent, the last failure is raised:
  :class:`SequencerUnavailable`, :class:`SequencerError` or :class:`StreamError`. Any
  event or heartbeat received ends the count.
* a connection that delivered something and then ended is reopened at once; one that
  ended having delivered nothing is reopened after a growing backoff (never raised: a
  quiet stream behind a proxy that drops idle connections is not a fault).
* a refusal that another try cannot change (401, 403, 400, 404, …) is raised at once.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from ..ves.envelope import VesEventEnvelope, parse_envelope
from .core import ClientCore
from .dispatch import _described
from .errors import (
    Attempt,
    SequencerClientError,
    SequencerError,
    SequencerUnavailable,
    UnexpectedResponse,
    error_from,
)
from .retry import RETRY_STATUSES, never_sent, retry_after, transient
from .shapes import Reply
from .sse import SseMessage, SseParser, SseTooLarge

STREAM = "/api/v1/ves/events/stream"
HEAD = "/api/v1/ves/head"
DEFAULT_HEARTBEAT_MS = 15_000
# The SSE error code of a subscriber cut off for not reading.
TOO_SLOW = "subscriber_too_slow"

Transport = Literal["sse", "grpc"]


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One event of the stream. ``envelope`` is what :meth:`iter_events` yields: the stored
    envelope as signed, with the ``sequence_number`` and ``sequenced_at`` the sequencer
    added (over gRPC, rebuilt from the message's fields)."""

    sequence_number: int
    sequenced_at: str
    envelope: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The item as ``GET /api/v1/ves/events`` pages hold it."""
        return {"envelope": self.envelope}

    def parsed(self) -> VesEventEnvelope:
        """The envelope as the protocol's model (the two fields the sequencer added are
        not the agent's, and are left out)."""
        return parse_envelope(self.envelope)


@dataclass(frozen=True, slots=True)
class TailHeartbeat:
    """The server's position: every sequence up to it has been read, the ones the filters
    left out included. ``at`` is the server's time (RFC 3339), when it said."""

    position: int
    at: str | None = None


TailItem = TailEvent | TailHeartbeat


class StreamError(SequencerClientError):
    """The server ended the stream with an SSE ``error`` message (other than the cut-off
    of a slow reader, which is only reconnected) and reconnecting did not cure it within
    the retry policy. ``resume_from`` is the first sequence the server said to resume
    from. A gRPC status is a :class:`SequencerError` with the matching HTTP status."""

    def __init__(self, code: str, message: str, resume_from: int | None = None) -> None:
        super().__init__(f"stream error {code}: {message}")
        self.code = code
        self.message = message
        self.resume_from = resume_from
        self.attempts: tuple[Attempt, ...] = ()


# Plan, Failed and Connection are shared with .grpcstream; they are not the SDK's API.


@dataclass(frozen=True, slots=True)
class Plan:
    """What a tail asks every connection for."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID
    heartbeat_ms: int
    entity_types: tuple[str, ...]
    event_types: tuple[str, ...]
    agents: tuple[uuid.UUID, ...]


class Failed(Exception):
    """A connection that failed: another attempt may cure it unless ``fatal``. ``error``
    is what to raise when the attempts are spent (None: unavailable, no answer)."""

    def __init__(
        self,
        attempt: Attempt,
        error: SequencerClientError | None = None,
        *,
        wait: float | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(attempt.outcome)
        self.attempt = attempt
        self.error = error
        self.wait = wait
        self.fatal = fatal

    def final(self, method: str, path: str, attempts: tuple[Attempt, ...]) -> Exception:
        if self.error is None:
            return SequencerUnavailable(method, path, attempts)
        if isinstance(self.error, SequencerError | StreamError):
            self.error.attempts = attempts
        return self.error


class Connection(Protocol):
    """One open connection of a tail. ``opened``: the server has answered (a failure
    after it is the server's, not the route's to it, so the next try keeps the URL)."""

    opened: bool

    async def next(self) -> TailItem | None:
        """The next item, or None once the connection has ended (closed, broken, or cut
        off): the caller reopens after its position."""
        ...

    async def close(self) -> None: ...


class _Source(Protocol):
    method: str  # with path, how failures name the call
    path: str
    targets: tuple[str, ...]
    first: int

    async def open(self, index: int, position: int) -> Connection: ...

    async def close(self) -> None: ...


class StreamRoutes(ClientCore):
    async def tail(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        *,
        from_sequence: int | None = None,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        entity_types: Sequence[str] = (),
        event_types: Sequence[str] = (),
        agents: Sequence[uuid.UUID] = (),
        transport: Transport = "sse",
        grpc_target: str | None = None,
    ) -> AsyncGenerator[TailItem, None]:
        """Every event of the stream from ``from_sequence`` (else from just after the
        current head), then each one as it is sequenced, for as long as the caller reads:
        :class:`TailEvent` items, and :class:`TailHeartbeat` ones every ``heartbeat_ms``
        (0: none) while nothing else comes. Filters narrow what is yielded, not the
        position. Reconnects by itself (see :mod:`.stream`); 401 and 403 are raised.
        Close it when done (``contextlib.aclosing``, or the end of an ``async for``
        that breaks inside one): that closes its connection.

        ``transport="grpc"`` reads ``Sequencer/StreamEvents`` at ``grpc_target``
        (``host:port``; by default each base URL's host with its port + 1)."""
        if from_sequence is not None and (type(from_sequence) is not int or from_sequence < 1):
            raise ValueError("from_sequence is the first sequence wanted: 1 or more")
        if type(heartbeat_ms) is not int or heartbeat_ms < 0:
            raise ValueError("heartbeat_ms is a whole number of milliseconds, 0 for none")
        if transport not in ("sse", "grpc"):
            raise ValueError(f"transport is 'sse' or 'grpc', not {transport!r}")
        if grpc_target is not None and transport != "grpc":
            raise ValueError("grpc_target is for transport='grpc'")
        plan = Plan(
            tenant_id,
            store_id,
            heartbeat_ms,
            tuple(entity_types),
            tuple(event_types),
            tuple(agents),
        )
        source: _Source
        if transport == "sse":
            source = _SseSource(self, plan)
        else:
            # Imported here: grpc and protobuf are a tenth of a second at start-up, which
            # a client that never uses them (every CLI command) need not pay.
            from .grpcstream import GrpcSource

            source = GrpcSource(self, plan, grpc_target)
        # One generator, no nested ones: a tail dropped unclosed is finalised by the
        # loop, which closes every pending generator at once and would trip on a
        # generator being closed by another.
        connection: Connection | None = None
        try:
            if from_sequence is not None:
                position = from_sequence - 1
            else:
                params = {"tenant_id": tenant_id, "store_id": store_id}
                position = (await self._reply("GET", HEAD, params=params)).integer("head_sequence")
            pace = _Pace(self, source)
            while True:
                progressed = False
                try:
                    connection = await source.open(pace.index, position)
                    if connection.opened:
                        pace.opened()
                    while (item := await connection.next()) is not None:
                        if not progressed:
                            progressed = True
                            pace.progress()
                        if isinstance(item, TailEvent):
                            if item.sequence_number <= position:
                                continue  # at or below the position: yielded already
                            position = item.sequence_number
                        elif item.position > position:
                            position = item.position
                        yield item
                    wait = pace.ended(progressed)
                except Failed as failed:
                    wait = pace.failed(failed, connection is not None and connection.opened)
                finally:
                    if connection is not None:
                        done, connection = connection, None
                        await done.close()
                if wait > 0:
                    await self.retry.sleep(wait)
        finally:
            if connection is not None:
                await connection.close()
            await source.close()


class _Pace:
    """When the next connection opens and where (the rules of the module's docstring):
    failed attempts counted by the client's retry policy since the last item received,
    connections that ended quietly backed off without end."""

    def __init__(self, core: ClientCore, source: _Source) -> None:
        self._core = core
        self._source = source
        self.index = source.first
        self._failures = 0
        self._quiet = 0
        self._attempts: list[Attempt] = []
        self._outage_began: float | None = None

    def progress(self) -> None:
        self._failures = self._quiet = 0
        self._attempts.clear()
        self._outage_began = None

    def opened(self) -> None:
        # A server that answers is back, if not yet well: its deadline starts again,
        # while the failures count on until something is received.
        self._outage_began = None

    def ended(self, progressed: bool) -> float:
        if progressed:
            return 0.0  # it worked until now: straight back
        self._quiet += 1
        return self._core.retry.backoff(self._quiet)

    def failed(self, failed: Failed, opened: bool) -> float:
        """The wait before the next attempt; raises what to raise once none is left."""
        self._attempts.append(failed.attempt)
        policy = self._core.retry
        self._failures += 1
        now = policy.clock()
        if self._outage_began is None:
            self._outage_began = now
        wait = None
        if not failed.fatal:
            wait = policy.wait(self._failures, failed.wait, now - self._outage_began)
        if wait is None:
            attempts = tuple(self._attempts)
            source = self._source
            raise failed.final(source.method, source.path, attempts) from failed.__cause__
        if not opened:  # no answer from this URL: the next one (an answering one is kept)
            self.index = (self.index + 1) % len(self._source.targets)
        return wait


# --- Server-Sent Events ---------------------------------------------------------------


class _SseSource:
    method = "GET"
    path = STREAM

    def __init__(self, core: ClientCore, plan: Plan) -> None:
        self._http = core._http
        self._plan = plan
        self.targets = core.base_urls
        self.first = self.targets.index(core.base_url)
        base = self._http.timeout
        # Heartbeats are the stream's pulse: a silence much longer than their interval is
        # a connection that died without a word (a host gone, not a process). Without
        # them, silence is normal and only the connection's end tells.
        read = plan.heartbeat_ms / 1000 * 2 + (base.read or 0.0) if plan.heartbeat_ms else None
        self._timeout = httpx.Timeout(
            connect=base.connect, read=read, write=base.write, pool=base.pool
        )

    def _params(self, position: int) -> dict[str, Any]:
        plan = self._plan
        params: dict[str, Any] = {
            "tenant_id": str(plan.tenant_id),
            "store_id": str(plan.store_id),
            "from": position + 1,
            "heartbeat_ms": plan.heartbeat_ms,
        }
        if plan.entity_types:
            params["entity_type"] = list(plan.entity_types)
        if plan.event_types:
            params["event_type"] = list(plan.event_types)
        if plan.agents:
            params["agent_id"] = [str(a) for a in plan.agents]
        return params

    async def open(self, index: int, position: int) -> _SseConnection:
        base = self.targets[index]
        headers = {
            "accept": "text/event-stream",
            "cache-control": "no-cache",
            "last-event-id": str(position),
        }
        request = self._http.build_request(
            "GET",
            base + STREAM,
            params=self._params(position),
            headers=headers,
            timeout=self._timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.RequestError as exc:
            attempt = Attempt(base, _described(exc), not never_sent(exc))
            raise Failed(attempt, fatal=not transient(exc)) from exc
        try:
            await _check_opening(base, response)
        except BaseException:
            await response.aclose()
            raise
        return _SseConnection(base, response)

    async def close(self) -> None:
        pass  # the client's connection pool outlives a tail


class _SseConnection:
    opened = True

    def __init__(self, base: str, response: httpx.Response) -> None:
        self._base = base
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = SseParser()
        self._ready: deque[SseMessage] = deque()
        self._ended = False

    async def next(self) -> TailItem | None:
        while not self._ended:
            while self._ready:
                item = _sse_item(self._base, self._ready.popleft())
                if item is _CUT_OFF:
                    self._ended = True
                elif item is not None:
                    assert not isinstance(item, _CutOff)
                    return item
            if self._ended:
                break
            try:
                chunk = await anext(self._chunks)
            except (StopAsyncIteration, httpx.RequestError):
                self._ended = True  # ended or broken mid-stream: reopened after the position
                break
            try:
                self._ready.extend(self._parser.feed(chunk))
            except SseTooLarge as exc:
                raise UnexpectedResponse(f"GET {STREAM}", str(exc)) from None
        return None

    async def close(self) -> None:
        # Closed here, not left to the loop's finaliser (see tail).
        finish = getattr(self._chunks, "aclose", None)
        if finish is not None:
            with contextlib.suppress(Exception):
                await finish()
        await self._response.aclose()


async def _check_opening(base: str, response: httpx.Response) -> None:
    status = response.status_code
    what = f"GET {STREAM}"
    if status >= 400:
        await response.aread()
        error = error_from(response)
        attempt = Attempt(base, f"HTTP {status}", True)
        if status in RETRY_STATUSES:
            raise Failed(attempt, error, wait=retry_after(response.headers))
        raise Failed(attempt, error, fatal=True)
    if 300 <= status < 400:
        where = response.headers.get("location", "nowhere said")
        raise UnexpectedResponse(what, f"answered {status}, a redirect to {where}")
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise UnexpectedResponse(what, f"answered {kind or 'no content type'}, not an event stream")


class _CutOff:
    pass


_CUT_OFF = _CutOff()


def _sse_item(base: str, message: SseMessage) -> TailItem | _CutOff | None:
    what = f"GET {STREAM} {message.event}"
    if message.event not in ("event", "heartbeat", "error"):
        return None  # a kind this client does not know yet
    try:
        value = json.loads(message.data)
    except ValueError:
        raise UnexpectedResponse(what, "the data is not JSON") from None
    reply = Reply.of(value, what)
    if message.event == "event":
        envelope = reply.child("envelope")
        number = envelope.integer("sequence_number")
        return TailEvent(number, envelope.text("sequenced_at"), envelope.data)
    if message.event == "heartbeat":
        at = reply.data.get("at")
        return TailHeartbeat(reply.integer("position"), at if isinstance(at, str) else None)
    code = str(reply.data.get("code", "unknown"))
    if code == TOO_SLOW:
        return _CUT_OFF  # reopened at once, after the position this client holds
    text = str(reply.data.get("message", ""))
    error = StreamError(code, text, reply.optional_integer("resume_from"))
    raise Failed(Attempt(base, f"stream error {code}", True), error)
