"""The one place a ``DATABASE_URL`` is parsed, and the store (or its snapshots) opened.

``postgres://…`` or ``postgresql://…`` is PostgreSQL (multi-host DSNs pass through as-is);
``sqlite:///path/to/file.db`` is SQLite at that path; nothing at all is SQLite in the data
directory, the embedded default. Callers parse once (:func:`parse_database_url`) and hand
the :class:`DatabaseConfig` on; nobody else looks inside the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import OperationalError, SnapshotError
from .ports import Snapshots, Store

DEFAULT_SQLITE_NAME = "sequencer.db"

Backend = Literal["sqlite", "postgres"]

_PASSWORD = re.compile(r"(://[^:/@]+):[^@/]*@")


def redact(target: str) -> str:
    """Hide a password in a DSN before printing or logging it."""
    return _PASSWORD.sub(r"\1:***@", target)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """A parsed ``DATABASE_URL``: which backend, where (a DSN or a file path), and how to
    name it in logs and messages without its password."""

    backend: Backend
    target: str
    display: str

    @property
    def location(self) -> str:
        """The target with any password hidden."""
        return redact(self.target)

    @property
    def embedded(self) -> bool:
        """The database is a file in the local data directory, beside the receipt key."""
        return self.backend == "sqlite"


def parse_database_url(url: str | None, data_dir: Path) -> DatabaseConfig:
    """The configuration a URL names, without opening anything. :class:`OperationalError`
    for a scheme that is neither PostgreSQL nor SQLite."""
    backend, target = _split(url, data_dir)
    return DatabaseConfig(backend, target, f"{backend} ({redact(target)})")


def _split(url: str | None, data_dir: Path) -> tuple[Backend, str]:
    if url is None or url.strip() == "":
        return "sqlite", str(data_dir / DEFAULT_SQLITE_NAME)
    text = url.strip()
    if text.startswith(("postgres://", "postgresql://")):
        return "postgres", text
    if text.startswith("sqlite:///"):
        # sqlite:////abs/path keeps its leading slash; sqlite:///rel/path is relative
        return "sqlite", text.removeprefix("sqlite:///")
    raise OperationalError(
        "DATABASE_URL must start with postgres://, postgresql:// or sqlite:///"
        f" (got {text.split(':', 1)[0]!r})"
    )


async def open_store(
    config: DatabaseConfig,
    *,
    max_connections: int = 10,
    statement_timeout_ms: int | None = None,
    read_database_url: str | None = None,
    create: bool = True,
) -> Store:
    """Open the store ``config`` names (connections and threads; no migration).

    ``create=False`` refuses, with :class:`OperationalError`, to create an embedded
    database that does not exist yet (a doctor or a backup must not invent an empty one)."""
    if config.backend == "postgres":
        from .postgres import PostgresStore

        return await PostgresStore.open(
            config.target,
            max_connections=max_connections,
            statement_timeout_ms=statement_timeout_ms,
            read_dsn=read_database_url,
        )
    from .sqlite import SqliteStore

    path = Path(config.target)
    if not create and not path.is_file():
        raise OperationalError(f"no SQLite database at {path}")
    return await SqliteStore.open(path)


def open_snapshots(config: DatabaseConfig) -> Snapshots:
    """The :class:`Snapshots` port of the database ``config`` names, opening nothing until
    asked: for a backup of a database that must not be created, or a restore into one that
    does not exist yet (the service stopped)."""
    if config.backend == "postgres":
        from .postgres import PostgresSnapshots

        return PostgresSnapshots(config.target)
    from .sqlite import SqliteSnapshots

    return SqliteSnapshots(Path(config.target))


def snapshot_file(snapshot_format: object) -> str | None:
    """The snapshot file name a backup of ``snapshot_format`` holds; None for a format no
    backend writes."""
    if snapshot_format == "sqlite":
        from .sqlite import SqliteSnapshots

        return SqliteSnapshots.snapshot_file
    if snapshot_format == "postgres":
        from .postgres import PostgresSnapshots

        return PostgresSnapshots.snapshot_file
    return None


def snapshots_for(snapshot_format: str, server: DatabaseConfig | None) -> Snapshots:
    """Snapshots able to test-restore a copy of ``snapshot_format``. An embedded format
    needs nothing; a server format needs ``server`` to be a server of that kind, on which
    a scratch database is created and dropped. :class:`SnapshotError` otherwise."""
    if snapshot_format == "sqlite":
        from .sqlite import SqliteSnapshots

        return SqliteSnapshots(None)
    if snapshot_format == "postgres":
        if server is None or server.backend != "postgres":
            raise SnapshotError(
                "a PostgreSQL backup is test-restored on a server: pass --database-url postgres://…"
            )
        return open_snapshots(server)
    raise SnapshotError(f"unknown snapshot format {snapshot_format!r}")
