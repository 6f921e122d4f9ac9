"""The PostgreSQL adapter: the storage contract on an asyncpg connection pool."""

from __future__ import annotations

from .store import PostgresStore

__all__ = ["PostgresStore"]
