"""Committed changes to cached rows, told to every process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..records import (
    Change,
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
