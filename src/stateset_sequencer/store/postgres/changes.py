"""The :class:`ChangeFeed` and :class:`HeadFeed` ports on PostgreSQL: ``LISTEN``/``NOTIFY``,
one channel each.

Writers call :func:`notify` inside the transaction that makes the change, so PostgreSQL
delivers it when (and only if) that transaction commits, to every session listening on
the database, whichever process or node it belongs to.

A listener holds one connection of its own, outside the pools: ``LISTEN`` belongs to a
session, and a pooled connection is reset when it goes back. When that connection drops
(a server restart, ``pg_terminate_backend``, a network fault the periodic ping finds),
it reconnects with backoff; meanwhile the caches' TTLs bound staleness, and every
(re)connection starts with ``Change(ChangeKind.ALL)`` because changes committed while
nobody listened are not replayed. A transaction-pooling proxy (PgBouncer in
``transaction`` mode) cannot carry ``LISTEN``: the listener needs a session connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from ..ports import ChangeFeed, ChangeListener, HeadFeed
from ..records import Change, ChangeKind, HeadNotice, StreamKey
from .errors import describe, mapped
from .pool import Pools

if TYPE_CHECKING:
    from .pool import Conn

log = structlog.get_logger("stateset_sequencer.changes")

CHANNEL = "sequencer_changes"
HEADS_CHANNEL = "sequencer_heads"
# How an operator finds the listeners in pg_stat_activity (docs/RUNBOOK.md).
APPLICATION_NAME = "sequencer-change-feed"
HEADS_APPLICATION_NAME = "sequencer-head-feed"
# One round trip for many streams: a notification per stream, one transaction. NOTIFY
# gives the transaction an id, so its commit would wait for a WAL flush like a write's;
# a notice lost in a crash costs only latency (subscribers recheck), so it does not wait.
# The payloads are ours (UUIDs and a number), checked against _HEAD_PAYLOAD before they
# are spliced into this simple-protocol text.
_NOTIFY_HEADS_SQL = (
    "BEGIN; SET LOCAL synchronous_commit TO off; "  # noqa: S608 - checked payloads, see above
    f"SELECT pg_notify('{HEADS_CHANNEL}', x) FROM unnest(ARRAY[{{payloads}}]::text[]) AS x; "
    "COMMIT"
)
_HEAD_PAYLOAD = re.compile(r"[0-9a-f-]{36}/[0-9a-f-]{36}/[0-9]{1,19}")
_NOTIFY_SQL = "SELECT pg_notify($1, $2)"
# PostgreSQL refuses payloads of 8000 bytes or more; a bigger one loses its detail fields,
# which only widens what listeners drop.
_MAX_PAYLOAD_BYTES = 7900

CONNECT_TIMEOUT_S = 10.0
# How often an idle listener proves its connection alive: a half-open TCP connection
# reports nothing, and until the ping fails no reconnect (and no flush) happens.
PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
CLOSE_TIMEOUT_S = 2.0

# Short names keep a payload well under the limit whatever the event type.
_FIELDS = {
    "t": "tenant_id",
    "a": "agent_id",
    "i": "key_id",
    "h": "key_hash_prefix",
    "e": "event_type",
}


def encode(change: Change) -> str:
    body: dict[str, Any] = {"k": change.kind.value}
    for short, name in _FIELDS.items():
        value = getattr(change, name)
        if value is not None:
            body[short] = str(value) if isinstance(value, uuid.UUID) else value
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > _MAX_PAYLOAD_BYTES:
        return encode(Change(change.kind, tenant_id=change.tenant_id))
    return text


def decode(payload: str) -> Change:
    """A payload this version cannot read (another version wrote it, or a person) reads
    as "everything changed": dropping too much costs a reload, too little a stale key."""
    try:
        body = json.loads(payload)
        kind = ChangeKind(body["k"])
        tenant = body.get("t")
        agent = body.get("a")
        key_id = body.get("i")
        prefix = body.get("h")
        event_type = body.get("e")
        if (
            (key_id is not None and type(key_id) is not int)
            or (prefix is not None and not isinstance(prefix, str))
            or (event_type is not None and not isinstance(event_type, str))
        ):
            raise ValueError("field of the wrong type")
        return Change(
            kind,
            tenant_id=None if tenant is None else uuid.UUID(tenant),
            agent_id=None if agent is None else uuid.UUID(agent),
            key_id=key_id,
            key_hash_prefix=prefix,
            event_type=event_type,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return Change(ChangeKind.ALL)


async def notify(conn: Conn, change: Change) -> None:
    """Publish ``change`` from inside the writer's transaction (sent at its commit)."""
    await conn.execute(_NOTIFY_SQL, CHANNEL, encode(change))


