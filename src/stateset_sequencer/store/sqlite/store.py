"""The SQLite adapter: one writer thread, one reader thread, one file in WAL mode.

Every write runs on the writer's connection, one at a time under an asyncio lock, because a
stream transaction spans several jobs and nothing else may slip into it. Reads run on a
second connection, which in WAL mode sees the last committed state without waiting for the
writer, so a read never observes a stream transaction that has not committed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from ...ves.signing import Receipt
from ..base import (
    AgentKey,
    ApiKeyRecord,
    AuditEntry,
    Capabilities,
    CommitmentRow,
    CounterState,
    Existing,
    IntegrityError,
    MigrationStatus,
    NewEvent,
    OperationalError,
    SchemaRecord,
    SequenceGap,
    Store,
    StoredEvent,
    StoreError,
    StreamKey,
    StreamSummary,
    StreamTransaction,
)
from . import event_log, maintenance, migrate, records, schemas
from .worker import Job, Worker, commit_or_rollback, rollback_if_open

P = ParamSpec("P")
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _window_inverted(key: AgentKey) -> bool:
    return key.valid_from is not None and key.valid_to is not None and key.valid_from > key.valid_to


def _select_one(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


class SqliteStreamTransaction(StreamTransaction):
    """Runs on the writer thread inside the BEGIN IMMEDIATE its store opened."""

    def __init__(self, writer: Worker, stream: StreamKey, head: int) -> None:
        self.head = head
        self._writer = writer
        self._stream = stream
        self._open = True

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        return await self._run(event_log.existing, event_ids)

    async def taken_commands(self, command_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        return await self._run(event_log.taken_commands, self._stream, command_ids)

    async def entity_versions(
        self, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        return await self._run(event_log.entity_versions, self._stream, entities)

    async def write(
        self,
        events: Sequence[NewEvent],
        entity_versions: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        await self._run(event_log.write, self._stream, events, entity_versions, new_head)
        self.head = new_head

    def end(self) -> None:
        self._open = False

    async def _run(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._open:
            raise OperationalError("the stream transaction has already ended")
        return await self._writer.run(job, *args, **kwargs)


class SqliteStore(Store):
    dialect = "sqlite"
    capabilities = Capabilities(name="sqlite", text_holds_nul=True, embedded=True)

    def __init__(self, path: Path, writer: Worker, reader: Worker) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        # The task inside a stream transaction: a write through the store from that same
        # task would wait for the lock it holds itself, forever.
        self._transaction_task: asyncio.Task[object] | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        new_file = not path.exists()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if new_file:
                # SQLite gives its -wal and -shm files the database file's mode, so an
                # owner-only file created empty keeps the whole log owner-only.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
        except FileExistsError:
            pass  # another process created it between our check and ours
        except OSError as exc:
            raise OperationalError(f"cannot create {path}: {exc}") from exc
        # The writer opens first: it switches the file to WAL, which the reader then relies
        # on to read alongside the writer.
        writer = await Worker.start("sqlite-writer", path, read_only=False)
        try:
            reader = await Worker.start("sqlite-reader", path, read_only=True)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    # --- plumbing -----------------------------------------------------------------------------

    async def _write(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self._refuse_inside_own_transaction()
        async with self._write_lock:
            return await self._writer.run(job, *args, **kwargs)

    async def _read(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._reader.run(job, *args, **kwargs)

    def _refuse_inside_own_transaction(self) -> None:
        if self._transaction_task is not None and self._transaction_task is asyncio.current_task():
            raise StoreError(
                "a write through the store inside its own stream transaction would deadlock; "
                "use the transaction's methods"
            )

    def _discard_transaction(self) -> None:
        """Queue a rollback behind whatever the writer is doing, without waiting for it:
        this runs when the caller is being cancelled or the connection has failed."""
        with suppress(StoreError):
            self._writer.submit(rollback_if_open)

    # --- lifecycle and migrations -------------------------------------------------------------

    async def migrate(self) -> list[int]:
        return await self._write(migrate.migrate)

    async def rollback(self, to_version: int) -> list[int]:
        return await self._write(migrate.rollback, to_version)

    async def migration_status(self) -> list[MigrationStatus]:
        return await self._read(migrate.status)

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._read(_select_one)
        return time.perf_counter() - started

    async def close(self) -> None:
        try:
            await self._writer.close()
        finally:
            await self._reader.close()

    # --- the event log ------------------------------------------------------------------------

    def stream_transaction(
        self, stream: StreamKey
    ) -> AbstractAsyncContextManager[StreamTransaction]:
        return self._stream_transaction(stream)

    @asynccontextmanager
    async def _stream_transaction(self, stream: StreamKey) -> AsyncIterator[StreamTransaction]:
        self._refuse_inside_own_transaction()
        async with self._write_lock:
            try:
                head = await self._writer.run(event_log.open_stream, stream)
            except BaseException:
                self._discard_transaction()
                raise
            tx = SqliteStreamTransaction(self._writer, stream, head)
            self._transaction_task = asyncio.current_task()
            try:
                yield tx
            except BaseException:
                tx.end()
                try:
                    await self._writer.run(rollback_if_open)
                except BaseException:
                    self._discard_transaction()
                raise
            else:
                tx.end()
                await self._writer.run(commit_or_rollback)
            finally:
                self._transaction_task = None

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        return await self._read(event_log.existing, event_ids)

    async def head(self, stream: StreamKey) -> int:
        return await self._read(event_log.head, stream)

    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        return await self._read(event_log.read_range, stream, start, end)

    async def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # With no end, stop at the head as it was when iteration began rather than chase
        # a writer that keeps appending.
        last = await self.head(stream) if end is None else end
        next_sequence = start
        while next_sequence <= last:
            page = await self._read(event_log.read_range, stream, next_sequence, last, batch_size)
            for event in page:
                yield event
            if len(page) < batch_size:
                return
            next_sequence = page[-1].sequence_number + 1

    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        return await self._read(event_log.get_event, event_id)

    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None:
        return await self._read(event_log.get_receipt, event_id)

    async def read_entity(
        self, stream: StreamKey, entity_type: str, entity_id: str, offset: int, limit: int
    ) -> tuple[list[StoredEvent], int]:
        return await self._read(
            event_log.read_entity, stream, entity_type, entity_id, offset, limit
        )

    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int:
        return await self._read(event_log.entity_version, stream, entity_type, entity_id)

    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        return await self._read(event_log.list_streams)

    # --- recovery and maintenance -------------------------------------------------------------

    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        return maintenance.paged(
            lambda first, limit: self._read(
                maintenance.events_with_receipts, stream, first, end, limit
            ),
            start,
            end,
            batch_size,
        )

    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        return await self._read(maintenance.counter_states, stream)

    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        return await self._read(maintenance.sequence_gaps, stream)

    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        stored = audit if audit.timestamp is not None else replace(audit, timestamp=_now())
        return await self._write(maintenance.set_counter_to_max, stream, expected, stored)

    async def stream_summaries(self) -> list[StreamSummary]:
        return await self._read(maintenance.stream_summaries)

    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        return await self._read(maintenance.row_counts, tables)

    async def is_empty(self) -> bool:
        return await self._read(maintenance.is_empty)

    # --- agent signing keys -------------------------------------------------------------------

    async def put_agent_key(self, key: AgentKey) -> AgentKey:
        if _window_inverted(key):
            raise IntegrityError("agent key valid_from is after valid_to")
        stored = key if key.created_at is not None else replace(key, created_at=_now())
        await self._write(records.put_agent_key, stored)
        return stored

    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None:
        return await self._read(records.get_agent_key, tenant_id, agent_id, key_id)

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        return await self._read(records.list_agent_keys, tenant_id, agent_id)

    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int, at: datetime
    ) -> AgentKey | None:
        return await self._write(records.revoke_agent_key, tenant_id, agent_id, key_id, at)

    # --- commitments --------------------------------------------------------------------------

    async def put_commitment(self, row: CommitmentRow) -> None:
        await self._write(records.put_commitment, row)

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        return await self._read(records.get_commitment, batch_id)

    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        return await self._read(records.list_commitments, stream)

    # --- API keys and audit -------------------------------------------------------------------

    async def put_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        now = _now()
        stored = record if record.created_at is not None else replace(record, created_at=now)
        await self._write(records.put_api_key, stored, now)
        return stored

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return await self._read(records.get_api_key, key_hash)

    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        return await self._read(records.list_api_keys, tenant_id)

    async def deactivate_api_keys(self, key_hash_prefix: str) -> int:
        # An empty prefix would match every key: refused rather than read as "all".
        if not key_hash_prefix:
            raise ValueError("key hash prefix must not be empty")
        return await self._write(records.deactivate_api_keys, key_hash_prefix, _now())

    async def append_audit(self, entry: AuditEntry) -> None:
        stored = entry if entry.timestamp is not None else replace(entry, timestamp=_now())
        await self._write(records.append_audit, stored)

    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        return await self._read(records.list_audit, limit, action)

    # --- schema registry ----------------------------------------------------------------------

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
        return await self._write(
            schemas.put_schema,
            uuid.uuid4(),
            tenant_id,
            event_type,
            schema_json,
            compatibility,
            description,
            created_by,
            _now(),
        )

    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None:
        return await self._read(schemas.get_schema, schema_id)

    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        return await self._read(schemas.list_schemas, tenant_id, event_type)

    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None:
        return await self._read(schemas.get_schema_version, tenant_id, event_type, version)

    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        return await self._read(schemas.latest_active_schema, tenant_id, event_type)

    async def set_schema_status(self, schema_id: uuid.UUID, status: str) -> SchemaRecord | None:
        return await self._write(schemas.set_schema_status, schema_id, status, _now())

    async def delete_schema(self, schema_id: uuid.UUID) -> bool:
        return await self._write(schemas.delete_schema, schema_id)

    # --- small persistent settings ------------------------------------------------------------

    async def get_or_set_meta(self, key: str, value: str) -> str:
        return await self._write(records.get_or_set_meta, key, value)
