"""The append path on PostgreSQL: one connection, the stream's counter row locked for the
transaction's life, and the bulk reads and the one-statement write it offers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ..ports import AppendTransaction, StreamTransaction
from ..records import Existing, NewEvent, StreamKey
from ..rows import EVENT_SELECT, RECEIPT_SELECT
from . import convert
from .errors import mapped

Versions = Mapping[tuple[str, str], int]

# Which tenant owns each known id: ves_event_ids is the only table keyed by the event id
# alone. The events are then read from their tenant's rows, a query that names its tenant
# (on Citus it runs on that tenant's shard alone).
OWNERS_SQL = "SELECT event_id, tenant_id FROM ves_event_ids WHERE event_id = ANY($1::uuid[])"
# Lookups by a list of keys go through LATERAL subqueries with LIMIT 1, which PostgreSQL
# never flattens: the plan is one index probe per key whatever the statistics said when
# the statement was first prepared. (A plain join against the array was cached as a hash
# join over the whole table while the table was small, and stayed so as it grew: 185 ms a
# batch at 100k rows.)
EXISTING_SQL = (
    f"SELECT {EVENT_SELECT}, {RECEIPT_SELECT} "  # noqa: S608 - fixed names
    "FROM unnest($2::uuid[]) AS q(id) "
    "CROSS JOIN LATERAL "
    "(SELECT * FROM ves_events WHERE tenant_id = $1 AND event_id = q.id LIMIT 1) AS e "
    "LEFT JOIN LATERAL "
    "(SELECT * FROM ves_sequencer_receipts WHERE tenant_id = $1 AND event_id = q.id LIMIT 1) "
    "AS r ON TRUE"
)

# Taking the row locks on the counters is what serialises writers of a stream, in this
# process or any other. The common case, a stream that exists, takes one round trip; a
# new stream's row is inserted first. One tenant's streams per statement, so that on
# Citus each runs on that tenant's shard alone; rows are locked in store_id order.
LOCK_COUNTERS_SQL = (
    "SELECT store_id, current_sequence FROM sequence_counters "
    "WHERE tenant_id = $1 AND store_id = ANY($2::uuid[]) ORDER BY store_id FOR UPDATE"
)
CREATE_COUNTERS_SQL = (
    "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) "
    "SELECT $1, u.s, 0 FROM unnest($2::uuid[]) AS u(s) ORDER BY u.s ON CONFLICT DO NOTHING"
)

# One round trip per table whatever the batch size: every column travels as an array,
# but for the stream's own tenant_id and store_id ($1, $2), which every row shares.
_EVENT_ARRAYS = """
    $4::uuid[], $5::uuid[], $6::integer[], $7::uuid[], $8::bigint[],
    $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::text[], $14::timestamptz[],
    $15::integer[], $16::json[], $17::json[], $18::bytea[], $19::bytea[],
    $20::bytea[], $21::bytea[], $22::integer[], $23::json[],
    $24::bigint[], $25::numeric[]
"""
_INSERT_EVENTS_SQL = f"""
INSERT INTO ves_events (
    event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id,
    entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at,
    payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash,
    event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle,
    sequence_number, base_version
)
SELECT u.event_id, u.command_id, u.ves_version, $1, $2, u.source_agent_id, u.agent_key_id,
    u.entity_type, u.entity_id, u.event_type, u.created_at, u.created_at_str, u.sequenced_at,
    u.payload_kind, u.payload, u.payload_encrypted, u.plain_hash, u.cipher_hash,
    u.signing_hash, u.signature, u.scheme, u.bundle, u.seq, u.base_version