_CONNECTION_FAULTS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def encode_head(stream: StreamKey, head: int) -> str:
    return f"{stream.tenant_id}/{stream.store_id}/{head}"


def decode_head(payload: str) -> HeadNotice:
    """A payload this version cannot read tells every listener to look: reading a head
    back costs a query, missing one costs a stalled subscriber."""
    try:
        tenant, store, head = payload.split("/")
        value = int(head)
        if value < 0:
            raise ValueError("negative head")
        return HeadNotice(StreamKey(uuid.UUID(tenant), uuid.UUID(store)), value)
    except (ValueError, TypeError):
        return HeadNotice(None)


class _Listener(ChangeListener):
    """A session connection that LISTENs on one channel, reconnecting with backoff, and
    tells ``on_connect`` after every (re)connection, once LISTEN is in place."""

    def __init__(
        self,
        dsn: str,
        on_payload: Callable[[str], None],
        on_connect: Callable[[], None],
        *,
        channel: str = CHANNEL,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        self._dsn = dsn
        self._on_payload = on_payload
        self._on_connect = on_connect
        self._channel = channel
        self._application_name = application_name
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._up = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._application_name)
        # Start-up waits for the first connection, bounded: a service that cannot listen
        # still serves, on its TTLs, and keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), CONNECT_TIMEOUT_S)

    def _deliver(self, call: Callable[[], None]) -> None:
        if self._closed:
            return
        try:
            call()
        except Exception:  # one listener's fault must not stop the feed
            log.exception("change listener failed", channel=self._channel)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        self._deliver(lambda: self._on_payload(text))

    async def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._closed:
            conn = await self._connect()
            if conn is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_FIRST_S
            self._conn = conn
            self._up.set()
            # Listening already: a change committed from here on is delivered after this.
            self._deliver(self._on_connect)
            await self._watch(conn)
            self._conn = None
            self._up.clear()
            await _discard(conn)
            if not self._closed:
                log.warning("notification connection lost; reconnecting", channel=self._channel)
                await asyncio.sleep(delay)

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record] | None:
        conn: asyncpg.Connection[asyncpg.Record] | None = None
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={"application_name": self._application_name},
            )
            await conn.add_listener(self._channel, self._on_notify)
        except _CONNECTION_FAULTS as exc:
            log.warning("cannot listen", channel=self._channel, error=describe(exc))
            if conn is not None:
                await _discard(conn)
            return None
        return conn

    async def _watch(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """Return once ``conn`` is gone: closed by the server, or silent to a ping."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        while not self._closed and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), PING_INTERVAL_S)
                return
            try:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
            except _CONNECTION_FAULTS:
                return

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await _discard(conn)


async def _discard(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
    except (*_CONNECTION_FAULTS, asyncio.CancelledError):
        conn.terminate()


class PostgresChangeFeed(ChangeFeed):
    _dsn: str  # the primary's, set by the store

    async def listen(self, callback: Callable[[Change], None]) -> ChangeListener:
        listener = _Listener(
            self._dsn,
            lambda payload: callback(decode(payload)),
            lambda: callback(Change(ChangeKind.ALL)),
        )
        await listener.start()
        return listener


class PostgresHeadFeed(Pools, HeadFeed):
    _dsn: str  # the primary's, set by the store

    async def announce_heads(self, heads: Mapping[StreamKey, int]) -> None:
        if not heads:
            return
        payloads = [encode_head(stream, head) for stream, head in heads.items()]
        if not all(_HEAD_PAYLOAD.fullmatch(p) for p in payloads):
            raise ValueError("a head notice must be two UUIDs and a sequence number")
        text = _NOTIFY_HEADS_SQL.format(payloads=",".join(f"'{p}'" for p in payloads))
        with mapped():
            # On its own pooled connection: outside every append transaction.
            await self._pool.execute(text)

    async def listen_heads(self, callback: Callable[[HeadNotice], None]) -> ChangeListener:
        listener = _Listener(
            self._dsn,
            lambda payload: callback(decode_head(payload)),
            lambda: callback(HeadNotice(None)),
            channel=HEADS_CHANNEL,
            application_name=HEADS_APPLICATION_NAME,
        )
        await listener.start()
        return listener
