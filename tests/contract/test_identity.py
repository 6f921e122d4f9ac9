"""The sequencer's id and receipt key: pinned, or made once and kept; never absent."""

from __future__ import annotations

import base64
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stateset_sequencer.config import Settings
from stateset_sequencer.runtime import database_config, receipt_key, receipt_key_dir
from stateset_sequencer.sequencer import identity
from stateset_sequencer.sequencer.identity import KeyOrigin
from stateset_sequencer.store.ports import Store
from stateset_sequencer.ves.signing import Signer

SEED = bytes(range(32))


def resolve(
    tmp_path: Path,
    configured: str | None = None,
    key_file: str | None = None,
    *,
    production: bool = False,
    create: bool = True,
) -> identity.ReceiptKey | None:
    return identity.resolve_key(
        configured, key_file, tmp_path, production=production, create=create
    )


def key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret" / "receipt.seed"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


async def test_id_is_generated_once_and_persisted(store: Store) -> None:
    first = await identity.sequencer_id(store, None)
    assert await identity.sequencer_id(store, None) == first
    pinned = uuid.UUID(int=42)
    assert await identity.sequencer_id(store, str(pinned)) == pinned
    assert await identity.sequencer_id(store, None) == first  # pinning does not overwrite


async def test_bad_pinned_id(store: Store) -> None:
    with pytest.raises(identity.IdentityError):
        await identity.sequencer_id(store, "not-a-uuid")


def test_outside_production_a_private_key_is_made_once_beside_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = resolve(data)
    assert made is not None and made.origin is KeyOrigin.GENERATED and made.beside_data
    path = data / identity.SEQUENCER_KEY_FILE
    assert made.path == path and len(made.seed) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert [p.name for p in data.iterdir()] == [identity.SEQUENCER_KEY_FILE]  # no scratch left
    again = resolve(data, production=False)
    assert again is not None and again.origin is KeyOrigin.KEPT and again.seed == made.seed
    assert "generated now" in made.describe() and "kept" in again.describe()
    # Read without creating: the same key, for the commands that check receipts.
    read = resolve(data, create=False)
    assert read is not None and read.public_key == Signer(made.seed).public_key


def test_reading_without_create_writes_nothing(tmp_path: Path) -> None:
    assert resolve(tmp_path / "data", create=False) is None
    assert resolve(tmp_path / "data", create=False, production=True) is None
    assert not (tmp_path / "data").exists()


def test_configured_key_forms(tmp_path: Path) -> None:
    for text in (SEED.hex(), "0x" + SEED.hex(), base64.b64encode(SEED).decode()):
        key = resolve(tmp_path, text, production=True)
        assert key is not None and key.seed == SEED and key.origin is KeyOrigin.SETTING
        assert key.describe() == "VES_SEQUENCER_SIGNING_KEY"
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()  # configured: nothing on disk


@pytest.mark.parametrize("text", ["nope", "00" * 31, "zz" * 32])
def test_bad_configured_key(text: str, tmp_path: Path) -> None:
    with pytest.raises(identity.IdentityError, match="VES_SEQUENCER_SIGNING_KEY"):
        resolve(tmp_path, text)
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_is_read_in_production(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, SEED.hex() + "\n", mode)
    key = resolve(tmp_path, None, str(path), production=True)
    assert key is not None and key.seed == SEED and key.origin is KeyOrigin.FILE
    assert key.path == path and str(path) in key.describe() and not key.beside_data
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()


def test_the_seed_setting_comes_before_the_file(tmp_path: Path) -> None:
    path = key_file(tmp_path, bytes(32).hex())
    key = resolve(tmp_path, SEED.hex(), str(path))
    assert key is not None and key.seed == SEED and key.origin is KeyOrigin.SETTING


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o660])
def test_key_file_with_loose_permissions_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, SEED.hex(), mode)
    with pytest.raises(identity.IdentityError, match="chmod 600") as info:
        resolve(tmp_path, None, str(path))
    assert f"{mode:04o}" in str(info.value) and "VES_SEQUENCER_SIGNING_KEY_FILE" in str(info.value)
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()  # no fallback key made


