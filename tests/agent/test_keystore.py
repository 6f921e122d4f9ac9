"""The agent's local key store (``agent/keystore.py``) and ``sequencer-cli keys …``."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stateset_sequencer.agent import keystore
from stateset_sequencer.agent.config import default_home
from stateset_sequencer.agent.keystore import (
    HEADER_SIZE,
    TAG_SIZE,
    AgentKey,
    KeyStore,
    KeyStoreError,
    KeyStoreReason,
)
from stateset_sequencer.cli.keystore import keys_app
from stateset_sequencer.ves.signing import Signer

AGENT = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = bytes(range(32))
PASSPHRASE = "correct horse battery staple"
FAST = 15  # the lowest scrypt cost an archive may declare: the same code, quicker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refused(reason: KeyStoreReason) -> Any:
    return pytest.raises(KeyStoreError, check=lambda exc: exc.reason is reason)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "home")


def fresh(tmp_path: Path, name: str = "other") -> KeyStore:
    return KeyStore(tmp_path / name)


# --- where and how the files are written -----------------------------------------------------


def test_the_home_is_the_argument_else_the_environment_else_dot_sequencer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQUENCER_HOME", str(tmp_path / "env"))
    assert default_home() == tmp_path / "env"
    assert KeyStore().path == tmp_path / "env" / "keys"
    assert KeyStore(tmp_path / "arg").path == tmp_path / "arg" / "keys"
    KeyStore().create(AGENT)
    assert (tmp_path / "env" / "keys" / str(AGENT) / "1.key").is_file()
    monkeypatch.setenv("SEQUENCER_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".sequencer"


# 0: nothing may rely on the umask to narrow a mode; 0o377: nor end up narrower than
# the owner needs (an agent directory it cannot enter).
@pytest.mark.parametrize("umask", [0, 0o022, 0o377])
def test_directories_are_0700_and_files_0600_whatever_the_umask(
    store: KeyStore, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        store.create(AGENT)
        store.retire(AGENT, 1, T0)  # keys.json rewritten
    finally:
        os.umask(previous)
    agent_dir = store.path / str(AGENT)
    assert mode(store.home) == mode(store.path) == mode(agent_dir) == 0o700
    assert mode(agent_dir / "1.key") == mode(agent_dir / "keys.json") == 0o600
    assert sorted(p.name for p in agent_dir.iterdir()) == ["1.key", "keys.json"]  # no temporaries
    seed = (agent_dir / "1.key").read_text()
    assert len(seed) == 65 and seed.endswith("\n")  # keygen's agent.key form
    assert Signer(seed.strip()).public_key == store.keys(AGENT)[0].public_key


@pytest.mark.parametrize(
    ("target", "wide", "fix"),
    [
        ("key", 0o640, "chmod 600"),
        ("key", 0o604, "chmod 600"),
        ("metadata", 0o644, "chmod 600"),
        ("agent_dir", 0o750, "chmod 700"),
        ("keys_dir", 0o705, "chmod 700"),
    ],
)
def test_a_key_path_others_may_access_is_refused_with_the_fix(
    store: KeyStore, target: str, wide: int, fix: str
) -> None:
    store.create(AGENT)
    agent_dir = store.path / str(AGENT)
    path = {
        "key": agent_dir / "1.key",
        "metadata": agent_dir / "keys.json",
        "agent_dir": agent_dir,
        "keys_dir": store.path,
    }[target]
    path.chmod(wide)
    with refused(KeyStoreReason.INSECURE_PERMISSIONS) as info:
        store.signer(AGENT, 1)
    assert f"{fix} {path}" in str(info.value)
    assert mode(path) == wide  # refused, not silently "fixed"
    path.chmod(0o700 if "dir" in target else 0o600)
    assert store.signer(AGENT, 1).public_key == store.current(AGENT).public_key


def test_a_symlinked_key_file_is_refused(store: KeyStore, tmp_path: Path) -> None:
    store.create(AGENT)
    key = store.path / str(AGENT) / "1.key"
    elsewhere = tmp_path / "elsewhere.key"
    key.rename(elsewhere)
    key.symlink_to(elsewhere)
    with refused(KeyStoreReason.INSECURE_PERMISSIONS) as info:
        store.signer(AGENT, 1)
    assert "symbolic link" in str(info.value)


# --- several keys, rotation, revocation ------------------------------------------------------


def test_key_ids_count_up_and_may_be_chosen(store: KeyStore) -> None:
    assert store.keys(AGENT) == [] and store.agents() == []
    assert [store.create(AGENT).key_id for _ in range(3)] == [1, 2, 3]
    assert store.create(AGENT, 10).key_id == 10
    assert store.create(AGENT).key_id == 11
    assert store.create(OTHER, 0).key_id == 0
    assert [k.key_id for k in store.keys(AGENT)] == [1, 2, 3, 10, 11]
    assert store.agents() == [AGENT, OTHER]
    keys = store.keys(AGENT)
    assert len({k.public_key for k in keys}) == 5
    assert all(k.status == "active" and k.created_at.tzinfo is not None for k in keys)
    with refused(KeyStoreReason.KEY_EXISTS):
        store.create(AGENT, 10)
    for bad in (-1, 2**32):
        with refused(KeyStoreReason.INVALID):
            store.create(AGENT, bad)


def test_concurrent_creates_take_distinct_ids(store: KeyStore) -> None:
    store.create(AGENT)  # the directories exist: the race is on keys.json
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: store.create(AGENT).key_id, range(24)))
    assert sorted(made) == list(range(2, 26))
    assert [k.key_id for k in store.keys(AGENT)] == list(range(1, 26))


def test_signers_load_their_own_seed(store: KeyStore) -> None:
    one, two = store.create(AGENT), store.create(AGENT)
    assert store.signer(AGENT, 1).public_key == one.public_key
    assert store.signer(AGENT, 2).public_key == two.public_key
    with refused(KeyStoreReason.NOT_FOUND):
        store.signer(AGENT, 3)
    with refused(KeyStoreReason.NOT_FOUND):
        store.signer(OTHER, 1)


def test_current_is_the_newest_active_key_through_a_rotation(store: KeyStore) -> None:
    with refused(KeyStoreReason.NO_KEY):
        store.current(AGENT)
    store.create(AGENT)
    assert store.current(AGENT).key_id == 1
    store.create(AGENT)
    store.retire(AGENT, 1, T0 + timedelta(days=7))
    assert store.current(AGENT).key_id == 2
    store.create(AGENT)
    store.retire(AGENT, 3, T0)  # a newer key retired: the older active one signs again
    assert store.current(AGENT).key_id == 2
    store.mark_revoked(AGENT, 2, T0)
    with refused(KeyStoreReason.NO_KEY):
        store.current(AGENT)


def test_retire_then_due_then_revoke(store: KeyStore) -> None:
    store.create(AGENT)
    store.create(AGENT)
    due_at = T0 + timedelta(hours=1)
    retired = store.retire(AGENT, 1, due_at)
    assert retired.status == "retiring" and retired.revoke_after == due_at
    assert store.keys(AGENT)[0] == retired  # as recorded
    # Still loadable, for what an outbox signed with it before the rotation.
    assert store.signer(AGENT, 1).public_key == retired.public_key
    assert store.due_for_revocation(AGENT, due_at - timedelta(seconds=1)) == []
    assert store.due_for_revocation(AGENT, due_at) == [retired]
    assert store.due_for_revocation(AGENT, due_at + timedelta(days=1)) == [retired]
    later = store.retire(AGENT, 1, due_at + timedelta(days=1))  # moved, not stacked
    assert store.due_for_revocation(AGENT, due_at) == []

    revoked = store.mark_revoked(AGENT, 1, due_at + timedelta(days=2))
    assert revoked.status == "revoked" and revoked.revoked_at == due_at + timedelta(days=2)
    assert revoked.public_key == later.public_key  # kept, to verify what it signed
    assert not (store.path / str(AGENT) / "1.key").exists()  # the seed is gone
    assert store.due_for_revocation(AGENT, due_at + timedelta(days=9)) == []
    again = store.mark_revoked(AGENT, 1, due_at + timedelta(days=5))
    assert again.revoked_at == revoked.revoked_at  # the first revocation stands
    with refused(KeyStoreReason.NOT_FOUND):
        store.retire(AGENT, 9, T0)


def test_a_revoked_key_never_signs_again(store: KeyStore) -> None:
    store.create(AGENT)
    store.mark_revoked(AGENT, 1, T0)  # straight from active: a compromised key
    with refused(KeyStoreReason.REVOKED):
        store.signer(AGENT, 1)
    with refused(KeyStoreReason.REVOKED):
        store.retire(AGENT, 1, T0)
    with refused(KeyStoreReason.KEY_EXISTS):
        store.create(AGENT, 1)  # its id is not free again either
    # A seed put back by hand does not bring it back.
    (store.path / str(AGENT) / "1.key").write_text("00" * 32)
    with refused(KeyStoreReason.REVOKED):
        store.signer(AGENT, 1)


def test_naive_times_are_refused(store: KeyStore) -> None:
    store.create(AGENT)
    with refused(KeyStoreReason.INVALID):
        store.retire(AGENT, 1, datetime(2026, 1, 1))
    with refused(KeyStoreReason.INVALID):
        store.due_for_revocation(AGENT, datetime(2026, 1, 1))


def test_damage_is_named(store: KeyStore) -> None:
    store.create(AGENT)
    store.create(AGENT)
    agent_dir = store.path / str(AGENT)
    (agent_dir / "1.key").write_text(Signer.generate().seed.hex())  # another key
    with refused(KeyStoreReason.DAMAGED) as info:
        store.signer(AGENT, 1)
    assert "not the key" in str(info.value)
    (agent_dir / "2.key").unlink()
    with refused(KeyStoreReason.DAMAGED):
        store.signer(AGENT, 2)
    (agent_dir / "keys.json").write_text("{not json")
    with refused(KeyStoreReason.DAMAGED):
        store.keys(AGENT)


def test_a_seed_left_without_its_record_is_not_overwritten(store: KeyStore) -> None:
    store.create(AGENT)
    orphan = store.path / str(AGENT) / "2.key"
    fd = os.open(orphan, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"ab" * 32 + b"\n")
    os.close(fd)
    with refused(KeyStoreReason.DAMAGED) as info:
        store.create(AGENT, 2)
    assert "move it away" in str(info.value)
    assert store.create(AGENT).key_id == 3  # automatic ids step over it
    assert orphan.read_text() == "ab" * 32 + "\n"


def test_import_seed_from_a_keygen_key(store: KeyStore) -> None:
    old = Signer.generate()
    key = store.import_seed(AGENT, 1, old.seed)
    assert key.public_key == old.public_key and key.status == "active"
    assert store.signer(AGENT, 1).sign(DIGEST) == old.sign(DIGEST)
    assert store.import_seed(AGENT, 1, old.seed) == key  # again: nothing changes
    with refused(KeyStoreReason.KEY_EXISTS):
        store.import_seed(AGENT, 1, Signer.generate().seed)
    with refused(KeyStoreReason.KEY_EXISTS):
        store.import_seed(AGENT, 2, old.seed)  # one seed, one key id
    with refused(KeyStoreReason.INVALID):
        store.import_seed(AGENT, 3, b"short")


# --- the encrypted archive -------------------------------------------------------------------


def populate(store: KeyStore) -> None:
    store.create(AGENT)
    store.create(AGENT)
    store.create(AGENT)
    store.retire(AGENT, 2, T0 + timedelta(days=3))
    store.mark_revoked(AGENT, 1, T0)
    store.create(OTHER, 7)


def signatures(store: KeyStore) -> dict[tuple[uuid.UUID, int], bytes]:
    return {
        (agent, key.key_id): store.signer(agent, key.key_id).sign(DIGEST)
        for agent in store.agents()
        for key in store.keys(agent)
        if key.status != "revoked"
    }


def everything(store: KeyStore) -> list[AgentKey]:
    return [key for agent in store.agents() for key in store.keys(agent)]


def test_round_trip_into_a_fresh_home(store: KeyStore, tmp_path: Path) -> None:
    populate(store)
    data = store.export_encrypted(PASSPHRASE)  # the production cost
    assert data[:19] == b"stateset-agent-keys" and data[19:24] == bytes([1, 1, 17, 8, 1])
    target = fresh(tmp_path)
    imported = target.import_encrypted(data, PASSPHRASE)
    assert sorted(imported, key=lambda k: (str(k.agent_id), k.key_id)) == everything(store)
    assert everything(target) == everything(store)
    assert signatures(target) == signatures(store)  # Ed25519 is deterministic: same seeds
    assert target.current(AGENT).key_id == 3
    agent_dir = target.path / str(AGENT)
    assert not (agent_dir / "1.key").exists()  # the revoked key came without a seed
    assert mode(target.path) == mode(agent_dir) == 0o700
    assert {mode(p) for p in agent_dir.iterdir()} == {0o600}
    with refused(KeyStoreReason.REVOKED):
        target.signer(AGENT, 1)


def test_export_a_chosen_agent(store: KeyStore, tmp_path: Path) -> None:
    populate(store)
    target = fresh(tmp_path)
    target.import_encrypted(
        store.export_encrypted(PASSPHRASE, [OTHER], kdf_log2_n=FAST), PASSPHRASE
    )
    assert target.agents() == [OTHER]
    with refused(KeyStoreReason.NOT_FOUND):
        store.export_encrypted(PASSPHRASE, [uuid.uuid4()], kdf_log2_n=FAST)
    with refused(KeyStoreReason.NO_KEY):
        fresh(tmp_path, "empty").export_encrypted(PASSPHRASE, kdf_log2_n=FAST)


def test_the_documented_format_opens_with_plain_cryptography(store: KeyStore) -> None:
    populate(store)
    d = store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)
    assert len(d) > HEADER_SIZE + TAG_SIZE
    key = Scrypt(salt=d[24:40], length=32, n=2 ** d[21], r=d[22], p=d[23]).derive(
        PASSPHRASE.encode()
    )
    doc = json.loads(AESGCM(key).decrypt(d[40:52], d[52:], d[:52]))
    with pytest.raises(InvalidTag):  # the header is bound as associated data
        AESGCM(key).decrypt(d[40:52], d[52:], None)
    assert doc["format"] == "stateset-agent-keys-archive" and doc["version"] == 1
    entries = {(a["agent_id"], k["key_id"]): k for a in doc["agents"] for k in a["keys"]}
    assert entries[(str(AGENT), 1)]["seed"] is None  # revoked
    assert entries[(str(AGENT), 2)]["status"] == "retiring"
    seed = bytes.fromhex(entries[(str(OTHER), 7)]["seed"])
    assert Signer(seed).sign(DIGEST) == store.signer(OTHER, 7).sign(DIGEST)


def test_the_passphrase_is_normalized(store: KeyStore, tmp_path: Path) -> None:
    store.create(AGENT)
    composed = "caf\u00e9 au lait"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    data = store.export_encrypted(composed, kdf_log2_n=FAST)
    assert fresh(tmp_path).import_encrypted(data, decomposed)


def test_an_empty_passphrase_is_refused(store: KeyStore, tmp_path: Path) -> None:
    store.create(AGENT)
    with refused(KeyStoreReason.EMPTY_PASSPHRASE):
        store.export_encrypted("")
    data = store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)
    with refused(KeyStoreReason.EMPTY_PASSPHRASE):
        fresh(tmp_path).import_encrypted(data, "")


def test_a_wrong_passphrase(store: KeyStore, tmp_path: Path) -> None:
    store.create(AGENT)
    data = store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)
    target = fresh(tmp_path)
    with refused(KeyStoreReason.WRONG_PASSPHRASE) as info:
        target.import_encrypted(data, PASSPHRASE + "!")
    assert "wrong passphrase, or the archive was altered" in str(info.value)
    assert info.value.message == str(info.value)
    assert not target.path.exists()  # nothing written


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    source = KeyStore(tmp_path_factory.mktemp("source"))
    populate(source)
    return source.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)


def assert_flip_refused(archive: bytes, position: int, mask: int) -> None:
    altered = bytearray(archive)
    altered[position] ^= mask
    with tempfile.TemporaryDirectory() as home:
        target = KeyStore(Path(home))
        with pytest.raises(KeyStoreError) as info:
            target.import_encrypted(bytes(altered), PASSPHRASE)
        assert target.agents() == []
    reason = info.value.reason
    if position < 21:  # name, version, KDF id: refused on sight
        assert reason is KeyStoreReason.NOT_AN_ARCHIVE
    elif position < 24:  # scrypt N, r, p: out of bounds, or a key that fails the tag
        assert reason in {KeyStoreReason.NOT_AN_ARCHIVE, KeyStoreReason.WRONG_PASSPHRASE}
    else:  # salt, nonce, ciphertext, tag
        assert reason is KeyStoreReason.WRONG_PASSPHRASE


@pytest.mark.parametrize("position", [0, 18, 19, 20, 21, 22, 23, 24, 39, 40, 51, 52, -17, -16, -1])
def test_one_flipped_byte_in_each_field(archive: bytes, position: int) -> None:
    assert_flip_refused(archive, position % len(archive), 0x01)


@settings(max_examples=60)
@given(data=st.data())
def test_one_flipped_byte_anywhere(archive: bytes, data: st.DataObject) -> None:
    # Half the draws in the 52-byte header, where each byte is a different field.
    position = data.draw(st.integers(0, HEADER_SIZE - 1) | st.integers(0, len(archive) - 1))
    assert_flip_refused(archive, position, data.draw(st.integers(1, 255)))


@pytest.mark.parametrize("keep", [0, 5, 19, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1])
def test_cut_inside_the_header_is_not_an_archive(archive: bytes, tmp_path: Path, keep: int) -> None:
    with refused(KeyStoreReason.NOT_AN_ARCHIVE):
        fresh(tmp_path).import_encrypted(archive[:keep], PASSPHRASE)


@pytest.mark.parametrize("cut", [1, TAG_SIZE, 100])
def test_cut_in_the_body_fails_the_tag(archive: bytes, tmp_path: Path, cut: int) -> None:
    target = fresh(tmp_path)
    with refused(KeyStoreReason.WRONG_PASSPHRASE):
        target.import_encrypted(archive[:-cut], PASSPHRASE)
    assert target.agents() == []


@pytest.mark.parametrize(
    "data",
    [b"", b"{}", b"\x00" * 200, b'{"agents": []}' * 10, b"stateset-agent-keyz" + b"\x00" * 80],
)
def test_not_an_archive(tmp_path: Path, data: bytes) -> None:
    with refused(KeyStoreReason.NOT_AN_ARCHIVE):
        fresh(tmp_path).import_encrypted(data, PASSPHRASE)


def test_an_unknown_version_is_not_an_archive(archive: bytes, tmp_path: Path) -> None:
    with refused(KeyStoreReason.NOT_AN_ARCHIVE) as info:
        fresh(tmp_path).import_encrypted(archive[:19] + b"\x02" + archive[20:], PASSPHRASE)
    assert "version 2" in str(info.value)


def seal(plaintext: bytes, log2_n: int = FAST, r: int = 8, p: int = 1) -> bytes:
    """An archive made by hand, from the documented layout."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = b"stateset-agent-keys" + bytes([1, 1, log2_n, r, p]) + salt + nonce
    key = Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(PASSPHRASE.encode())
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def contents(**change: Any) -> bytes:
    seed = Signer.generate().seed
    doc: dict[str, Any] = {
        "format": "stateset-agent-keys-archive",
        "version": 1,
        "exported_at": "2026-01-01T00:00:00+00:00",
        "agents": [
            {
                "agent_id": str(AGENT),
                "keys": [
                    {
                        "key_id": 1,
                        "public_key": Signer(seed).public_key.hex(),
                        "status": "active",
                        "created_at": "2026-01-01T00:00:00+00:00",
                        "revoke_after": None,
                        "revoked_at": None,
                        "seed": seed.hex(),
                    }
                ],
            }
        ],
    }
    doc.update(change)
    return json.dumps(doc).encode()


