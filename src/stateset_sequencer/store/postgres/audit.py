"""The audit log's hash chain on PostgreSQL: appends inside a caller's open transaction,
the chain read back in order, the :class:`AuditChain` port, and the migration step that
chains rows written before migration 010.

Appends are serialised by a transaction-scoped advisory lock taken before the tail is
read: a second appender waits until the first commits or rolls back, then reads the tail
that transaction left (READ COMMITTED takes a new snapshot per statement). The UNIQUE
chain_seq is the backstop: an appender reading a stale tail fails rather than forks.
Triggers (migration 010) refuse UPDATE and DELETE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ves.audit import GENESIS_HASH
from ..ports import AuditChain
from ..records import AuditEntry
from ..rows import AUDIT_COLUMNS, AUDIT_LOG, chained, column_list
from . import convert
from .errors import mapped
from .pool import Pools

if TYPE_CHECKING:
    from .pool import Conn, Executor

# The key the reference's audit trigger locks (REFERENCE_DELTA §5, migration 026), so a
# mixed deployment would still serialise on one lock.
AUDIT_LOCK_KEY = 6004514665705169237

# The migration (010_audit_chain) after whose script seal_chain runs.
CHAIN_MIGRATION = 10

_AUDIT_COLUMNS = column_list(AUDIT_COLUMNS)
_AUDIT_INSERT = (
    f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES "  # noqa: S608 - fixed names
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17)"
)
_SELECT = f"SELECT {_AUDIT_COLUMNS} FROM audit_log"  # noqa: S608 - fixed names
_TAIL_SQL = (
    "SELECT chain_seq, entry_hash FROM audit_log WHERE chain_seq IS NOT NULL "
    "ORDER BY chain_seq DESC LIMIT 1"
)


async def append_in_transaction(conn: Conn, entry: AuditEntry) -> AuditEntry:
    """Append ``entry`` on ``conn`` (an asyncpg connection inside an open transaction):
    the entry commits or rolls back with the caller's change. Call it last in the
    transaction: the chain lock is held until commit. Returns the entry as stored."""
    if not conn.is_in_transaction():
        raise RuntimeError("append_in_transaction needs an open transaction")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
    row = await conn.fetchrow(_TAIL_SQL)
    tail_seq, tail_hash = (
        (0, GENESIS_HASH) if row is None else (int(row["chain_seq"]), bytes(row["entry_hash"]))
    )
    stored = chained(entry, tail_seq, tail_hash)
    await conn.execute(_AUDIT_INSERT, *convert.params(AUDIT_LOG, stored))
    return stored


async def chain_unchained(conn: Conn) -> int:
    """Chain the rows written before migration 010, in (timestamp, id) order; run by the
    migration step inside its transaction, before the columns become NOT NULL. The
    UPDATE trigger lets exactly this through: a row whose chain_seq is still NULL."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
    rows = await conn.fetch(f"{_SELECT} WHERE chain_seq IS NULL ORDER BY timestamp, id")
    row = await conn.fetchrow(_TAIL_SQL)
    tail_seq, tail_hash = (
        (0, GENESIS_HASH) if row is None else (int(row["chain_seq"]), bytes(row["entry_hash"]))
    )
    for found in rows:
        stored = chained(convert.record(AUDIT_LOG, found), tail_seq, tail_hash)
        await conn.execute(
            "UPDATE audit_log SET chain_seq = $1, previous_hash = $2, entry_hash = $3 "
            "WHERE id = $4",
            stored.chain_seq,
            stored.previous_hash,
            stored.entry_hash,
            stored.id,
        )
        tail_seq, tail_hash = tail_seq + 1, stored.entry_hash or GENESIS_HASH
    return len(rows)


async def seal_chain(conn: Conn) -> None:
    """Chain the rows already there, then make the chain columns NOT NULL."""
    await chain_unchained(conn)
    await conn.execute(
        "ALTER TABLE audit_log ALTER COLUMN chain_seq SET NOT NULL, "
        "ALTER COLUMN previous_hash SET NOT NULL, ALTER COLUMN entry_hash SET NOT NULL"
    )


async def read_chain(conn: Executor, after_seq: int, limit: int) -> list[AuditEntry]:
    rows = await conn.fetch(
        f"{_SELECT} WHERE chain_seq > $1 ORDER BY chain_seq LIMIT $2",
        after_seq,
        limit,
    )
    return [convert.record(AUDIT_LOG, r) for r in rows]


class PostgresAuditChain(Pools, AuditChain):
    # Read on the primary: a verification is about the log as written, not a lagging copy.
    async def audit_chain(self, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        with mapped():
            return await read_chain(self._pool, after_seq, max(limit, 0))

    async def audit_head(self) -> AuditEntry | None:
        with mapped():
            row = await self._pool.fetchrow(
                f"{_SELECT} WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1"
            )
        return None if row is None else convert.record(AUDIT_LOG, row)

    async def audit_entry(self, chain_seq: int) -> AuditEntry | None:
        with mapped():
            row = await self._pool.fetchrow(f"{_SELECT} WHERE chain_seq = $1", chain_seq)
        return None if row is None else convert.record(AUDIT_LOG, row)
