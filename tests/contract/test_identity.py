"""The sequencer's id and receipt key: pinned, or made once and kept."""

from __future__ import annotations

import base64
import stat
import uuid
from pathlib import Path

import pytest

from stateset_sequencer.sequencer import identity
from stateset_sequencer.store.ports import Store
from stateset_sequencer.ves.signing import Signer


async def test_id_is_generated_once_and_persisted(store: Store) -> None:
    first = await identity.sequencer_id(store, None)
    assert await identity.sequencer_id(store, None) == first
    pinned = uuid.UUID(int=42)
    assert await identity.sequencer_id(store, str(pinned)) == pinned
    assert await identity.sequencer_id(store, None) == first  # pinning does not overwrite


async def test_bad_pinned_id(store: Store) -> None:
    with pytest.raises(identity.IdentityError):
        await identity.sequencer_id(store, "not-a-uuid")


def test_embedded_default_makes_a_private_key_once(tmp_path: Path) -> None:
    seed = identity.signing_seed(None, tmp_path)
    path = tmp_path / identity.SEQUENCER_KEY_FILE
    assert seed is not None and len(seed) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity.signing_seed(None, tmp_path) == seed


def test_configured_key_forms(tmp_path: Path) -> None:
    raw = bytes(range(32))
    for text in (raw.hex(), "0x" + raw.hex(), base64.b64encode(raw).decode()):
        assert identity.signing_seed(text, tmp_path) == raw
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()  # configured: nothing on disk


def test_no_key_without_a_data_dir() -> None:
    assert identity.signing_seed(None, None) is None


@pytest.mark.parametrize("text", ["nope", "00" * 31, "zz" * 32])
def test_bad_configured_key(text: str, tmp_path: Path) -> None:
    with pytest.raises(identity.IdentityError):
        identity.signing_seed(text, tmp_path)


def test_corrupt_key_file(tmp_path: Path) -> None:
    (tmp_path / identity.SEQUENCER_KEY_FILE).write_text("garbage")
    with pytest.raises(identity.IdentityError):
        identity.signing_seed(None, tmp_path)


async def test_receipt_signer_signs_with_the_kept_key(store: Store, tmp_path: Path) -> None:
    signer = await identity.receipt_signer(
        store, configured_id=None, configured_key=None, key_dir=tmp_path
    )
    seed = identity.signing_seed(None, tmp_path)
    assert seed is not None and signer.public_key == Signer(seed).public_key
    unsigned = await identity.receipt_signer(
        store, configured_id=None, configured_key=None, key_dir=None
    )
    assert unsigned.public_key is None
    assert unsigned.sequencer_id == signer.sequencer_id