def test_a_hand_made_archive_imports(tmp_path: Path) -> None:
    assert [k.key_id for k in fresh(tmp_path).import_encrypted(seal(contents()), PASSPHRASE)] == [1]


def entry_changed(**change: Any) -> bytes:
    doc = json.loads(contents())
    doc["agents"][0]["keys"][0].update(change)
    return json.dumps(doc).encode()


def key_listed_twice() -> bytes:
    doc = json.loads(contents())
    doc["agents"][0]["keys"] *= 2
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b"[]",
        b"[" * 100_000,
        contents(version=2),
        contents(format="something-else"),
        contents(agents=[{"agent_id": "nope", "keys": []}]),
        contents(agents=[{"agent_id": str(AGENT), "keys": [{"key_id": 1}]}]),
        entry_changed(seed="00" * 32),  # not the public key's seed
        entry_changed(seed=None),  # an active key without its seed
        entry_changed(status="paused"),
        entry_changed(key_id=2**32),
        entry_changed(status="retiring"),  # without revoke_after
        key_listed_twice(),
    ],
    # Named, not shown: the contents hold a fresh random seed, and parallel test workers
    # must collect the same test ids.
    ids=[
        "not-json",
        "a-list",
        "deep-nesting",
        "version-2",
        "other-format",
        "bad-agent-id",
        "key-without-fields",
        "seed-not-the-key",
        "active-without-seed",
        "unknown-status",
        "key-id-too-large",
        "retiring-without-date",
        "key-listed-twice",
    ],
)
def test_authentic_but_garbled_contents_are_not_an_archive(
    tmp_path: Path, plaintext: bytes
) -> None:
    target = fresh(tmp_path)
    with refused(KeyStoreReason.NOT_AN_ARCHIVE):
        target.import_encrypted(seal(plaintext), PASSPHRASE)
    assert target.agents() == []


