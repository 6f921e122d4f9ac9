"""The sequencer's own identity: its id and the key that signs receipts.

``VES_SEQUENCER_ID`` pins the id; otherwise one is generated once and kept in the store,
so receipts from every restart (and every process on one database) carry the same id.
``VES_SEQUENCER_SIGNING_KEY`` (an Ed25519 seed, hex or base64) signs receipts; without it,
the embedded default generates a seed once and keeps it in the data directory (0600), so a
fresh install gives signed receipts. On PostgreSQL without a key, receipts are unsigned
("none"), as the reference's are: a production key belongs in a secret store, not on disk.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..store.ports import Database
from ..ves.codec import parse_uuid
from ..ves.errors import VesError
from ..ves.signing import ReceiptSigner, Signer, parse_seed

SEQUENCER_KEY_FILE = "sequencer.key"
META_SEQUENCER_ID = "sequencer_id"


class IdentityError(Exception):
    """The configured sequencer id or key is unusable."""


async def sequencer_id(store: Database, configured: str | None) -> uuid.UUID:
    if configured:
        try:
            return parse_uuid(configured.strip())
        except VesError as exc:
            raise IdentityError(f"VES_SEQUENCER_ID: {exc}") from None
    return uuid.UUID(await store.get_or_set_meta(META_SEQUENCER_ID, str(uuid.uuid4())))


def signing_seed(configured: str | None, data_dir: Path | None) -> bytes | None:
    """The receipt-signing seed: configured, else kept in ``data_dir`` (created once)."""
    if configured:
        try:
            return parse_seed(configured.strip())
        except VesError as exc:
            raise IdentityError(f"VES_SEQUENCER_SIGNING_KEY: {exc}") from None
    if data_dir is None:
        return None
    path = data_dir / SEQUENCER_KEY_FILE
    if path.exists():
        try:
            return parse_seed(path.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, VesError) as exc:
            raise IdentityError(f"{path}: not a usable Ed25519 seed ({exc})") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    seed = Signer.generate().seed
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(seed.hex() + "\n")
    os.chmod(path, 0o600)
    return seed


async def receipt_signer(
    store: Database, *, configured_id: str | None, configured_key: str | None, key_dir: Path | None
) -> ReceiptSigner:
    """Build the receipt signer. ``key_dir`` is the data directory on the embedded default
    and None on PostgreSQL."""
    return ReceiptSigner(
        await sequencer_id(store, configured_id), signing_seed(configured_key, key_dir)
    )
