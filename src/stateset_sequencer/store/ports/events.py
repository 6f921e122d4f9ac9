"""The event log and its per-stream append transaction."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from ...ves.signing import Receipt
from ..records import (
    EventPage,
    Existing,
    NewEvent,
    StoredEvent,
    StreamKey,
)


class StreamTransaction(ABC):
    """One stream's append transaction. The counter row is locked for its whole life, so
    every writer of the stream, in this process or another, waits its turn."""

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
        entity_versions: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        """Insert events, receipts and command reservations, set entity versions and the
        counter. Raises :class:`ConcurrentWriteError` if an event id was taken meanwhile;
        the transaction is then as it was before the call."""


class EventLog(ABC):
    """The sequenced events of every stream, their receipts, and entity versions."""

    @abstractmethod
    def stream_transaction(
        self, stream: StreamKey
    ) -> AbstractAsyncContextManager[StreamTransaction]:
        """Open a transaction with the stream's counter row locked. It commits when the
        block exits normally and rolls back on any exception. Opening a second one for
        the same stream from the task that holds the first is refused with
        :class:`StoreError` rather than left to deadlock."""

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
