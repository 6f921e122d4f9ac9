"""The store and the facts every process derives from the settings in the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..sequencer import identity
from ..store.factory import DatabaseConfig, open_snapshots, open_store, parse_database_url
from ..store.ports import Commitments, Snapshots, Store

if TYPE_CHECKING:
    from ..anchoring.anchorer import Anchorer
    from ..anchoring.chain import Chain, ChainConfig

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


ANCHORING_SETTINGS = ("L2_RPC_URL", "SET_REGISTRY_ADDRESS", "SEQUENCER_PRIVATE_KEY")


class AnchoringConfigError(ValueError):
    """The anchoring settings are partly given or malformed: a start-up error."""


def chain_config(settings: Settings) -> ChainConfig | None:
    """The chain client's configuration, or None when anchoring is off (none of the three
    settings given). A partial set, a malformed address, key or chain id is refused: a
    sequencer that silently never anchors is worse than one that does not start."""
    given = {name: (getattr(settings, name) or "").strip() for name in ANCHORING_SETTINGS}
    present = [name for name, value in given.items() if value]
    if not present:
        return None
    if len(present) != len(ANCHORING_SETTINGS):
        missing = [name for name in ANCHORING_SETTINGS if name not in present]
        raise AnchoringConfigError(
            f"anchoring needs {', '.join(ANCHORING_SETTINGS)} together; "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
        )
    url = given["L2_RPC_URL"]
    if not url.startswith(("http://", "https://")):
        raise AnchoringConfigError("L2_RPC_URL must be an http:// or https:// URL")
    address = given["SET_REGISTRY_ADDRESS"]
    if not _is_address(address):
        raise AnchoringConfigError("SET_REGISTRY_ADDRESS must be a 0x-prefixed 20-byte address")
    key = given["SEQUENCER_PRIVATE_KEY"].removeprefix("0x")
    if len(key) != 64 or not _is_hex(key) or int(key, 16) == 0:
        # The message never echoes the value: it is a secret.
        raise AnchoringConfigError("SEQUENCER_PRIVATE_KEY must be 32 bytes of hex")
    # Imported here, not at the top: the Ethereum libraries take a second to import, and
    # every command-line start would pay for it whether it anchors or not.
    from ..anchoring.breaker import BreakerPolicy
    from ..anchoring.chain import ChainConfig

    chain_id: int | None = None
    if settings.L2_CHAIN_ID is not None and settings.L2_CHAIN_ID.strip():
        text = settings.L2_CHAIN_ID.strip()
        if not text.isdigit() or not 0 < int(text) < 2**63:
            raise AnchoringConfigError("L2_CHAIN_ID must be a positive integer")
        chain_id = int(text)
    return ChainConfig(
        rpc_url=url,
        registry_address=address,
        private_key="0x" + key,
        chain_id=chain_id,
        rpc_timeout_s=settings.ANCHOR_RPC_TIMEOUT_SECS,
        receipt_timeout_s=settings.ANCHOR_RECEIPT_TIMEOUT_SECS,
        breaker=BreakerPolicy(
            failure_threshold=settings.ANCHOR_BREAKER_FAILURES,
            failure_window_s=settings.ANCHOR_BREAKER_WINDOW_SECS,
            open_for_s=settings.ANCHOR_BREAKER_OPEN_SECS,
            max_open_for_s=max(settings.ANCHOR_BREAKER_OPEN_SECS, 300.0),
        ),
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _is_address(text: str) -> bool:
    return text.startswith("0x") and len(text) == 42 and _is_hex(text[2:])


def open_chain(settings: Settings) -> Chain | None:
    """The chain client the settings describe (nothing is contacted yet), or None."""
    config = chain_config(settings)
    if config is None:
        return None
    from ..anchoring.chain import Chain

    return Chain(config)


def open_anchorer(settings: Settings, store: Commitments) -> Anchorer | None:
    """The anchoring rules over this store and the configured chain, or None when
    anchoring is off. The caller closes ``anchorer.chain``."""
    chain = open_chain(settings)
    if chain is None:
        return None
    from ..anchoring.anchorer import Anchorer

    return Anchorer(store, chain, confirmations=settings.ANCHOR_FINALITY_CONFIRMATIONS)
