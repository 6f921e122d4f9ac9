"""Migrations, health, pool statistics and small meta values."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..records import (
    Capabilities,
    Distribution,
    MigrationStatus,
    PoolStats,
)


class Database(ABC):
    """The database as a whole: its schema version, its health, its lifecycle, what a
    caller may need to know about the backend, and small persistent settings."""

    capabilities: Capabilities
    """Answered by the adapter, so that no code outside ``store/`` compares backends."""

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied. Several processes
        migrating one database at once apply each migration exactly once. Where the
        database can spread tables over several machines (Citus), every table not yet
        placed as ``store.placement`` declares is placed so, after the migrations."""

    @abstractmethod
    async def distribution(self) -> Distribution:
        """Each table's placement, and the engine that places them (if any)."""

    @abstractmethod
    async def rollback(self, to_version: int) -> list[int]:
        """Revert applied migrations above ``to_version``; returns the versions reverted."""

    @abstractmethod
    async def migration_status(self) -> list[MigrationStatus]:
        """Every known migration and whether (and unaltered) it is applied."""

    @abstractmethod
    async def ping(self) -> float:
        """Round-trip a trivial query; returns seconds taken. Raises OperationalError."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    @abstractmethod
    def pool_stats(self) -> PoolStats:
        """A cheap snapshot of the connections for health checks and metrics (no query)."""

    @abstractmethod
    async def get_or_set_meta(self, key: str, value: str) -> str:
        """Return the stored value for ``key``, storing ``value`` first if there is none."""