def test_unusable_key_files_are_refused(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing.seed"): "does not exist",
        str(tmp_path): "not a regular file",
        str(key_file(tmp_path, "garbage")): "not a usable Ed25519 seed",
    }
    for path, needle in cases.items():
        with pytest.raises(identity.IdentityError, match=needle):
            resolve(tmp_path, None, path)
    binary = tmp_path / "binary.seed"
    binary.write_bytes(b"\xff" * 32)
    binary.chmod(0o600)
    with pytest.raises(identity.IdentityError, match="hex or base64"):
        resolve(tmp_path, None, str(binary))
    assert not (tmp_path / identity.SEQUENCER_KEY_FILE).exists()


def test_production_without_a_configured_key_refuses_and_makes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(identity.IdentityError) as info:
        resolve(data, production=True)
    message = str(info.value)
    assert "VES_SEQUENCER_SIGNING_KEY " in message and "VES_SEQUENCER_SIGNING_KEY_FILE" in message
    assert "production" in message
    assert not data.exists()


def test_production_names_a_key_kept_by_an_earlier_start(tmp_path: Path) -> None:
    made = resolve(tmp_path)
    assert made is not None and made.path is not None
    with pytest.raises(identity.IdentityError, match=f"VES_SEQUENCER_SIGNING_KEY_FILE={made.path}"):
        resolve(tmp_path, production=True)


def test_corrupt_or_exposed_kept_key(tmp_path: Path) -> None:
    path = tmp_path / identity.SEQUENCER_KEY_FILE
    path.write_text("garbage")
    path.chmod(0o600)
    with pytest.raises(identity.IdentityError, match="not a usable Ed25519 seed"):
        resolve(tmp_path)
    path.write_text(SEED.hex())
    path.chmod(0o644)
    with pytest.raises(identity.IdentityError, match="chmod 600"):
        resolve(tmp_path)
    assert path.read_text() == SEED.hex()  # never replaced


def test_key_directory_follows_the_database(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "db" / "events.db"
    data = tmp_path / "data"
    sqlite = Settings(DATABASE_URL=f"sqlite:///{elsewhere}", DATA_DIR=data)
    assert receipt_key_dir(sqlite, database_config(sqlite)) == elsewhere.parent
    default = Settings(DATA_DIR=data)
    assert receipt_key_dir(default, database_config(default)) == data
    postgres = Settings(DATABASE_URL="postgresql://u@127.0.0.1/x", DATA_DIR=data)
    assert receipt_key_dir(postgres, database_config(postgres)) == data
    # The one resolution every process uses reads the key kept beside the database.
    made = receipt_key(sqlite, database_config(sqlite), create=True)
    assert made is not None and made.path == elsewhere.parent / identity.SEQUENCER_KEY_FILE
    read = receipt_key(sqlite, database_config(sqlite))
    assert read is not None and read.seed == made.seed
    assert not data.exists()


async def test_receipt_signer_signs_with_the_key(store: Store, tmp_path: Path) -> None:
    key = resolve(tmp_path)
    assert key is not None
    signer = await identity.receipt_signer(store, configured_id=None, key=key)
    assert signer.public_key == Signer(key.seed).public_key
    assert signer.sequencer_id == await identity.sequencer_id(store, None)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Two processes starting at once on one fresh directory must not sign with two keys."""
    data = tmp_path / "data"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: resolve(data), range(16)))
    seeds = {key.seed for key in keys if key is not None}
    assert len(seeds) == 1 and len(keys) == 16
    assert [k.origin for k in keys if k is not None].count(KeyOrigin.GENERATED) == 1
    assert [p.name for p in data.iterdir()] == [identity.SEQUENCER_KEY_FILE]
