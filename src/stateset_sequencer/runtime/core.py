"""The store and the facts every process derives from the settings in the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..sequencer import identity
from ..store.factory import DatabaseConfig, open_snapshots, open_store, parse_database_url
from ..store.ports import Snapshots, Store

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


def receipt_key_dir(settings: Settings, database: DatabaseConfig) -> Path:
    """Where a receipt key kept beside the data lives: the directory of the SQLite
    database file (wherever ``DATABASE_URL`` puts it), else the data directory."""
    return Path(database.target).parent if database.embedded else settings.DATA_DIR


def receipt_key(
    settings: Settings, database: DatabaseConfig, *, create: bool = False
) -> identity.ReceiptKey | None:
    """The receipt-signing key the service uses, resolved the one way every process does
    (``identity.resolve_key``). ``create`` is for the service starting: generate a missing
    key outside production, refuse in production. Without it nothing is written and None
    means no key is known. Raises ``IdentityError`` for an unusable key."""
    return identity.resolve_key(
        settings.VES_SEQUENCER_SIGNING_KEY,
        settings.VES_SEQUENCER_SIGNING_KEY_FILE,
        receipt_key_dir(settings, database),
        production=settings.is_production,
        create=create,
    )


def receipt_public_key(settings: Settings, database: DatabaseConfig) -> bytes | None:
    """The receipt signer's public key as the service would use it, read and never
    created; None when no key is configured or kept beside the data."""
    key = receipt_key(settings, database)
    return None if key is None else key.public_key
