"""Projected documents, and the leader lock that lets one worker fold them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from ..records import (
    ProjectionDocument,
    ProjectionLag,
    StreamKey,
)


class Projections(ABC):
    """Documents folded from the log (``ves_projection_documents``) and how far each
    stream has been folded (``ves_projection_checkpoints``). Derived data: the rules of
    the fold live in ``sequencer/projections.py``; this port only keeps its results, and
    keeps each batch of documents and its checkpoint together. Reads and writes go to the
    primary: the worker must read back exactly what it wrote."""

    @abstractmethod
    async def projection_checkpoint(self, stream: StreamKey) -> int:
        """The last sequence number folded (0 when the stream was never projected)."""

    @abstractmethod
    async def get_projection(
        self, stream: StreamKey, entity_type: str, entity_id: str
    ) -> ProjectionDocument | None: ...

    @abstractmethod
    async def get_projections(
        self, stream: StreamKey, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProjectionDocument]:
        """The documents of those ``(entity_type, entity_id)`` that have one."""

    @abstractmethod
    async def apply_projection(
        self,
        stream: StreamKey,
        expected: int,
        checkpoint: int,
        documents: Sequence[ProjectionDocument],
        now: datetime,
    ) -> None:
        """In one transaction: check that the stream's checkpoint is still ``expected``,
        upsert ``documents`` (all of this stream) and set the checkpoint to
        ``checkpoint`` (its ``updated_at`` to ``now``). Refused with
        :class:`ConcurrentWriteError`, nothing written, when the checkpoint moved (another
        worker, or a rebuild, got there first); ``ValueError`` when ``checkpoint`` is
        below ``expected`` or a document belongs to another stream."""

    @abstractmethod
    async def lagging_projections(self, after: StreamKey | None, limit: int) -> list[ProjectionLag]:
        """Up to ``limit`` streams whose counter is above their checkpoint (a stream never
        projected counts from 0), ordered by tenant then store, starting after ``after``
        (from the first when None): the worker walks them page by page."""

    @abstractmethod
    async def clear_projections(self, stream: StreamKey | None = None) -> int:
        """Delete the documents and checkpoint of one stream (every stream when None), in
        one transaction, for a rebuild; returns how many documents went."""


class Leadership(ABC):
    """A held :class:`LeaderLock`: this process leads until :meth:`release` or until
    :meth:`lost` returns."""

    @abstractmethod
    async def lost(self) -> None:
        """Return once leadership is gone through no wish of ours (PostgreSQL: the session
        holding the lock ended); waits for ever while it is held."""

    @abstractmethod
    async def release(self) -> None:
        """Give leadership up; idempotent, and quick even when the database is gone."""


class LeaderLock(ABC):
    """At most one holder of a named lock across every process on this database: how a
    singleton worker (projections, later the commitment engine) is elected."""

    @abstractmethod
    async def try_lead(self, name: str, *, check_interval: float = 5.0) -> Leadership | None:
        """Take the lock ``name`` (``[a-z0-9-]``, 1-64 characters, else ``ValueError``)
        without waiting: a :class:`Leadership` when we now hold it, None when someone
        else does. ``check_interval`` is how often a held lock proves itself alive where
        the backend can lose it unnoticed (a half-open connection)."""
