"""``PostgresStore``: the storage contract on asyncpg connection pools.

Payload columns are JSON (not JSONB) and travel as text both ways, so the stored text is
the text the client sent; no codec is registered that would reinterpret a column.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from ...ves.jsontext import dump_json
from ...ves.signing import Receipt
from ..base import (
    AgentKey,
    ApiKeyRecord,
    AuditEntry,
    Capabilities,
    CommitmentRow,
    CounterState,
    Existing,
    MigrationStatus,
    OperationalError,
    PoolStats,
    SchemaRecord,
    SequenceGap,
    Store,
    StoredEvent,
    StoreError,
    StreamKey,
    StreamSummary,
    StreamTransaction,
)
from ..rows import RECEIPT_COLUMNS
from . import convert, maintenance, migrate, schemas
from .errors import describe, mapped
from .transaction import (
    CREATE_COUNTER_SQL,
    LOCK_COUNTER_SQL,
    PgStreamTransaction,
    fetch_existing,
)

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Pool = asyncpg.Pool[asyncpg.Record]

CONNECT_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0

# These statements are assembled only from the fixed column lists here and in ``convert``,
# never from input; every value travels as a bind parameter.
_EVENTS_FROM = f"SELECT {convert.EVENT_SELECT} FROM ves_events e"  # noqa: S608
_STREAM_WHERE = "e.tenant_id = $1 AND e.store_id = $2"
_ENTITY_WHERE = f"{_STREAM_WHERE} AND e.entity_type = $3 AND e.entity_id = $4"
_READ_RANGE_SQL = (
    f"{_EVENTS_FROM} WHERE {_STREAM_WHERE} "
    "AND e.sequence_number BETWEEN $3 AND $4 ORDER BY e.sequence_number"
)
_PAGE_SQL = f"{_READ_RANGE_SQL} LIMIT $5"
_GET_EVENT_SQL = f"{_EVENTS_FROM} WHERE e.event_id = $1"
_ENTITY_COUNT_SQL = f"SELECT count(*) FROM ves_events e WHERE {_ENTITY_WHERE}"  # noqa: S608
_ENTITY_PAGE_SQL = (
    f"{_EVENTS_FROM} WHERE {_ENTITY_WHERE} ORDER BY e.sequence_number OFFSET $5 LIMIT $6"
)
_RECEIPT_SQL = (
    f"SELECT {', '.join(RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM ves_sequencer_receipts WHERE event_id = $1"
)
_HEAD_SQL = "SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2"
_AGENT_KEY_COLUMNS = (
    "tenant_id, agent_id, key_id, public_key, status, valid_from, valid_to, "
    "revoked_at, key_algorithm, created_at"
)
_AGENT_KEY_SQL = f"SELECT {_AGENT_KEY_COLUMNS} FROM agent_signing_keys"  # noqa: S608
_PUT_AGENT_KEY_SQL = (
    f"INSERT INTO agent_signing_keys ({_AGENT_KEY_COLUMNS}) "  # noqa: S608
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, NOW())) "
    f"RETURNING {_AGENT_KEY_COLUMNS}"
)
_REVOKE_AGENT_KEY_SQL = (
    "UPDATE agent_signing_keys "  # noqa: S608
    "SET status = 'revoked', revoked_at = COALESCE(revoked_at, $4) "
    "WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3 "
    f"RETURNING {_AGENT_KEY_COLUMNS}"
)
_COMMITMENT_COLUMNS = (
    "batch_id, tenant_id, store_id, ves_version, tree_depth, leaf_count, padded_leaf_count, "
    "merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end, "
    "committed_at, chain_id, chain_tx_hash, chain_block_number, anchored_at"
)
_PUT_COMMITMENT_SQL = (
    f"INSERT INTO ves_commitments ({_COMMITMENT_COLUMNS}) VALUES "  # noqa: S608
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
)
_COMMITMENTS_FROM = f"SELECT {_COMMITMENT_COLUMNS} FROM ves_commitments"  # noqa: S608
_API_KEY_COLUMNS = (
    "key_hash, tenant_id, store_ids, can_read, can_write, can_admin, agent_id, active, "
    "rate_limit, created_at"
)
# "Replace" keeps nothing of the old row, as an INSERT OR REPLACE would.
_PUT_API_KEY_SQL = (
    f"INSERT INTO api_keys ({_API_KEY_COLUMNS}, updated_at) "  # noqa: S608
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, NOW()), NOW()) "
    "ON CONFLICT (key_hash) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, "
    "store_ids = EXCLUDED.store_ids, can_read = EXCLUDED.can_read, "
    "can_write = EXCLUDED.can_write, can_admin = EXCLUDED.can_admin, "
    "agent_id = EXCLUDED.agent_id, active = EXCLUDED.active, "
    "rate_limit = EXCLUDED.rate_limit, created_at = EXCLUDED.created_at, "
    f"updated_at = NOW() RETURNING {_API_KEY_COLUMNS}"
)
_API_KEYS_FROM = f"SELECT {_API_KEY_COLUMNS} FROM api_keys"  # noqa: S608
_AUDIT_COLUMNS = (
    "id, timestamp, action, actor, actor_type, tenant_id, resource_type, resource_id, "
    "request_id, ip_address, user_agent, details, success, error_message"
)
_APPEND_AUDIT_SQL = (
    f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES "  # noqa: S608
    "($1, COALESCE($2, NOW()), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14)"
)
_LIST_AUDIT_SQL = (
    f"SELECT {_AUDIT_COLUMNS} FROM audit_log "  # noqa: S608
    # ctid breaks ties between entries with the same timestamp: the audit log is never
    # updated or deleted from, so a later row sits at a higher ctid (later insert first).
    "WHERE $1::text IS NULL OR action = $1 ORDER BY timestamp DESC, ctid DESC LIMIT $2"
)


class PostgresStore(Store):
    """Writes and key reads go to the primary pool; event-log reads go to the read pool
    (``read_dsn``, e.g. a replica) when one is configured. Key and API-key reads stay on
    the primary because a lagging replica would still accept a just-revoked key."""

    dialect = "postgres"
    capabilities = Capabilities(name="postgresql", text_holds_nul=False, embedded=False)

    def __init__(self, pool: Pool, reader: Pool | None = None) -> None:
        self._pool = pool
        self._reader = reader if reader is not None else pool
        self._held: set[tuple[asyncio.Task[Any] | None, StreamKey]] = set()

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        max_connections: int = 10,
        statement_timeout_ms: int | None = None,
        read_dsn: str | None = None,
    ) -> PostgresStore:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        settings: dict[str, str] = {}
        if statement_timeout_ms is not None:
            settings["statement_timeout"] = str(int(statement_timeout_ms))
        pool = await _create_pool(dsn, max_connections, settings)
        reader: Pool | None = None
        if read_dsn is not None:
            try:
                # Read-only sessions make a misrouted write fail loudly instead of landing
                # on whatever the read DSN points at.
                reader = await _create_pool(
                    read_dsn, max_connections, {**settings, "default_transaction_read_only": "on"}
                )
            except BaseException:
                await _close_pool(pool)
                raise
        return cls(pool, reader)

    # --- lifecycle and migrations ----------------------------------------------------------------

    async def migrate(self) -> list[int]:
        with mapped():
            async with self._pool.acquire() as conn:
                done = await migrate.migrate(conn)
        if done:
            await self._forget_statements()
        return done

    async def rollback(self, to_version: int) -> list[int]:
        with mapped():
            async with self._pool.acquire() as conn:
                done = await migrate.rollback(conn, to_version)
        if done:
            await self._forget_statements()
        return done

    async def migration_status(self) -> list[MigrationStatus]:
        with mapped():
            async with self._pool.acquire() as conn:
                return await migrate.migration_status(conn)

    async def _forget_statements(self) -> None:
        # Other pooled connections cache prepared statements planned against tables that a
        # migration may have dropped and recreated; replacing them avoids stale plans.
        with mapped():
            await self._pool.expire_connections()
            if self._reader is not self._pool:
                await self._reader.expire_connections()

    def pool_stats(self) -> PoolStats:
        total = self._pool.get_size()
        idle = self._pool.get_idle_size()
        return PoolStats(
            active=total - idle, idle=idle, total=total, maximum=self._pool.get_max_size()
        )

    async def ping(self) -> float:
        started = time.perf_counter()
        with mapped():
            async with self._pool.acquire(timeout=PING_TIMEOUT_S) as conn:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
        return time.perf_counter() - started

    async def close(self) -> None:
        if self._reader is not self._pool:
            await _close_pool(self._reader)
        await _close_pool(self._pool)

    # --- the event log ---------------------------------------------------------------------------

    @asynccontextmanager
    async def stream_transaction(self, stream: StreamKey) -> AsyncIterator[StreamTransaction]:
        # The same task opening the same stream again would wait for the row lock it
        # holds itself, forever; other tasks waiting their turn is the point of the lock.
        key = (asyncio.current_task(), stream)
        if key in self._held:
            raise StoreError(
                "this task already holds the stream's transaction; nesting another would deadlock"
            )
        self._held.add(key)
        try:
            # mapped() also covers the commit, where a deferred failure would surface.
            with mapped(appending=True):
                async with (
                    self._pool.acquire() as conn,
                    conn.transaction(isolation="read_committed"),
                ):
                    await conn.execute(CREATE_COUNTER_SQL, stream.tenant_id, stream.store_id)
                    head = await conn.fetchval(LOCK_COUNTER_SQL, stream.tenant_id, stream.store_id)
                    yield PgStreamTransaction(conn, stream, int(head))
        finally:
            self._held.discard(key)

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        with mapped():
            async with self._reader.acquire() as conn:
                return await fetch_existing(conn, event_ids)

    async def head(self, stream: StreamKey) -> int:
        with mapped():
            value = await self._reader.fetchval(_HEAD_SQL, stream.tenant_id, stream.store_id)
        return int(value) if value is not None else 0

    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        if end < start:
            return []
        with mapped():
            rows = await self._reader.fetch(
                _READ_RANGE_SQL,
                stream.tenant_id,
                stream.store_id,
                start,
                end,
            )
        return [convert.stored_event(row) for row in rows]

    async def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # Fixing the end at the head seen now keeps the walk finite under steady appends;
        # every event up to that head is committed, as the counter moves in the same commit.
        last = end if end is not None else await self.head(stream)
        cursor = max(start, 1)
        while cursor <= last:
            # One short query per page and no connection held between pages, so a slow
            # consumer costs neither memory nor a pooled connection.
            with mapped():
                rows = await self._reader.fetch(
                    _PAGE_SQL,
                    stream.tenant_id,
                    stream.store_id,
                    cursor,
                    last,
                    batch_size,
                )
            for row in rows:
                yield convert.stored_event(row)
            if len(rows) < batch_size:
                return
            cursor = rows[-1]["sequence_number"] + 1

    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        with mapped():
            row = await self._reader.fetchrow(_GET_EVENT_SQL, event_id)
        return convert.stored_event(row) if row is not None else None

    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None:
        with mapped():
            row = await self._reader.fetchrow(_RECEIPT_SQL, event_id)
        return convert.receipt(row) if row is not None else None

    async def read_entity(
        self, stream: StreamKey, entity_type: str, entity_id: str, offset: int, limit: int
    ) -> tuple[list[StoredEvent], int]:
        args = (stream.tenant_id, stream.store_id, entity_type, entity_id)
        with mapped():
            async with self._reader.acquire() as conn:
                # One snapshot for the page and the count, so the total matches the page.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    total = await conn.fetchval(_ENTITY_COUNT_SQL, *args)
                    rows = await conn.fetch(
                        _ENTITY_PAGE_SQL,
                        *args,
                        max(offset, 0),
                        max(limit, 0),
                    )
        return [convert.stored_event(row) for row in rows], int(total)

    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int:
        with mapped():
            value = await self._reader.fetchval(
                "SELECT version FROM entity_versions WHERE tenant_id = $1 AND store_id = $2 "
                "AND entity_type = $3 AND entity_id = $4",
                stream.tenant_id,
                stream.store_id,
                entity_type,
                entity_id,
            )
        return int(value) if value is not None else 0

    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        with mapped():
            rows = await self._reader.fetch(
                "SELECT tenant_id, store_id, current_sequence FROM sequence_counters "
                "ORDER BY tenant_id, store_id"
            )
        return [
            (StreamKey(row["tenant_id"], row["store_id"]), row["current_sequence"]) for row in rows
        ]

    # --- recovery and maintenance ----------------------------------------------------------------

    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        return maintenance.paged(self._reader, stream, start, end, batch_size)

    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        with mapped():
            return await maintenance.counter_states(self._reader, stream)

    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        with mapped():
            return await maintenance.sequence_gaps(self._reader, stream)

    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        with mapped():
            async with self._pool.acquire() as conn:
                return await maintenance.set_counter_to_max(conn, stream, expected, audit)

    async def stream_summaries(self) -> list[StreamSummary]:
        with mapped():
            async with (
                self._reader.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await maintenance.stream_summaries(conn)

    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        with mapped():
            async with (
                self._reader.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await maintenance.row_counts(conn, tables)

    async def is_empty(self) -> bool:
        with mapped():
            return await maintenance.is_empty(self._pool)

    # --- agent signing keys ----------------------------------------------------------------------

    async def put_agent_key(self, key: AgentKey) -> AgentKey:
        with mapped():
            row = await self._pool.fetchrow(
                _PUT_AGENT_KEY_SQL,
                key.tenant_id,
                key.agent_id,
                key.key_id,
                key.public_key,
                key.status,
                key.valid_from,
                key.valid_to,
                key.revoked_at,
                key.key_algorithm,
                key.created_at,
            )
        return convert.agent_key(_one(row))

    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None:
        with mapped():
            row = await self._pool.fetchrow(
                f"{_AGENT_KEY_SQL} WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3",
                tenant_id,
                agent_id,
                key_id,
            )
        return convert.agent_key(row) if row is not None else None

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        with mapped():
            rows = await self._pool.fetch(
                f"{_AGENT_KEY_SQL} WHERE tenant_id = $1 "
                "AND ($2::uuid IS NULL OR agent_id = $2) ORDER BY agent_id, key_id",
                tenant_id,
                agent_id,
            )
        return [convert.agent_key(row) for row in rows]

    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int, at: datetime
    ) -> AgentKey | None:
        with mapped():
            row = await self._pool.fetchrow(
                _REVOKE_AGENT_KEY_SQL,
                tenant_id,
                agent_id,
                key_id,
                at,
            )
        return convert.agent_key(row) if row is not None else None

    # --- commitments (rows only) -----------------------------------------------------------------

    async def put_commitment(self, row: CommitmentRow) -> None:
        with mapped():
            await self._pool.execute(
                _PUT_COMMITMENT_SQL,
                row.batch_id,
                row.tenant_id,
                row.store_id,
                row.ves_version,
                row.tree_depth,
                row.leaf_count,
                row.padded_leaf_count,
                row.merkle_root,
                row.prev_state_root,
                row.new_state_root,
                row.sequence_start,
                row.sequence_end,
                row.committed_at,
                row.chain_id,
                row.chain_tx_hash,
                row.chain_block_number,
                row.anchored_at,
            )

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        with mapped():
            row = await self._reader.fetchrow(
                f"{_COMMITMENTS_FROM} WHERE batch_id = $1",
                batch_id,
            )
        return convert.commitment(row) if row is not None else None

    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        with mapped():
            rows = await self._reader.fetch(
                f"{_COMMITMENTS_FROM} WHERE tenant_id = $1 AND store_id = $2 "
                "ORDER BY sequence_start",
                stream.tenant_id,
                stream.store_id,
            )
        return [convert.commitment(row) for row in rows]

    # --- API keys and audit ----------------------------------------------------------------------

    async def put_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        with mapped():
            row = await self._pool.fetchrow(
                _PUT_API_KEY_SQL,
                record.key_hash,
                record.tenant_id,
                list(record.store_ids),
                record.can_read,
                record.can_write,
                record.can_admin,
                record.agent_id,
                record.active,
                record.rate_limit,
                record.created_at,
            )
        return convert.api_key(_one(row))

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        with mapped():
            row = await self._pool.fetchrow(f"{_API_KEYS_FROM} WHERE key_hash = $1", key_hash)
        return convert.api_key(row) if row is not None else None

    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        with mapped():
            rows = await self._pool.fetch(
                f"{_API_KEYS_FROM} WHERE $1::uuid IS NULL OR tenant_id = $1 "
                "ORDER BY created_at, key_hash",
                tenant_id,
            )
        return [convert.api_key(row) for row in rows]

    async def deactivate_api_keys(self, key_hash_prefix: str) -> int:
        # An empty prefix would match every key: refused rather than read as "all".
        if not key_hash_prefix:
            raise ValueError("key hash prefix must not be empty")
        with mapped():
            # A literal prefix comparison, not LIKE: '_' and '%' are not wildcards here.
            status = await self._pool.execute(
                "UPDATE api_keys SET active = FALSE, updated_at = NOW() "
                "WHERE active AND left(key_hash, length($1)) = $1",
                key_hash_prefix,
            )
        return _affected(status)

    async def append_audit(self, entry: AuditEntry) -> None:
        with mapped():
            await self._pool.execute(
                _APPEND_AUDIT_SQL,
                entry.id,
                entry.timestamp,
                entry.action,
                entry.actor,
                entry.actor_type,
                entry.tenant_id,
                entry.resource_type,
                entry.resource_id,
                entry.request_id,
                entry.ip_address,
                entry.user_agent,
                dump_json(dict(entry.details)),
                entry.success,
                entry.error_message,
            )

    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        with mapped():
            rows = await self._reader.fetch(
                _LIST_AUDIT_SQL,
                action,
                max(limit, 0),
            )
        return [convert.audit_entry(row) for row in rows]

    # --- schema registry -------------------------------------------------------------------------

    async def put_schema(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema_json: str,
        *,
        compatibility: str = "backward",
        description: str | None = None,
        created_by: str | None = None,
    ) -> SchemaRecord:
        with mapped():
            return await schemas.put_schema(
                self._pool,
                uuid.uuid4(),
                tenant_id,
                event_type,
                schema_json,
                compatibility,
                description,
                created_by,
                datetime.now(UTC),
            )

    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None:
        with mapped():
            return await schemas.get_schema(self._pool, schema_id)

    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        with mapped():
            return await schemas.list_schemas(self._pool, tenant_id, event_type)

    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None:
        with mapped():
            return await schemas.get_schema_version(self._pool, tenant_id, event_type, version)

    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        with mapped():
            return await schemas.latest_active_schema(self._pool, tenant_id, event_type)

    async def set_schema_status(self, schema_id: uuid.UUID, status: str) -> SchemaRecord | None:
        with mapped():
            return await schemas.set_schema_status(self._pool, schema_id, status, datetime.now(UTC))

    async def delete_schema(self, schema_id: uuid.UUID) -> bool:
        with mapped():
            return await schemas.delete_schema(self._pool, schema_id)

    # --- small persistent settings ---------------------------------------------------------------

    async def get_or_set_meta(self, key: str, value: str) -> str:
        with mapped():
            async with self._pool.acquire() as conn:
                # Two statements, not one: under READ COMMITTED the SELECT then sees a value
                # that a concurrent caller committed while our INSERT waited on it.
                await conn.execute(
                    "INSERT INTO sequencer_meta (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO NOTHING",
                    key,
                    value,
                )
                stored = await conn.fetchval("SELECT value FROM sequencer_meta WHERE key = $1", key)
        if stored is None:
            raise OperationalError(f"meta key {key!r} vanished while being read")
        return str(stored)


async def _create_pool(dsn: str, max_connections: int, settings: dict[str, str]) -> Pool:
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_connections,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=settings or None,
        )
    except (
        OSError,  # refused, unreachable, timed out
        ValueError,  # a malformed DSN, reported by asyncpg's parser
        asyncpg.PostgresError,  # e.g. no such database, authentication failed
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # e.g. no host matched target_session_attrs
    ) as exc:
        raise OperationalError(f"cannot connect to PostgreSQL: {describe(exc)}") from exc


async def _close_pool(pool: Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # A connection still checked out (or a dead server) must not hang shutdown.
        pool.terminate()


def _one(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:
        raise OperationalError("the database returned no row for an INSERT … RETURNING")
    return row


def _affected(status: str) -> int:
    """Row count from a command tag such as ``UPDATE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
