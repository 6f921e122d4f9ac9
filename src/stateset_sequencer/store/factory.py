"""Open the store a ``DATABASE_URL`` names.

``postgres://…`` or ``postgresql://…`` is PostgreSQL (multi-host DSNs pass through as-is);
``sqlite:///path/to/file.db`` is SQLite at that path; nothing at all is SQLite in the data
directory, the embedded default.
"""

from __future__ import annotations

from pathlib import Path

from .base import OperationalError, Store

DEFAULT_SQLITE_NAME = "sequencer.db"


def describe(database_url: str | None, data_dir: Path) -> tuple[str, str]:
    """``(dialect, target)`` for a URL, without opening anything."""
    if database_url is None or database_url.strip() == "":
        return "sqlite", str(data_dir / DEFAULT_SQLITE_NAME)
    url = database_url.strip()
    if url.startswith(("postgres://", "postgresql://")):
        return "postgres", url
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        # sqlite:////abs/path keeps its leading slash; sqlite:///rel/path is relative
        return "sqlite", path
    raise OperationalError(
        "DATABASE_URL must start with postgres://, postgresql:// or sqlite:///"
        f" (got {url.split(':', 1)[0]!r})"
    )


async def open_store(
    database_url: str | None,
    data_dir: Path,
    *,
    max_connections: int = 10,
    statement_timeout_ms: int | None = None,
    read_database_url: str | None = None,
) -> Store:
    dialect, target = describe(database_url, data_dir)
    if dialect == "postgres":
        from .postgres import PostgresStore

        return await PostgresStore.open(
            target,
            max_connections=max_connections,
            statement_timeout_ms=statement_timeout_ms,
            read_dsn=read_database_url,
        )
    from .sqlite import SqliteStore

    return await SqliteStore.open(Path(target))