@pytest.mark.parametrize(
    ("log2_n", "r", "p"),
    [
        (30, 8, 1),  # 128 GiB
        (20, 8, 1),  # 1 GiB
        (18, 32, 1),  # 1 GiB through r
        (15, 255, 1),
        (17, 8, 16),  # within memory, 2**25 work
        (15, 8, 0),
        (15, 0, 1),
        (10, 8, 1),
    ],
)
def test_hostile_kdf_parameters_are_refused_before_deriving(
    archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log2_n: int, r: int, p: int
) -> None:
    def no_derive(*args: Any) -> bytes:
        raise AssertionError("derived a key from an unbounded header")

    monkeypatch.setattr(keystore, "_derive", no_derive)
    hostile = archive[:21] + bytes([log2_n, r, p]) + archive[24:]
    with refused(KeyStoreReason.NOT_AN_ARCHIVE) as info:
        fresh(tmp_path).import_encrypted(hostile, PASSPHRASE)
    assert "scrypt parameters" in str(info.value)


def test_importing_twice_changes_nothing(archive: bytes, tmp_path: Path) -> None:
    target = fresh(tmp_path)
    assert len(target.import_encrypted(archive, PASSPHRASE)) == 4
    before = {p: p.read_bytes() for p in target.path.rglob("*") if p.is_file()}
    assert target.import_encrypted(archive, PASSPHRASE) == []
    assert {p: p.read_bytes() for p in target.path.rglob("*") if p.is_file()} == before


