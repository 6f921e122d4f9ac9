"""The SQLite adapter of the storage contract (one file, WAL, one writer thread)."""

from .store import SqliteStore, SqliteStreamTransaction

__all__ = ["SqliteStore", "SqliteStreamTransaction"]
