"""The event log and its append transaction, over one stream or several."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ...ves.signing import Receipt
from ..records import (
    EventPage,
    Existing,
    NewEvent,
    StoredEvent,
    StreamKey,
)


class StreamTransaction(ABC):
    """One stream's part of an append transaction. The counter row is locked for the
    transaction's whole life, so every writer of the stream, in this process or another,
    waits its turn."""

    head: int
    """The stream's current sequence (0 for a new stream), read under the lock."""

    @abstractmethod
    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        """Stored events (any stream) among ``event_ids``, with their receipts."""

    @abstractmethod
    async def taken_commands(self, command_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """Command ids of this stream already reserved, mapped to the event that holds them."""

    @abstractmethod
    async def entity_versions(
        self, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """Versions of those ``(entity_type, entity_id)`` of this stream that have one
        (an entity with no row is left out; its version is 0)."""

    @abstractmethod
    async def write(
        self,
        events: Sequence[NewEvent],
        version_increments: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        """Insert events, receipts and command reservations, raise each entity's version
        by its increment (from 0 for an entity with none) and set the counter. Raising
        in the database spares a read of the versions when no event names a
        ``base_version``. Raises :class:`ConcurrentWriteError` if an event id was taken meanwhile;
        the transaction can then only be rolled back (leave its block with the error):
        a savepoint to survive that rare race would cost every write two round trips."""


class AppendTransaction(ABC):
    """One transaction over one or more streams, each with its counter row locked (in
    ``(tenant_id, store_id)`` order, so that two of them never wait on each other in a
    cycle). Where one commit is what costs (SQLite's single writer), merging the streams
    that are waiting into one transaction pays for one commit instead of one per stream."""

    streams: Mapping[StreamKey, StreamTransaction]
    """Each stream's part, keyed by stream."""

    @abstractmethod
    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        """Stored events (any stream) among ``event_ids``, with their receipts."""


def check_streams(streams: Sequence[StreamKey]) -> list[StreamKey]:
    """``streams`` in the order their counter rows are locked, ``(tenant_id, store_id)``
    (a UUID sorts by its bytes, as PostgreSQL's ``uuid`` does); at least one, each once."""
    ordered = sorted(streams, key=lambda s: (s.tenant_id, s.store_id))
    if not ordered:
        raise ValueError("an append transaction needs at least one stream")
    if len(set(ordered)) != len(ordered):
        raise ValueError("an append transaction names each stream once")
    return ordered


class EventLog(ABC):
    """The sequenced events of every stream, their receipts, and entity versions."""

    @abstractmethod
    def append_transaction(
        self, streams: Sequence[StreamKey]
    ) -> AbstractAsyncContextManager[AppendTransaction]:
        """Open a transaction with every one of ``streams``' counter rows locked (at
        least one stream, each named once). It commits when the block exits normally and
        rolls back on any exception. Opening a second one over a stream the same task
        holds is refused with :class:`StoreError` rather than left to deadlock."""

    @asynccontextmanager
    async def stream_transaction(self, stream: StreamKey) -> AsyncIterator[StreamTransaction]:
        """:meth:`append_transaction` over one stream, as that stream's part."""
        async with self.append_transaction([stream]) as tx:
            yield tx.streams[stream]

    @abstractmethod
    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        """Like :meth:`StreamTransaction.existing`, outside a transaction (for the cheap
        replay pre-check before any signature work)."""

    @abstractmethod
    async def head(self, stream: StreamKey) -> int:
        """The stream's counter (0 when the stream is unknown)."""

    @abstractmethod
    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        """Events with ``start <= sequence_number <= end``, in sequence order."""

    @abstractmethod
    async def read_page(self, stream: StreamKey, start: int, end: int, max_bytes: int) -> EventPage:
        """Events ``start..=end`` in sequence order, ending before the first event that
        would take the page past ``max_bytes`` (``store.paging``), but never empty while
        the range holds an event; ``truncated`` when it ended so."""

    @abstractmethod
    def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        """Stream events in sequence order with bounded memory (``end`` None: to the head
        as it was when iteration began)."""

    @abstractmethod
    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None: ...

    @abstractmethod
    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None: ...

    @abstractmethod
    async def read_entity(
        self,
        stream: StreamKey,
        entity_type: str,
        entity_id: str,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredEvent], int]:
        """An entity's events in sequence order, paged; also returns the total count,
        read from the same state as the page. With ``max_bytes`` the page also ends as
        :meth:`read_page` does (the next page starts at ``offset + len(events)``)."""

    @abstractmethod
    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int: ...

    @abstractmethod
    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        """Every stream with its counter value, ordered by tenant then store."""

    @abstractmethod
    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        """Events ``start..=end`` in sequence order, each with its stored receipt (None when
        there is none), with bounded memory. ``end`` is explicit because a verifier must
        also reach events stored above a counter that is too low."""