def test_a_key_id_holding_another_seed_conflicts_unless_replaced(
    store: KeyStore, tmp_path: Path
) -> None:
    populate(store)
    data = store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)
    target = fresh(tmp_path)
    mine = target.create(OTHER, 7)  # the same id, another seed
    with refused(KeyStoreReason.KEY_EXISTS) as info:
        target.import_encrypted(data, PASSPHRASE)
    assert "--replace" in str(info.value)
    assert target.agents() == [OTHER]  # all or nothing: AGENT was not imported either
    assert target.keys(OTHER) == [mine]
    target.import_encrypted(data, PASSPHRASE, replace=True)
    assert everything(target) == everything(store)
    assert signatures(target) == signatures(store)


def test_an_import_never_brings_a_revoked_key_back(store: KeyStore, tmp_path: Path) -> None:
    store.create(AGENT)
    old_backup = store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST)
    store.mark_revoked(AGENT, 1, T0)
    assert store.import_encrypted(old_backup, PASSPHRASE) == []
    assert store.keys(AGENT)[0].status == "revoked"
    assert not (store.path / str(AGENT) / "1.key").exists()
    # The other way: a newer archive revokes the key here, and its seed goes.
    target = fresh(tmp_path)
    target.import_encrypted(old_backup, PASSPHRASE)
    assert target.signer(AGENT, 1)
    (changed,) = target.import_encrypted(
        store.export_encrypted(PASSPHRASE, kdf_log2_n=FAST), PASSPHRASE
    )
    assert changed.status == "revoked" and changed.revoked_at == T0
    assert not (target.path / str(AGENT) / "1.key").exists()
    with refused(KeyStoreReason.REVOKED):
        target.signer(AGENT, 1)