FROM unnest({_EVENT_ARRAYS}) AS u(
    event_id, command_id, ves_version, source_agent_id, agent_key_id,
    entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at,
    payload_kind, payload, payload_encrypted, plain_hash, cipher_hash,
    signing_hash, signature, scheme, bundle, seq, base_version
)
"""  # noqa: S608 - fixed text
# A receipt is sequenced when its event is: event id, number and time come from the
# event columns ($4, $24, $14).
_INSERT_RECEIPTS_SQL = """
INSERT INTO ves_sequencer_receipts (
    event_id, tenant_id, store_id, sequencer_id, sequence_number, sequenced_at,
    receipt_hash, signature_alg, sequencer_signature, sequencer_key_version
)
SELECT u.e, $1, $2, u.sid, u.n, u.at, u.h, u.alg, u.sig, u.v
FROM unnest(
    $4::uuid[], $26::uuid[], $24::bigint[], $14::timestamptz[],
    $27::bytea[], $28::text[], $29::bytea[], $30::integer[]
) AS u(e, sid, n, at, h, alg, sig, v)
"""
# Each new event's id claimed for its tenant and store, in the same transaction as the
# event: an id another stream or tenant took meanwhile fails on ves_event_ids' primary key.
_CLAIM_IDS_SQL = """
INSERT INTO ves_event_ids (event_id, tenant_id, store_id)
SELECT u.id, $1, $2 FROM unnest($4::uuid[]) AS u(id)
"""
# Each entity's version rises by its increment. The update clause takes updated_at from
# the proposed row (its column default): a distributed table allows no function there
# that is not IMMUTABLE.
_UPSERT_VERSIONS_SQL = """
INSERT INTO entity_versions (tenant_id, store_id, entity_type, entity_id, version)
SELECT $1, $2, t, i, v FROM unnest($31::text[], $32::text[], $33::bigint[]) AS u(t, i, v)
ON CONFLICT (tenant_id, store_id, entity_type, entity_id)
DO UPDATE SET version = entity_versions.version + EXCLUDED.version,
    updated_at = EXCLUDED.updated_at
