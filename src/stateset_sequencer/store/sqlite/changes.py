"""The :class:`ChangeFeed` port on SQLite: in-process.

One process serves a SQLite database, so it already knows every change it made; the feed
still delivers them, to every listener in this process on the same file, through the
same callback and event-loop hop as on PostgreSQL, so that one code path (and one
contract suite) covers both backends. A second process on the same file is not told:
the caches' TTLs bound what it sees, as they do for hand-written SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from ..ports import ChangeFeed, ChangeListener
from ..records import Change, ChangeKind

log = structlog.get_logger("stateset_sequencer.changes")

# Listeners by database file, for every store of this process (two stores opened on one
# file hear each other, as two nodes on one PostgreSQL database do).
_LISTENERS: dict[Path, set[_Listener]] = {}


def _file_key(path: Path) -> Path:
    return path.resolve()


class _Listener(ChangeListener):
    def __init__(
        self, key: Path, callback: Callable[[Change], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._key = key
        self._callback = callback
        self._loop = loop
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed

    def deliver(self, change: Change) -> None:
        if self._closed:
            return
        try:
            # Writes finish on the writer thread's future but their caller may be on
            # another loop (tests); the hop keeps the callback on the listener's loop.
            self._loop.call_soon_threadsafe(self._run, change)
        except RuntimeError:  # the listener's loop is closed: nobody is left to tell
            self._closed = True

    def _run(self, change: Change) -> None:
        if self._closed:
            return
        try:
            self._callback(change)
        except Exception:  # a listener's fault must not reach the writer
            log.exception("change listener failed", kind=change.kind.value)

    async def close(self) -> None:
        self._closed = True
        listeners = _LISTENERS.get(self._key)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del _LISTENERS[self._key]


def publish(path: Path, change: Change) -> None:
    """Tell every listener on ``path``'s database; called after the change committed."""
    for listener in list(_LISTENERS.get(_file_key(path), ())):
        listener.deliver(change)


class SqlitePublisher:
    """What the mutating ports call once their transaction has committed."""

    def __init__(self, path: Path) -> None:
        self._changes_path = path

    def _changed(self, change: Change) -> None:
        publish(self._changes_path, change)


class SqliteChangeFeed(SqlitePublisher, ChangeFeed):
    async def listen(self, callback: Callable[[Change], None]) -> ChangeListener:
        key = _file_key(self._changes_path)
        listener = _Listener(key, callback, asyncio.get_running_loop())
        _LISTENERS.setdefault(key, set()).add(listener)
        # The port's promise on (re)connecting; here it costs nothing.
        listener.deliver(Change(ChangeKind.ALL))
        return listener