# --- sequencer-cli keys ----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    root = typer.Typer(pretty_exceptions_enable=False)
    root.add_typer(keys_app, name="keys")
    monkeypatch.setenv("SEQUENCER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEQUENCER_KEYS_PASSPHRASE", raising=False)

    def run(*args: str, code: int = 0, stdin: str | None = None, **env: str) -> Any:
        result = CliRunner().invoke(root, list(args), input=stdin, env=env or None)
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        assert result.exception is None or isinstance(result.exception, SystemExit), output
        assert result.exit_code == code, output
        if code:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line
        return result

    return run


def passphrase_file(tmp_path: Path, text: str = PASSPHRASE + "\n") -> str:
    path = tmp_path / "passphrase"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_cli_create_and_list(cli: Any, tmp_path: Path) -> None:
    first = cli("keys", "create", "--agent-id", str(AGENT)).stdout.strip()
    cli("keys", "create", "--agent-id", str(AGENT), "--key-id", "5")
    cli("keys", "create", "--agent-id", str(OTHER), "--home", str(tmp_path / "elsewhere"))
    store = KeyStore(tmp_path / "home")
    assert store.signer(AGENT, 1).public_key.hex() == first
    listing = json.loads(cli("keys", "list", "--json").stdout)
    assert listing["count"] == 2
    assert [(k["keyId"], k["status"], k["current"]) for k in listing["keys"]] == [
        (1, "active", False),
        (5, "active", True),
    ]
    table = cli("keys", "list", "--agent-id", str(AGENT)).stdout
    assert first in table and "PUBLIC KEY" in table
    other = json.loads(cli("keys", "list", "--json", "--home", str(tmp_path / "elsewhere")).stdout)
    assert [k["agentId"] for k in other["keys"]] == [str(OTHER)]