"""
_INSERT_COMMANDS_SQL = """
INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id)
SELECT $1, $2, c, e FROM unnest($34::uuid[], $35::uuid[]) AS u(c, e)
"""
_SET_HEAD_SQL = (
    "UPDATE sequence_counters SET current_sequence = $3, updated_at = NOW() "
    "WHERE tenant_id = $1 AND store_id = $2"
)
# One index probe per key, whatever plan statistics once suggested (see EXISTING_SQL).
_TAKEN_COMMANDS_SQL = """
SELECT q.c AS command_id, d.event_id
FROM unnest($3::uuid[]) AS q(c)
CROSS JOIN LATERAL (
    SELECT event_id FROM ves_command_dedupe
    WHERE tenant_id = $1 AND store_id = $2 AND command_id = q.c
    LIMIT 1
) AS d
"""
_ENTITY_VERSIONS_SQL = """
SELECT q.t AS entity_type, q.i AS entity_id, v.version
FROM unnest($3::text[], $4::text[]) AS q(t, i)
CROSS JOIN LATERAL (
    SELECT version FROM entity_versions
    WHERE tenant_id = $1 AND store_id = $2 AND entity_type = q.t AND entity_id = q.i
    LIMIT 1
) AS v
"""


# The whole write is one statement of data-modifying CTEs over the numbering above (one
# round trip instead of five, most of a small batch's time under the lock): $1 tenant,
# $2 store, $3 new head, $4-$25 event columns, $26-$30 receipt columns, $31-$33 entity
# versions, then ($34, $35) command reservations when there are any. Empty arrays insert
# nothing, so the one statement serves every write. Joined once at import from the
# constants above; no input ever reaches the text.
def _cte(name: str, sql: str) -> str:
    return f"{name} AS ({sql.strip()})"


_WRITE_PARTS = [
    _cte("claimed_ids", _CLAIM_IDS_SQL),
    _cte("inserted_events", _INSERT_EVENTS_SQL),
    _cte("inserted_receipts", _INSERT_RECEIPTS_SQL),
    _cte("bumped_versions", _UPSERT_VERSIONS_SQL),
]
_COMMAND_PART = [_cte("reserved_commands", _INSERT_COMMANDS_SQL)]
_WRITE_SQL = f"WITH {', '.join(_WRITE_PARTS)}\n{_SET_HEAD_SQL}"
_WRITE_WITH_COMMANDS_SQL = f"WITH {', '.join(_WRITE_PARTS + _COMMAND_PART)}\n{_SET_HEAD_SQL}"


async def fetch_existing(
    conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
    event_ids: Sequence[uuid.UUID],
) -> dict[uuid.UUID, Existing]:
    if not event_ids:
        return {}
    owners: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row in await conn.fetch(OWNERS_SQL, list(event_ids)):
        owners.setdefault(row["tenant_id"], []).append(row["event_id"])
    found: dict[uuid.UUID, Existing] = {}
    for tenant_id, ids in owners.items():
        for row in await conn.fetch(EXISTING_SQL, tenant_id, ids):
            found[row["event_id"]] = convert.existing(row)
    return found


class PgAppendTransaction(AppendTransaction):
    def __init__(
        self, conn: asyncpg.pool.PoolConnectionProxy[Any], heads: Mapping[StreamKey, int]
    ) -> None:
        self._conn = conn
        self.streams = {
            stream: PgStreamTransaction(conn, stream, head) for stream, head in heads.items()
        }

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        with mapped():
            return await fetch_existing(self._conn, event_ids)


async def lock_counters(
    conn: asyncpg.pool.PoolConnectionProxy[Any], streams: Sequence[StreamKey]
) -> dict[StreamKey, int]:
    """Lock the counter row of each of ``streams`` (in lock order), creating those that
    do not exist yet; their heads."""
    heads: dict[StreamKey, int] = {}
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = {}
    for stream in streams:
        by_tenant.setdefault(stream.tenant_id, []).append(stream.store_id)
    for tenant_id, stores in by_tenant.items():
        found = {
            row["store_id"]: int(row["current_sequence"])
            for row in await conn.fetch(LOCK_COUNTERS_SQL, tenant_id, stores)
        }
        missing = [s for s in stores if s not in found]
        if missing:
            await conn.execute(CREATE_COUNTERS_SQL, tenant_id, missing)
            for row in await conn.fetch(LOCK_COUNTERS_SQL, tenant_id, missing):
                found[row["store_id"]] = int(row["current_sequence"])
        heads.update({StreamKey(tenant_id, s): found[s] for s in stores})
    return heads


class PgStreamTransaction(StreamTransaction):
    def __init__(
        self,
        conn: asyncpg.pool.PoolConnectionProxy[Any],
        stream: StreamKey,
        head: int,
    ) -> None:
        self._conn = conn
        self._stream = stream
        self.head = head

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        with mapped():
            return await fetch_existing(self._conn, event_ids)

    async def taken_commands(self, command_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        if not command_ids:
            return {}
        with mapped():
            rows = await self._conn.fetch(
                _TAKEN_COMMANDS_SQL,
                self._stream.tenant_id,
                self._stream.store_id,
                list(command_ids),
            )
        return {row["command_id"]: row["event_id"] for row in rows}

    async def entity_versions(
        self, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        if not entities:
            return {}
        with mapped():
            rows = await self._conn.fetch(
                _ENTITY_VERSIONS_SQL,
                self._stream.tenant_id,
                self._stream.store_id,
                [t for t, _ in entities],
                [i for _, i in entities],
            )
        return {(row["entity_type"], row["entity_id"]): row["version"] for row in rows}

    async def write(
        self,
        events: Sequence[NewEvent],
        version_increments: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        sql, args = write_statement(self._stream, events, version_increments, new_head)
        with mapped(appending=True):
            await self._conn.execute(sql, *args)
        self.head = new_head


def write_statement(
    stream: StreamKey, events: Sequence[NewEvent], increments: Versions, head: int
) -> tuple[str, list[Any]]:
    """The write, as one statement and its arguments."""
    commands = [e for e in events if e.envelope.command_id is not None]
    keys = list(increments)
    args: list[Any] = [
        stream.tenant_id,
        stream.store_id,
        head,
        *_event_columns(events),
        *_receipt_columns(events),
        [t for t, _ in keys],
        [i for _, i in keys],
        [increments[k] for k in keys],
    ]
    if commands:
        args += [
            [e.envelope.command_id for e in commands],
            [e.envelope.event_id for e in commands],
        ]
    return (_WRITE_WITH_COMMANDS_SQL if commands else _WRITE_SQL), args


def _event_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    """$4-$25, each a column of the events (tenant and store are the stream's)."""
    columns: list[list[Any]] = [[] for _ in range(22)]
    for event in events:
        env = event.envelope
        row = (
            env.event_id,
            env.command_id,
            env.ves_version,
            env.source_agent_id,
            env.agent_key_id,
            env.entity_type,
            env.entity_id,
            env.event_type,
            event.created_at,
            env.created_at,
            event.sequenced_at,
            env.payload_kind,
            event.texts.payload,
            event.texts.encrypted,
            env.payload_plain_hash,
            env.payload_cipher_hash,
            event.event_signing_hash,
            env.agent_signature,
            env.agent_signature_scheme,
            event.texts.bundle,
            event.sequence_number,
            env.base_version,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _receipt_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    """$26-$30: what a receipt adds to its event's columns."""
    columns: list[list[Any]] = [[] for _ in range(5)]
    for event in events:
        rec = event.receipt
        row = (
            rec.sequencer_id,
            rec.receipt_hash,
            rec.signature_alg,
            rec.sequencer_signature or None,
            rec.sequencer_key_version,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
