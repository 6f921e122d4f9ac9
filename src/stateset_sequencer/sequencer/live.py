"""Live events: every committed event, whichever process sequenced it, to every subscriber.

Two halves meet through the store's :class:`HeadFeed`:

- :class:`HeadAnnouncer` tells the feed each stream head the writer commits, after the
  commit, coalesced: while one announcement is on its way the next heads gather, so a
  busy process sends a notification per stream per round trip, not per batch.
- :class:`LiveEvents` listens to the feed and wakes the subscribers of a stream when its
  head moves. A subscriber never takes events from a notice: it reads them from the store
  after its own position, a page at a time. So history and live events come through one
  loop, with no gap and no duplicate at the seam, and a lost notice costs latency only:
  watched heads are also read back every ``recheck_s`` (faster while the feed is down).

A subscription holds at most one page in memory whatever its consumer does; a consumer
that stops taking events is the transport's to cut off (``STREAM_STALL_TIMEOUT_MS``),
telling it where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from ..store.ports import ChangeListener, EventLog, HeadFeed
from ..store.records import HeadNotice, StoredEvent, StreamKey

log = structlog.get_logger("stateset_sequencer.live")

DEFAULT_PAGE_EVENTS = 100
DEFAULT_RECHECK_S = 5.0
DEFAULT_RECHECK_DISCONNECTED_S = 0.5
# One page read at a time is bounded by events and by bytes, as the read routes are.
DEFAULT_PAGE_BYTES = 4 * 1024 * 1024
# A notice can outrun a read replica: the events it announces are not there yet.
REPLICA_RETRY_S = 0.05


class HeadAnnouncer:
    """Coalesces committed heads into announcements on the feed; never blocks the writer
    and never raises into it (a failed announcement is logged: subscribers recheck)."""

    def __init__(self, feed: HeadFeed) -> None:
        self._feed = feed
        self._pending: dict[StreamKey, int] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, stream: StreamKey, head: int) -> None:
        if head > self._pending.get(stream, -1):
            self._pending[stream] = head
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await self._feed.announce_heads(batch)
            except Exception as exc:  # the events are committed; only the wake-up is late
                log.warning("head announcement failed", streams=len(batch), error=str(exc)[:200])

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber wants; an empty set matches everything. Filtered-out
    events still move the subscriber's position, so heartbeats and resumes skip them."""

    entity_types: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    agents: frozenset[uuid.UUID] = frozenset()
    entity_id: str | None = None

    @classmethod
    def of(
        cls,
        entity_types: Iterable[str] = (),
        event_types: Iterable[str] = (),
        agents: Iterable[uuid.UUID] = (),
        entity_id: str | None = None,
    ) -> EventFilter:
        return cls(
            frozenset(t for t in entity_types if t),
            frozenset(t for t in event_types if t),
            frozenset(agents),
            entity_id or None,
        )

    def matches(self, event: StoredEvent) -> bool:
        env = event.envelope
        return (
            (not self.entity_types or env.entity_type in self.entity_types)
            and (not self.event_types or env.event_type in self.event_types)
            and (not self.agents or env.source_agent_id in self.agents)
            and (self.entity_id is None or env.entity_id == self.entity_id)
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new for a heartbeat interval: the stream position so far (``position``, the
    last sequence read, delivered or filtered out) and the server's time."""

    position: int
    at: datetime


class TooManySubscribers(Exception):
    """This process already serves ``STREAM_MAX_SUBSCRIBERS`` subscriptions."""


@dataclass(slots=True)
class _Watch:
    """A stream with subscribers in this process: the highest head heard and who waits."""

    head: int = 0
    waiters: set[asyncio.Event] = field(default_factory=set)

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class Subscription:
    """Events of one stream after ``position``, then live ones as they are committed, and
    a :class:`Heartbeat` whenever ``heartbeat_s`` passes with nothing to send. Iterate it;
    close it (or leave the ``async with``) when done."""

    def __init__(
        self,
        hub: LiveEvents,
        stream: StreamKey,
        position: int,
        wanted: EventFilter,
        heartbeat_s: float | None,
    ) -> None:
        self._hub = hub
        self.stream = stream
        self.position = position
        self._filter = wanted
        self._heartbeat_s = heartbeat_s
        self._wake = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._leave(self.stream, self._wake)

    def __aiter__(self) -> AsyncIterator[StoredEvent | Heartbeat]:
        return self._items()

    async def _items(self) -> AsyncIterator[StoredEvent | Heartbeat]:
        hub = self._hub
        try:
            while not self._closed:
                # Cleared before reading: a notice that lands during the read sets it again.
                self._wake.clear()
                page = await hub._read_after(self.stream, self.position)
                if page:
                    for event in page:
                        self.position = event.sequence_number
                        if self._filter.matches(event):
                            yield event
                    continue
                if hub._heard_beyond(self.stream, self.position):
                    await asyncio.sleep(REPLICA_RETRY_S)
                    continue
                if await self._sleep():
                    continue
                if self._heartbeat_s is not None:
                    yield Heartbeat(self.position, datetime.now(UTC))
        finally:
            self.close()

    async def _sleep(self) -> bool:
        """Wait for a notice, a recheck or a heartbeat; True if the head may have moved."""
        hub = self._hub
        recheck = hub.recheck_interval()
        wait = recheck if self._heartbeat_s is None else min(recheck, self._heartbeat_s)
        deadline = asyncio.get_running_loop().time() + (
            self._heartbeat_s if self._heartbeat_s is not None else float("inf")
        )
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
                return True
            except TimeoutError:
                pass
            if await hub._recheck(self.stream, self.position):
                return True
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            wait = min(recheck, remaining)


class LiveEvents:
    """The process's subscriptions, woken by the store's :class:`HeadFeed`."""

    def __init__(
        self,
        events: EventLog,
        feed: HeadFeed,
        *,
        page_events: int = DEFAULT_PAGE_EVENTS,
        page_bytes: int = DEFAULT_PAGE_BYTES,
        recheck_s: float = DEFAULT_RECHECK_S,
        recheck_disconnected_s: float = DEFAULT_RECHECK_DISCONNECTED_S,
        max_subscribers: int = 1000,
    ) -> None:
        self._events = events
        self._feed = feed
        self._page_events = page_events
        self._page_bytes = page_bytes
        self._recheck_s = recheck_s
        self._recheck_disconnected_s = recheck_disconnected_s
        self._max_subscribers = max_subscribers
        self._watches: dict[StreamKey, _Watch] = {}
        self._listener: ChangeListener | None = None

    @property
    def connected(self) -> bool:
        return self._listener is not None and self._listener.connected

    @property
    def subscribers(self) -> int:
        return sum(len(w.waiters) for w in self._watches.values())

    async def start(self) -> None:
        self._listener = await self._feed.listen_heads(self._heard)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        for watch in self._watches.values():
            watch.wake()

    def recheck_interval(self) -> float:
        return self._recheck_s if self.connected else self._recheck_disconnected_s

    def _heard(self, notice: HeadNotice) -> None:
        if notice.stream is None:
            for every in self._watches.values():
                every.wake()
            return
        watch = self._watches.get(notice.stream)
        if watch is not None and notice.head > watch.head:
            watch.head = notice.head
            watch.wake()

    async def subscribe(
        self,
        stream: StreamKey,
        *,
        after: int | None,
        wanted: EventFilter | None = None,
        heartbeat_s: float | None = None,
    ) -> Subscription:
        """Events after sequence ``after`` (None: after the head now, live only)."""
        if self.subscribers >= self._max_subscribers:
            raise TooManySubscribers(
                f"this server already serves {self._max_subscribers} live subscriptions"
            )
        position = await self._events.head(stream) if after is None else max(0, after)
        sub = Subscription(self, stream, position, wanted or EventFilter(), heartbeat_s)
        self._watches.setdefault(stream, _Watch()).waiters.add(sub._wake)
        return sub

    def _leave(self, stream: StreamKey, waiter: asyncio.Event) -> None:
        watch = self._watches.get(stream)
        if watch is not None:
            watch.waiters.discard(waiter)
            if not watch.waiters:
                del self._watches[stream]

    async def _read_after(self, stream: StreamKey, position: int) -> list[StoredEvent]:
        watch = self._watches.get(stream)
        if watch is not None and watch.head and position >= watch.head:
            # Caught up with everything heard: skip the query until a notice or recheck.
            return []
        page = await self._events.read_page(
            stream, position + 1, position + self._page_events, self._page_bytes
        )
        return page.events

    def _heard_beyond(self, stream: StreamKey, position: int) -> bool:
        watch = self._watches.get(stream)
        return watch is not None and watch.head > position

    async def _recheck(self, stream: StreamKey, position: int) -> bool:
        head = await self._events.head(stream)
        watch = self._watches.get(stream)
        if watch is not None and head > watch.head:
            watch.head = head
        return head > position