def test_cli_usage_errors_exit_2(cli: Any) -> None:
    assert "not a UUID" in cli("keys", "create", "--agent-id", "nope", code=2).stderr
    cli("keys", "create", "--agent-id", str(AGENT), "--key-id", "1")
    assert (
        "KEY_EXISTS"
        in cli("keys", "create", "--agent-id", str(AGENT), "--key-id", "1", code=2).stderr
    )
    cli("keys", "list", "--agent-id", "nope", code=2)


def test_cli_export_needs_encrypt(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    out = tmp_path / "keys.archive"
    result = cli("keys", "export", "--output", str(out), code=2)
    assert "in the clear" in result.stderr and "--encrypt" in result.stderr
    assert not out.exists()
    secret = passphrase_file(tmp_path)
    unknown = cli(
        "keys",
        "export",
        "--encrypt",
        "-o",
        str(out),
        "--passphrase-file",
        secret,
        "--agent-id",
        str(OTHER),
        code=1,
    )
    assert "NOT_FOUND" in unknown.stderr and not out.exists()
    empty = cli(
        "keys", "export", "--encrypt", "-o", str(out), "--home", str(tmp_path / "none"), code=1
    )
    assert "NO_KEY" in empty.stderr  # said before any passphrase is asked for


def test_cli_export_import_round_trip(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    cli("keys", "create", "--agent-id", str(OTHER))
    out = tmp_path / "keys.archive"
    secret = passphrase_file(tmp_path)
    previous = os.umask(0)
    try:
        cli("keys", "export", "--encrypt", "-o", str(out), "--passphrase-file", secret)
    finally:
        os.umask(previous)
    assert mode(out) == 0o600
    written = out.read_bytes()
    refusal = cli(
        "keys", "export", "--encrypt", "-o", str(out), "--passphrase-file", secret, code=2
    )
    assert "already exists" in refusal.stderr and out.read_bytes() == written
    cli(
        "keys",
        "export",
        "--encrypt",
        "-o",
        str(out),
        "--passphrase-file",
        secret,
        "--agent-id",
        str(OTHER),
        "--force",
    )
    assert mode(out) == 0o600 and out.read_bytes() != written

    home2 = str(tmp_path / "home2")
    result = cli("keys", "import", str(out), "--passphrase-file", secret, "--home", home2)
    assert f"key 1 of agent {OTHER}" in result.stdout
    again = cli("keys", "import", str(out), "--passphrase-file", secret, "--home", home2)
    assert "nothing to do" in again.stdout
    source, target = KeyStore(tmp_path / "home"), KeyStore(Path(home2))
    assert target.agents() == [OTHER]
    assert target.signer(OTHER, 1).sign(DIGEST) == source.signer(OTHER, 1).sign(DIGEST)


def test_cli_passphrase_from_the_environment_and_the_prompt(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    out = tmp_path / "a.archive"
    cli("keys", "export", "--encrypt", "-o", str(out), SEQUENCER_KEYS_PASSPHRASE="from env")
    home2 = str(tmp_path / "home2")
    # Asked for once on import, without echo.
    result = cli("keys", "import", str(out), "--home", home2, stdin="from env\n")
    assert "from env" not in result.stdout
    # Asked for twice on export: a typo would lock the keys away.
    out2 = tmp_path / "b.archive"
    cli("keys", "export", "--encrypt", "-o", str(out2), stdin="typed\ntyped\n")
    assert (
        "nothing to do" in cli("keys", "import", str(out2), "--home", home2, stdin="typed\n").stdout
    )
    mismatch = tmp_path / "c.archive"
    cli("keys", "export", "--encrypt", "-o", str(mismatch), stdin="a\nb\n", code=1)
    assert not mismatch.exists()


def test_cli_wrong_passphrase_and_damage_exit_1(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    out = tmp_path / "keys.archive"
    cli(
        "keys",
        "export",
        "--encrypt",
        "-o",
        str(out),
        "--passphrase-file",
        passphrase_file(tmp_path),
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    wrong.chmod(0o600)
    result = cli("keys", "import", str(out), "--passphrase-file", str(wrong), code=1)
    assert "WRONG_PASSPHRASE" in result.stderr
    assert "wrong passphrase, or the archive was altered" in result.stderr
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"hello")
    assert (
        "NOT_AN_ARCHIVE"
        in cli("keys", "import", str(garbage), "--passphrase-file", str(wrong), code=1).stderr
    )
    cli("keys", "import", str(tmp_path / "missing"), "--passphrase-file", str(wrong), code=2)


def test_cli_empty_passphrase_exits_2(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    out = tmp_path / "keys.archive"
    empty = passphrase_file(tmp_path, "\n")
    result = cli("keys", "export", "--encrypt", "-o", str(out), "--passphrase-file", empty, code=2)
    assert "EMPTY_PASSPHRASE" in result.stderr and not out.exists()
    cli("keys", "export", "--encrypt", "-o", str(out), stdin="\n\n", code=2)


def test_cli_conflict_exits_2_and_replace_resolves_it(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    out = tmp_path / "keys.archive"
    secret = passphrase_file(tmp_path)
    cli("keys", "export", "--encrypt", "-o", str(out), "--passphrase-file", secret)
    home2 = str(tmp_path / "home2")
    cli("keys", "create", "--agent-id", str(AGENT), "--home", home2)
    result = cli("keys", "import", str(out), "--passphrase-file", secret, "--home", home2, code=2)
    assert "KEY_EXISTS" in result.stderr
    cli("keys", "import", str(out), "--passphrase-file", secret, "--home", home2, "--replace")
    source, target = KeyStore(tmp_path / "home"), KeyStore(Path(home2))
    assert target.keys(AGENT) == source.keys(AGENT)


def test_cli_insecure_key_directory_exits_1_with_the_fix(cli: Any, tmp_path: Path) -> None:
    cli("keys", "create", "--agent-id", str(AGENT))
    keys_dir = tmp_path / "home" / "keys"
    keys_dir.chmod(0o755)
    result = cli("keys", "list", code=1)
    assert "INSECURE_PERMISSIONS" in result.stderr and f"chmod 700 {keys_dir}" in result.stderr
