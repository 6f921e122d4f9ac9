"""The store and the facts every process derives from the settings in the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..sequencer import identity
from ..store.factory import DatabaseConfig, open_snapshots, open_store, parse_database_url
from ..store.ports import Database, Snapshots, Store
from ..ves.signing import Signer

# A command-line tool holds one connection for its work and one for a concurrent read.
TOOL_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class Runtime:
    """An opened store with the configuration it came from."""

    settings: Settings
    database: DatabaseConfig
    store: Store

    async def close(self) -> None:
        await self.store.close()


def database_config(settings: Settings) -> DatabaseConfig:
    """The database the settings name, parsed (``OperationalError`` for an unusable URL)."""
    return parse_database_url(settings.DATABASE_URL, settings.DATA_DIR)


def snapshots(settings: Settings) -> Snapshots:
    """The ``Snapshots`` port of the configured database, connecting only when asked: a
    backup must not create a missing database, and a restore may target one that does not
    exist yet."""
    return open_snapshots(database_config(settings))


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, max_connections: int = TOOL_CONNECTIONS
) -> AsyncIterator[Runtime]:
    """Open the configured store for the length of a block (raises ``StoreError`` when the
    URL is unusable or the database cannot be reached)."""
    database = database_config(settings)
    store = await open_store(
        database,
        max_connections=max_connections,
        statement_timeout_ms=settings.DB_STATEMENT_TIMEOUT_MS,
        read_database_url=settings.READ_DATABASE_URL,
    )
    runtime = Runtime(settings, database, store)
    try:
        yield runtime
    finally:
        await runtime.close()


def receipt_key_dir(settings: Settings, store: Database) -> Path | None:
    """Where the receipt-signing seed lives when it is not configured: the data directory
    of an embedded store. A server database gets none, because a production key belongs in
    a secret store (``VES_SEQUENCER_SIGNING_KEY``), not on one node's disk."""
    return settings.DATA_DIR if store.capabilities.embedded else None


def receipt_public_key(settings: Settings, store: Database) -> bytes | None:
    """The receipt signer's public key as the service would use it, read and never created:
    the configured seed, else the embedded default's key file, else None (unsigned)."""
    key_dir = receipt_key_dir(settings, store)
    if not settings.VES_SEQUENCER_SIGNING_KEY and (
        key_dir is None or not (key_dir / identity.SEQUENCER_KEY_FILE).is_file()
    ):
        return None
    seed = identity.signing_seed(settings.VES_SEQUENCER_SIGNING_KEY, key_dir)
    return None if seed is None else Signer(seed).public_key
