"""The append path on PostgreSQL: one connection, the stream's counter row locked for the
transaction's life, and the bulk reads and the one-statement write it offers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ...ves.codec import parse_rfc3339
from ...ves.jsontext import bundle_text, encrypted_text, payload_text
from ..ports import StreamTransaction
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

# Taking the row lock on the counter is what serialises writers of one stream, in this
# process or any other; the INSERT first makes sure there is a row to lock.
CREATE_COUNTER_SQL = (
    "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) "
    "VALUES ($1, $2, 0) ON CONFLICT DO NOTHING"
)
LOCK_COUNTER_SQL = (
    "SELECT current_sequence FROM sequence_counters "
    "WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE"
)

# One round trip per table whatever the batch size: every column travels as an array.
_INSERT_EVENTS_SQL = """
INSERT INTO ves_events (
    event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id,
    entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at,
    payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash,
    event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle,
    sequence_number, base_version
)
SELECT * FROM unnest(
    $1::uuid[], $2::uuid[], $3::integer[], $4::uuid[], $5::uuid[], $6::uuid[], $7::bigint[],
    $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[], $13::timestamptz[],
    $14::integer[], $15::json[], $16::json[], $17::bytea[], $18::bytea[],
    $19::bytea[], $20::bytea[], $21::integer[], $22::json[],
    $23::bigint[], $24::numeric[]
)
"""
_INSERT_RECEIPTS_SQL = """
INSERT INTO ves_sequencer_receipts (
    event_id, tenant_id, store_id, sequencer_id, sequence_number, sequenced_at,
    receipt_hash, signature_alg, sequencer_signature, sequencer_key_version
)
SELECT * FROM unnest(
    $1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::timestamptz[],
    $7::bytea[], $8::text[], $9::bytea[], $10::integer[]
)
"""
_INSERT_COMMANDS_SQL = """
INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id)
SELECT $1, $2, c, e FROM unnest($3::uuid[], $4::uuid[]) AS u(c, e)
"""
# The update clause takes updated_at from the proposed row (its column default): a
# distributed table allows no function there that is not IMMUTABLE.
_UPSERT_VERSIONS_SQL = """
INSERT INTO entity_versions (tenant_id, store_id, entity_type, entity_id, version)
SELECT $1, $2, t, i, v FROM unnest($3::text[], $4::text[], $5::bigint[]) AS u(t, i, v)
ON CONFLICT (tenant_id, store_id, entity_type, entity_id)
DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
"""
# Each new event's id claimed for its tenant and store, in the same transaction as the
# event: an id another stream or tenant took meanwhile fails on ves_event_ids' primary key.
_CLAIM_IDS_SQL = """
INSERT INTO ves_event_ids (event_id, tenant_id, store_id)
SELECT u.id, $1, $2 FROM unnest($3::uuid[]) AS u(id)
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


