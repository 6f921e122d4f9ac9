"""Agent keys, commitments, API keys, the audit log and settings, as jobs run on a
connection's thread (``fn(conn, ...)``). Writers open their own ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from ..base import AgentKey, ApiKeyRecord, AuditEntry, CommitmentRow, StreamKey
from ..rows import time_to_text
from . import columns as col
from .worker import immediate


def _insert(table: str, columns: tuple[str, ...], *, verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({col.placeholders(len(columns))})"


def _select(table: str, columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - fixed names


# --- agent signing keys ---------------------------------------------------------------------

_AGENT_KEY_INSERT = _insert("agent_signing_keys", col.AGENT_KEY_COLUMNS)
_AGENT_KEY_SELECT = _select("agent_signing_keys", col.AGENT_KEY_COLUMNS)
_AGENT_KEY_PK = "tenant_id = ? AND agent_id = ? AND key_id = ?"


def put_agent_key(conn: sqlite3.Connection, key: AgentKey) -> None:
    with immediate(conn):
        conn.execute(_AGENT_KEY_INSERT, col.agent_key_params(key))


def get_agent_key(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
) -> AgentKey | None:
    row = conn.execute(
        f"{_AGENT_KEY_SELECT} WHERE {_AGENT_KEY_PK}", (str(tenant_id), str(agent_id), key_id)
    ).fetchone()
    return None if row is None else col.agent_key(row)


def list_agent_keys(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID | None
) -> list[AgentKey]:
    where, params = "tenant_id = ?", [str(tenant_id)]
    if agent_id is not None:
        where += " AND agent_id = ?"
        params.append(str(agent_id))
    rows = conn.execute(
        f"{_AGENT_KEY_SELECT} WHERE {where} ORDER BY agent_id, key_id", params
    ).fetchall()
    return [col.agent_key(r) for r in rows]


def revoke_agent_key(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int, at: datetime
) -> AgentKey | None:
    pk = (str(tenant_id), str(agent_id), key_id)
    with immediate(conn):
        # A key already revoked keeps its first revocation time.
        conn.execute(
            "UPDATE agent_signing_keys SET status = 'revoked', revoked_at = ? "  # noqa: S608
            f"WHERE {_AGENT_KEY_PK} AND status <> 'revoked'",
            (time_to_text(at), *pk),
        )
        return get_agent_key(conn, tenant_id, agent_id, key_id)


# --- commitments ----------------------------------------------------------------------------

_COMMITMENT_INSERT = _insert("ves_commitments", col.COMMITMENT_COLUMNS)
_COMMITMENT_SELECT = _select("ves_commitments", col.COMMITMENT_COLUMNS)


def put_commitment(conn: sqlite3.Connection, row: CommitmentRow) -> None:
    with immediate(conn):
        conn.execute(_COMMITMENT_INSERT, col.commitment_params(row))


def get_commitment(conn: sqlite3.Connection, batch_id: uuid.UUID) -> CommitmentRow | None:
    row = conn.execute(f"{_COMMITMENT_SELECT} WHERE batch_id = ?", (str(batch_id),)).fetchone()
    return None if row is None else col.commitment(row)


def list_commitments(conn: sqlite3.Connection, stream: StreamKey) -> list[CommitmentRow]:
    rows = conn.execute(
        f"{_COMMITMENT_SELECT} WHERE tenant_id = ? AND store_id = ? ORDER BY sequence_start",
        (str(stream.tenant_id), str(stream.store_id)),
    ).fetchall()
    return [col.commitment(r) for r in rows]


# --- API keys -------------------------------------------------------------------------------

_API_KEY_UPSERT = _insert("api_keys", col.API_KEY_COLUMNS, verb="INSERT OR REPLACE")
_API_KEY_SELECT = _select("api_keys", col.API_KEY_COLUMNS)


def put_api_key(conn: sqlite3.Connection, record: ApiKeyRecord, now: datetime) -> None:
    with immediate(conn):
        conn.execute(_API_KEY_UPSERT, col.api_key_params(record, now))


def get_api_key(conn: sqlite3.Connection, key_hash: str) -> ApiKeyRecord | None:
    row = conn.execute(f"{_API_KEY_SELECT} WHERE key_hash = ?", (key_hash,)).fetchone()
    return None if row is None else col.api_key(row)


def list_api_keys(conn: sqlite3.Connection, tenant_id: uuid.UUID | None) -> list[ApiKeyRecord]:
    if tenant_id is None:
        rows = conn.execute(f"{_API_KEY_SELECT} ORDER BY created_at, key_hash").fetchall()
    else:
        rows = conn.execute(
            f"{_API_KEY_SELECT} WHERE tenant_id = ? ORDER BY created_at, key_hash",
            (str(tenant_id),),
        ).fetchall()
    return [col.api_key(r) for r in rows]


def deactivate_api_keys(conn: sqlite3.Connection, prefix: str, now: datetime) -> int:
    with immediate(conn):
        # substr, not LIKE: a prefix is literal text, and LIKE would read '_' and '%' as
        # wildcards (and fold case).
        cursor = conn.execute(
            "UPDATE api_keys SET active = 0, updated_at = ? "
            "WHERE active = 1 AND substr(key_hash, 1, length(?)) = ?",
            (time_to_text(now), prefix, prefix),
        )
        return cursor.rowcount


# --- audit log and settings ------------------------------------------------------------------

_AUDIT_INSERT = _insert("audit_log", col.AUDIT_COLUMNS)
_AUDIT_SELECT = _select("audit_log", col.AUDIT_COLUMNS)


def append_audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    with immediate(conn):
        conn.execute(_AUDIT_INSERT, col.audit_params(entry))


def list_audit(conn: sqlite3.Connection, limit: int, action: str | None) -> list[AuditEntry]:
    # rowid breaks ties between entries stamped in the same microsecond: later insert first.
    order = "ORDER BY timestamp DESC, rowid DESC LIMIT ?"
    if action is None:
        rows = conn.execute(f"{_AUDIT_SELECT} {order}", (limit,)).fetchall()
    else:
        rows = conn.execute(f"{_AUDIT_SELECT} WHERE action = ? {order}", (action, limit)).fetchall()
    return [col.audit_entry(r) for r in rows]


def get_or_set_meta(conn: sqlite3.Connection, key: str, value: str) -> str:
    with immediate(conn):
        conn.execute(
            "INSERT OR IGNORE INTO sequencer_meta (key, value) VALUES (?, ?)", (key, value)
        )
        row = conn.execute("SELECT value FROM sequencer_meta WHERE key = ?", (key,)).fetchone()
    return str(row["value"])
