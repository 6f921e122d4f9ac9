"""Executing the migration plans on the writer thread.

Each step re-reads ``schema_migrations`` inside its own ``BEGIN IMMEDIATE`` transaction, so
two processes migrating the same file at once apply every migration exactly once: the
second waits for the lock, then finds the step already done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from .. import migrations
from ..errors import MigrationError
from ..migrations import Migration
from ..placement import report
from ..records import Distribution, MigrationStatus
from ..rows import time_to_text
from . import audit
from .worker import immediate

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at TEXT    NOT NULL
)
"""

Step = Callable[[Sequence[Migration], dict[int, str]], list[Migration]]


def migrate(conn: sqlite3.Connection) -> list[int]:
    with immediate(conn):
        conn.execute(_CREATE_TABLE)
    return _run_steps(conn, migrations.pending, _apply)


def rollback(conn: sqlite3.Connection, to_version: int) -> list[int]:
    def plan(available: Sequence[Migration], applied: dict[int, str]) -> list[Migration]:
        return migrations.to_revert(available, applied, to_version)

    if not _table_exists(conn):
        return []
    return _run_steps(conn, plan, _revert)


def status(conn: sqlite3.Connection) -> list[MigrationStatus]:
    applied = _applied(conn) if _table_exists(conn) else {}
    return migrations.status(migrations.load("sqlite"), applied)


def distribution(conn: sqlite3.Connection) -> Distribution:
    """One file holds every table: each is local, whatever a distributed engine would do."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return report(None, {str(r["name"]) for r in rows}, {})


def _run_steps(
    conn: sqlite3.Connection,
    plan: Step,
    step: Callable[[sqlite3.Connection, Migration], None],
) -> list[int]:
    available = migrations.load("sqlite")
    done: list[int] = []
    while True:
        with immediate(conn):
            todo = plan(available, _applied(conn))
            if not todo:
                return done
            migration = todo[0]
            try:
                step(conn, migration)
            except sqlite3.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:03d}_{migration.name} failed: {exc}"
                ) from exc
        done.append(migration.version)


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    for statement in statements(migration.up):
        conn.execute(statement)
    if migration.version == audit.CHAIN_MIGRATION:
        # Hashes SQL cannot compute: existing rows are chained in the same transaction.
        audit.chain_unchained(conn)
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
        (
            migration.version,
            migration.name,
            migration.checksum,
            time_to_text(datetime.now(UTC)),
        ),
    )


def _revert(conn: sqlite3.Connection, migration: Migration) -> None:
    for statement in statements(migration.down):
        conn.execute(statement)
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (migration.version,))


def statements(script: str) -> Iterator[str]:
    """Split a script into statements; ``executescript`` would commit the transaction we
    need each migration to run in."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if _has_code(buffer):
        raise MigrationError(f"migration ends in an unterminated statement: {buffer.strip()!r}")


def _has_code(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


def _table_exists(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    return row is not None


def _applied(conn: sqlite3.Connection) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(r["version"]): str(r["checksum"]) for r in rows}
