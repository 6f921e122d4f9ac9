"""Every domain-separated hash against the reference's known answers and the golden file."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from stateset_sequencer.ves import hashing
from stateset_sequencer.ves.errors import BadLength

DOMAINS = [
    ("DOMAIN_PAYLOAD_PLAIN", 20, "5645535f5041594c4f41445f504c41494e5f5631"),
    ("DOMAIN_PAYLOAD_AAD", 18, "5645535f5041594c4f41445f4141445f5631"),
    ("DOMAIN_PAYLOAD_CIPHER", 21, "5645535f5041594c4f41445f4349504845525f5631"),
    ("DOMAIN_RECIPIENTS", 17, "5645535f524543495049454e54535f5631"),
    ("DOMAIN_EVENTSIG", 15, "5645535f4556454e545349475f5631"),
    ("DOMAIN_LEAF", 11, "5645535f4c4541465f5631"),
    ("DOMAIN_PAD_LEAF", 15, "5645535f5041445f4c4541465f5631"),
    ("DOMAIN_NODE", 11, "5645535f4e4f44455f5631"),
    ("DOMAIN_STREAM", 13, "5645535f53545245414d5f5631"),
    ("DOMAIN_RECEIPT", 14, "5645535f524543454950545f5631"),
    ("DOMAIN_STATE_ROOT", 17, "5645535f53544154455f524f4f545f5631"),
]


@pytest.mark.parametrize(("name", "length", "hexval"), DOMAINS)
def test_domain_constants(name: str, length: int, hexval: str) -> None:
    value = getattr(hashing, name)
    assert len(value) == length
    assert value.hex() == hexval


def test_vector_file_domains_agree_on_hex(
    sig_vectors: dict[str, Any], enc_vectors: dict[str, Any]
) -> None:
    # The enc vector file states lengths 22 and 16 (known slips); its hex is right.
    by_ascii = {getattr(hashing, n).decode(): h for n, _, h in DOMAINS}
    for section in (sig_vectors, enc_vectors):
        for entry in section["domain_separators"]["values"].values():
            assert by_ascii[entry["ascii"]] == entry["hex"]


def test_pad_leaf() -> None:
    assert (
        hashing.PAD_LEAF.hex() == "d9dd0e003ba5370a698013c48ed69c6c41d9ebc1236d44b280c52ceacfdad524"
    )


# The reference's cross-platform known answer (hash.rs test_signing_hash_cross_platform)
# and the yellowpaper's single-line preimage.
E970_PREIMAGE = (
    "5645535f4556454e545349475f56310000000164527dd3a65444109327e58a1492ce7791def158819a4461b5"
    "c97759750ad157861910c97a1d4b6f83d651bbf4ae28498044172674e2430a95ae97ce21c6351b0000000100"
    "0000056f72646572000000074f52442d3030310000000d6f726465722e637265617465640000001832303235"
    "2d31322d32305431373a35313a31302e3234335a000000007777c3fef466a0e9df7e07ea4ff13dc8ffbb9e48"
    "7098f1b65530cdce7b6bbbe70000000000000000000000000000000000000000000000000000000000000000"
)
E970_FIELDS = hashing.SigningFields(
    ves_version=1,
    tenant_id=uuid.UUID("64527dd3-a654-4410-9327-e58a1492ce77"),
    store_id=uuid.UUID("91def158-819a-4461-b5c9-7759750ad157"),
    event_id=uuid.UUID("861910c9-7a1d-4b6f-83d6-51bbf4ae2849"),
    source_agent_id=uuid.UUID("80441726-74e2-430a-95ae-97ce21c6351b"),
    agent_key_id=1,
    entity_type="order",
    entity_id="ORD-001",
    event_type="order.created",
    created_at="2025-12-20T17:51:10.243Z",
    payload_kind=0,
    payload_plain_hash=bytes.fromhex(
        "7777c3fef466a0e9df7e07ea4ff13dc8ffbb9e487098f1b65530cdce7b6bbbe7"
    ),
    payload_cipher_hash=bytes(32),
)


def test_reference_signing_hash_and_220_byte_preimage() -> None:
    preimage = hashing.event_signing_preimage(E970_FIELDS)
    assert len(preimage) == 220 == 171 + len("order") + len("ORD-001") + len("order.created") + 24
    assert preimage.hex() == E970_PREIMAGE
    assert hashing.event_signing_hash(E970_FIELDS).hex() == (
        "e970dfc9ffc285c2c0ba59be5d9c653eee2d1ae4db9b7a02ea3cd62b8e7cf92b"
    )


def test_created_at_is_signed_verbatim() -> None:
    from dataclasses import replace

    same_instant = replace(E970_FIELDS, created_at="2025-12-20T17:51:10.243+00:00")
    assert hashing.event_signing_hash(same_instant) != hashing.event_signing_hash(E970_FIELDS)


def test_yellowpaper_receipt_hash_at_42() -> None:
    esh = hashing.event_signing_hash(E970_FIELDS)
    got = hashing.receipt_hash(
        E970_FIELDS.tenant_id, E970_FIELDS.store_id, E970_FIELDS.event_id, 42, esh
    )
    assert got.hex() == "16c2e63e213cd29b87452f9e302798c044355c4a9ae917595e80539318940c56"


def test_yellowpaper_stream_id_and_state_root(golden: dict[str, Any]) -> None:
    known = golden["computed_placeholders"][
        "repo_known_answers(hash.rs test, yellowpaper, VES_V1_OVERVIEW)"
    ]
    stream = hashing.stream_id(E970_FIELDS.tenant_id, E970_FIELDS.store_id)
    assert stream.hex() == known["yellowpaper_22.9_stream_id"]
    merkle_root = bytes.fromhex("abcdef0123456789" * 4)
    root = hashing.state_root(
        stream=stream,
        prev_state_root=bytes(32),
        merkle_root=merkle_root,
        sequence_start=1,
        sequence_end=10,
        leaf_count=10,
    )
    assert root.hex() == known["yellowpaper_22.9_state_root"]


def test_sig_vector_placeholders(sig_vectors: dict[str, Any], golden: dict[str, Any]) -> None:
    computed = golden["computed_placeholders"]["ves_sig_1_test_vectors.json"]
    for case in sig_vectors["payload_plain_hash"]["vectors"]:
        got = hashing.payload_plain_hash(case["payload"])
        assert "0x" + got.hex() == computed[f"payload_plain_hash:{case['name']}"]
    params = sig_vectors["event_signing_params"]["test_event"]
    fields = hashing.SigningFields(
        ves_version=params["ves_version"],
        tenant_id=uuid.UUID(params["tenant_id"]),
        store_id=uuid.UUID(params["store_id"]),
        event_id=uuid.UUID(params["event_id"]),
        source_agent_id=uuid.UUID(params["source_agent_id"]),
        agent_key_id=params["agent_key_id"],
        entity_type=params["entity_type"],
        entity_id=params["entity_id"],
        event_type=params["event_type"],
        created_at=params["created_at"],
        payload_kind=params["payload_kind"],
        payload_plain_hash=bytes.fromhex(params["payload_plain_hash_hex"]),
        payload_cipher_hash=bytes.fromhex(params["payload_cipher_hash_hex"]),
    )
    # The file says 218 bytes; the preimage it describes is 222 (a known slip).
    assert len(hashing.event_signing_preimage(fields)) == 222
    assert (
        "0x" + hashing.event_signing_hash(fields).hex()
        == (computed["event_signing_params.event_signing_hash"])
    )


def test_enc_vector_salted_plain_hash() -> None:
    salt = bytes(range(1, 17))
    got = hashing.payload_plain_hash({"delta": 100, "reason": "test"}, salt)
    assert got.hex() == "d9faf01d51a58f57acafb13ef03a055a9753350868c856795d4eb83ef42a32b7"


def test_golden_events_hashes(golden: dict[str, Any]) -> None:
    g = golden["golden_example"]
    for ev in g["events"]:
        tenant, store = uuid.UUID(ev["tenant_id"]), uuid.UUID(ev["store_id"])
        plain = hashing.payload_plain_hash(ev["payload"])
        assert "0x" + plain.hex() == ev["payload_plain_hash"]
        fields = hashing.SigningFields(
            ves_version=1,
            tenant_id=tenant,
            store_id=store,
            event_id=uuid.UUID(ev["event_id"]),
            source_agent_id=uuid.UUID(ev["source_agent_id"]),
            agent_key_id=ev["agent_key_id"],
            entity_type=ev["entity_type"],
            entity_id=ev["entity_id"],
            event_type=ev["event_type"],
            created_at=ev["created_at"],
            payload_kind=0,
            payload_plain_hash=plain,
            payload_cipher_hash=bytes(32),
        )
        esh = hashing.event_signing_hash(fields)
        assert esh.hex() == ev["_event_signing_hash"]
        sig = bytes.fromhex(ev["agent_signature"][2:])
        seq = ev["_sequence_number"]
        assert hashing.leaf_hash(tenant, store, seq, esh, sig).hex() == ev["_leaf_hash"]
        receipt = hashing.receipt_hash(tenant, store, fields.event_id, seq, esh)
        assert receipt.hex() == ev["_receipt_hash"]
    assert hashing.stream_id(uuid.UUID(int=1), uuid.UUID(int=2)).hex() == g["stream_id"]


def test_preimage_lengths_match_the_table() -> None:
    t = uuid.UUID(int=1)
    digest = bytes(32)
    # leaf 147, node 75, stream 45, state root 133, receipt 102 bytes of preimage
    assert (
        hashing.leaf_hash(t, t, 1, digest, bytes(64))
        == hashlib.sha256(
            b"VES_LEAF_V1" + t.bytes * 2 + (1).to_bytes(8, "big") + digest + bytes(64)
        ).digest()
    )
    assert len(b"VES_LEAF_V1" + t.bytes * 2 + bytes(8) + digest + bytes(64)) == 147
    assert hashing.node_hash(digest, digest) == hashlib.sha256(b"VES_NODE_V1" + digest * 2).digest()


def test_recipients_hash_uses_binary_entries_in_list_order() -> None:
    enc, ct = bytes(32), bytes(48)
    one = hashing.recipients_hash([(1, enc, ct), (2, enc, ct)])
    other = hashing.recipients_hash([(2, enc, ct), (1, enc, ct)])
    assert one != other
    assert len(hashing.DOMAIN_RECIPIENTS + (b"\0" * 92) * 2) == 17 + 92 * 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nonce": bytes(11)},
        {"aad": bytes(31)},
        {"tag": bytes(15)},
        {"recipients_hash": bytes(33)},
    ],
)
def test_cipher_hash_checks_lengths(kwargs: dict[str, bytes]) -> None:
    base = {
        "nonce": bytes(12),
        "aad": bytes(32),
        "ciphertext": b"x",
        "tag": bytes(16),
        "recipients_hash": bytes(32),
    }
    with pytest.raises(BadLength):
        hashing.payload_cipher_hash(**(base | kwargs))


def test_wrong_types_and_lengths_raise_bad_length() -> None:
    t = uuid.UUID(int=1)
    with pytest.raises(BadLength):
        hashing.leaf_hash(t, t, 1, bytes(31), bytes(64))
    with pytest.raises(BadLength):
        hashing.leaf_hash(t, t, 1, bytes(32), bytes(63))
    with pytest.raises(BadLength):
        hashing.stream_id("00000000-0000-0000-0000-000000000001", t)  # type: ignore[arg-type]
    with pytest.raises(BadLength):
        hashing.payload_plain_hash({}, salt=bytes(15))


def test_the_proof_of_possession_challenge_is_the_domain_then_the_key() -> None:
    public_key = bytes(range(32))
    expected = hashlib.sha256(b"VES_POP_V1" + public_key).digest()
    assert hashing.pop_challenge(public_key) == expected
    with pytest.raises(BadLength):
        hashing.pop_challenge(public_key[:31])
