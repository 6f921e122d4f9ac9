"""Committed changes to cached rows, told to every process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

from ..records import (
    Change,
    HeadNotice,
    StreamKey,
)


class ChangeListener(ABC):
    """A running subscription of :meth:`ChangeFeed.listen`."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """False while changes made elsewhere cannot reach this listener (the caches'
        TTLs are then what bounds staleness)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering; idempotent."""


class ChangeFeed(ABC):
    """Committed changes to the rows processes cache (agent keys, API keys, schemas), told
    to every process on the database, so that a revocation through one node is refused
    by all at once rather than when each cache's TTL runs out.

    The adapters publish from their own mutations of those rows, in the transaction that
    makes the change, so every writer (the CLI included) is heard. A change made by hand
    in SQL is not: the TTLs stay as the fallback."""

    @abstractmethod
    async def listen(self, callback: Callable[[Change], None]) -> ChangeListener:
        """Call ``callback`` on the caller's event loop for each change committed from
        now on by any store on this database (this one included). Whenever the feed
        (re)connects it first delivers ``Change(ChangeKind.ALL)``, since changes may have
        gone unheard. The callback must be quick and must not raise."""


class HeadFeed(ABC):
    """Stream heads as they move, told to every process on the database: what wakes a
    live subscriber (``sequencer/live.py``) wherever the event was sequenced.

    A notice only says "read from the store": it carries no event, so a lost or late
    notice costs latency, never an event, and listeners also read heads back now and
    then. Announcing is separate from the append and happens after its commit: on
    PostgreSQL a NOTIFY inside the append transaction would serialise every committing
    writer on the notification queue's lock."""

    @abstractmethod
    async def announce_heads(self, heads: Mapping[StreamKey, int]) -> None:
        """Tell every listener on the database that each stream reached its head. One
        round trip for the whole mapping."""

    @abstractmethod
    async def listen_heads(self, callback: Callable[[HeadNotice], None]) -> ChangeListener:
        """Call ``callback`` on the caller's loop for each notice from now on (this
        process's announcements included). Every (re)connection first delivers
        ``HeadNotice(None)``. The callback must be quick and must not raise."""