def _renumbered(sql: str, offset: int) -> str:
    """``sql`` with its ``$n`` placeholders moved up by ``offset``."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + offset}", sql)


# $1 tenant, $2 store, $3 new head, $4-$27 event columns, $28-$37 receipt columns,
# $38-$40 entity versions, then ($41, $42) command reservations when there are any; the
# event ids ($4) are claimed in ves_event_ids too.
# Joined once at import from the constants above; no input ever reaches the text.
_WRITE_PARTS = [
    "WITH claimed_ids AS (",
    "INSERT INTO ves_event_ids (event_id, tenant_id, store_id)",
    "SELECT u.id, $1, $2 FROM unnest($4::uuid[]) AS u(id)",
    "), inserted_events AS (",
    _renumbered(_INSERT_EVENTS_SQL, 3).strip(),
    "), inserted_receipts AS (",
    _renumbered(_INSERT_RECEIPTS_SQL, 27).strip(),
    "), bumped_versions AS (",
    "INSERT INTO entity_versions (tenant_id, store_id, entity_type, entity_id, version)",
    "SELECT $1, $2, t, i, v FROM unnest($38::text[], $39::text[], $40::bigint[]) AS u(t, i, v)",
    "ON CONFLICT (tenant_id, store_id, entity_type, entity_id)",
    "DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
    ")",
]
_COMMAND_PART = [
    ", reserved_commands AS (",
    "INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id)",
    "SELECT $1, $2, c, e FROM unnest($41::uuid[], $42::uuid[]) AS u(c, e)",
    ")",
]
_HEAD_PART = [
    "UPDATE sequence_counters SET current_sequence = $3, updated_at = NOW()",
    "WHERE tenant_id = $1 AND store_id = $2",
]
_WRITE_SQL = "\n".join(_WRITE_PARTS + _HEAD_PART)
_WRITE_WITH_COMMANDS_SQL = "\n".join(_WRITE_PARTS + _COMMAND_PART + _HEAD_PART)


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
        entity_versions: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        # A savepoint: a failed write (an event id taken meanwhile) leaves the transaction
        # as it was before the call, usable and still holding the stream lock.
        with mapped(appending=True):
            async with self._conn.transaction():
                if events and entity_versions:
                    sql, args = _one_statement(self._stream, events, entity_versions, new_head)
                    await self._conn.execute(sql, *args)
                else:
                    await self._separately(events, entity_versions, new_head)
        self.head = new_head

    async def _separately(self, events: Sequence[NewEvent], versions: Versions, head: int) -> None:
        """A write with no events or no entity versions: a statement per table."""
        tenant_id, store_id = self._stream.tenant_id, self._stream.store_id
        if events:
            await self._conn.execute(
                _CLAIM_IDS_SQL, tenant_id, store_id, [e.envelope.event_id for e in events]
            )
            await self._conn.execute(_INSERT_EVENTS_SQL, *_event_columns(events))
            await self._conn.execute(_INSERT_RECEIPTS_SQL, *_receipt_columns(events))
            commands = [e for e in events if e.envelope.command_id is not None]
            if commands:
                await self._conn.execute(
                    _INSERT_COMMANDS_SQL,
                    tenant_id,
                    store_id,
                    [e.envelope.command_id for e in commands],
                    [e.envelope.event_id for e in commands],
                )
        if versions:
            keys = list(versions)
            await self._conn.execute(
                _UPSERT_VERSIONS_SQL,
                tenant_id,
                store_id,
                [t for t, _ in keys],
                [i for _, i in keys],
                [versions[k] for k in keys],
            )
        await self._conn.execute(_SET_HEAD_SQL, tenant_id, store_id, head)


def _one_statement(
    stream: StreamKey, events: Sequence[NewEvent], versions: Versions, head: int
) -> tuple[str, list[Any]]:
    """The usual case as one statement of data-modifying CTEs: one round trip instead of
    four or five, which is most of a small batch's time inside the lock."""
    commands = [e for e in events if e.envelope.command_id is not None]
    keys = list(versions)
    args: list[Any] = [
        stream.tenant_id,
        stream.store_id,
        head,
        *_event_columns(events),
        *_receipt_columns(events),
        [t for t, _ in keys],
        [i for _, i in keys],
        [versions[k] for k in keys],
    ]
    if commands:
        args += [
            [e.envelope.command_id for e in commands],
            [e.envelope.event_id for e in commands],
        ]
    return (_WRITE_WITH_COMMANDS_SQL if commands else _WRITE_SQL), args


def _event_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(24)]
    for event in events:
        env = event.envelope
        row = (
            env.event_id,
            env.command_id,
            env.ves_version,
            env.tenant_id,
            env.store_id,
            env.source_agent_id,
            env.agent_key_id,
            env.entity_type,
            env.entity_id,
            env.event_type,
            parse_rfc3339(env.created_at),
            env.created_at,
            event.sequenced_at,
            env.payload_kind,
            payload_text(env),
            encrypted_text(env),
            env.payload_plain_hash,
            env.payload_cipher_hash,
            event.event_signing_hash,
            env.agent_signature,
            env.agent_signature_scheme,
            bundle_text(env),
            event.sequence_number,
            env.base_version,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _receipt_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for event in events:
        env, rec = event.envelope, event.receipt
        row = (
            rec.event_id,
            env.tenant_id,
            env.store_id,
            rec.sequencer_id,
            rec.sequence_number,
            parse_rfc3339(rec.sequenced_at),
            rec.receipt_hash,
            rec.signature_alg,
            rec.sequencer_signature or None,
            rec.sequencer_key_version,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
