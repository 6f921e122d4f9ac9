"""The :class:`ChangeFeed` and :class:`HeadFeed` ports on SQLite: in-process.

One process serves a SQLite database, so it already knows every change it made; the feed
still delivers them, to every listener in this process on the same file, through the
same callback and event-loop hop as on PostgreSQL, so that one code path (and one
contract suite) covers both backends. A second process on the same file is not told:
the caches' TTLs bound what it sees, as they do for hand-written SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from ..ports import ChangeFeed, ChangeListener, HeadFeed
from ..records import Change, ChangeKind, HeadNotice, StreamKey

log = structlog.get_logger("stateset_sequencer.changes")

T = TypeVar("T")

# Listeners by database file, for every store of this process (two stores opened on one
# file hear each other, as two nodes on one PostgreSQL database do); one registry for
# changes, one for heads.
_LISTENERS: dict[Path, set[_Listener[Change]]] = {}
_HEAD_LISTENERS: dict[Path, set[_Listener[HeadNotice]]] = {}


def _file_key(path: Path) -> Path:
    return path.resolve()


class _Listener(ChangeListener, Generic[T]):
    def __init__(
        self,
        key: Path,
        callback: Callable[[T], None],
        loop: asyncio.AbstractEventLoop,
        registry: dict[Path, set[_Listener[T]]],
    ) -> None:
        self._key = key
        self._callback = callback
        self._loop = loop
        self._registry = registry
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed

    def deliver(self, change: T) -> None:
        if self._closed:
            return
        try:
            # Writes finish on the writer thread's future but their caller may be on
            # another loop (tests); the hop keeps the callback on the listener's loop.
            self._loop.call_soon_threadsafe(self._run, change)
        except RuntimeError:  # the listener's loop is closed: nobody is left to tell
            self._closed = True

    def _run(self, change: T) -> None:
        if self._closed:
            return
        try:
            self._callback(change)
        except Exception:  # a listener's fault must not reach the writer
            log.exception("change listener failed", item=repr(change)[:200])

    async def close(self) -> None:
        self._closed = True
        listeners = self._registry.get(self._key)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del self._registry[self._key]


def _register(
    path: Path, callback: Callable[[Any], None], registry: dict[Path, set[_Listener[Any]]]
) -> _Listener[Any]:
    key = _file_key(path)
    listener: _Listener[Any] = _Listener(key, callback, asyncio.get_running_loop(), registry)
    registry.setdefault(key, set()).add(listener)
    return listener


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
        listener = _register(self._changes_path, callback, _LISTENERS)
        # The port's promise on (re)connecting; here it costs nothing.
        listener.deliver(Change(ChangeKind.ALL))
        return listener


class SqliteHeadFeed(SqlitePublisher, HeadFeed):
    """Heads told to this process's listeners on the same file. A second process writing
    the file (a CLI command) is heard only when the listeners read heads back."""

    async def announce_heads(self, heads: Mapping[StreamKey, int]) -> None:
        listeners = list(_HEAD_LISTENERS.get(_file_key(self._changes_path), ()))
        for stream, head in heads.items():
            for listener in listeners:
                listener.deliver(HeadNotice(stream, head))

    async def listen_heads(self, callback: Callable[[HeadNotice], None]) -> ChangeListener:
        listener = _register(self._changes_path, callback, _HEAD_LISTENERS)
        listener.deliver(HeadNotice(None))
        return listener
