"""The per-page work that depends on nothing but the page: run in a worker process on a
large verification, inline on a small one, by the same function (:func:`compute`).

Per event: the envelope validated as ingest validates it and its signing hash
(``ves.envelope.validate``), the agent's signature under the key the agent-signature check
named, the receipt's hash and signature (``ves.signing.verify_receipt``) and the Merkle
leaf (``sequencer.commitments.event_leaf``). Everything that depends on order or on the
store (sequence continuity, key validity, commitments) stays with the checks on the event
loop, which read the answers from :class:`Computed`.

Two Ed25519 verifications per event cost more than the rest together, and validating an
envelope (its JCS payload hash and signing preimage in Python) most of the rest, so this
is the part worth spreading over the cores. What crosses to a worker is compact
(:func:`pack`): plain tuples of bytes, text and numbers, each stream id, agent id, key,
time and receipt signer sent once per page; pickling the decoded models instead cost
about as much as the work itself. The answer is compact too: the signing hashes and
leaves as one byte string each, a byte per signature, and the rare faults by index.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...sequencer.commitments import event_leaf
from ...store.records import StoredEvent
from ...ves import envelope as ves_envelope
from ...ves.envelope import EncryptedPayload, VesEventEnvelope
from ...ves.errors import EnvelopeInvalid, ReceiptHashMismatch, VesError
from ...ves.signing import Receipt, is_valid, verify_receipt

Record = tuple[StoredEvent, Receipt | None]
# (code, message) of a receipt whose hash or signature fails, as the receipt check words it.
ReceiptFault = tuple[str, str]


@dataclass(slots=True)
class Work:
    """What the checks ask to have computed for a page (``Check.ask``): the key to verify
    each event's agent signature under (None: not asked), the sequencer key receipts are
    verified under (None: hashes only), and whether Merkle leaves are wanted."""

    agent_keys: list[bytes | None]
    receipt_key: bytes | None = None
    leaves: bool = False


@dataclass(slots=True)
class Computed:
    """The answers, one entry per event of the page, in page order. ``agent_ok`` is None
    where no agent signature was asked for or the envelope is invalid; ``receipt_faults``
    None where the receipt's hash (and, with a key, signature) verify or there is no
    receipt."""

    signing_hashes: list[bytes | None] = field(default_factory=list)
    problems: list[EnvelopeInvalid | None] = field(default_factory=list)
    agent_ok: list[bool | None] = field(default_factory=list)
    receipt_faults: list[ReceiptFault | None] = field(default_factory=list)
    leaves: list[bytes] | None = None


def compute(records: Sequence[Record], work: Work) -> Computed:
    """Every answer :class:`Work` asks for, for ``records``."""
    out = Computed()
    leaves: list[bytes] | None = [] if work.leaves else None
    for (event, receipt), key in zip(records, work.agent_keys, strict=True):
        env = event.envelope
        digest: bytes | None
        try:
            digest = ves_envelope.validate(env)
            out.problems.append(None)
        except EnvelopeInvalid as exc:
            digest = None
            out.problems.append(exc)
        out.signing_hashes.append(digest)
        out.agent_ok.append(
            None if key is None or digest is None else is_valid(key, digest, env.agent_signature)
        )
        out.receipt_faults.append(
            None if receipt is None else _receipt_fault(event, receipt, digest, work.receipt_key)
        )
        if leaves is not None:
            # The recomputed signing hash where the envelope is valid: a commitment is
            # checked against the content as signed, not only the stored column.
            leaves.append(event_leaf(event, digest))
    out.leaves = leaves
    return out


def _receipt_fault(
    event: StoredEvent, receipt: Receipt, digest: bytes | None, key: bytes | None
) -> ReceiptFault | None:
    env = event.envelope
    try:
        verify_receipt(
            receipt,
            tenant_id=env.tenant_id,
            store_id=env.store_id,
            # The event's own hash when it is valid: a receipt binds the content as
            # signed, not only the stored column.
            event_signing_hash=digest if digest is not None else event.event_signing_hash,
            # An allowed unsigned receipt is counted, not reported; anything else that
            # claims a signature (another alg, an empty one) must verify.
            sequencer_public_key=None if receipt.unsigned else key,
        )
    except ReceiptHashMismatch as exc:
        return "receipt_hash_mismatch", str(exc)
    except VesError as exc:
        return "receipt_signature_invalid", str(exc)
    return None


# --- the compact form that crosses to a worker ------------------------------------------------

# Envelope fields that cross as they are, in this order, after the ids.
_PLAIN_FIELDS = (
    "ves_version",
    "agent_key_id",
    "entity_type",
    "entity_id",
    "event_type",
    "created_at",
    "payload_kind",
    "payload",
    "payload_plain_hash",
    "payload_cipher_hash",
    "agent_signature",
    "agent_signature_scheme",
    "agent_signature_bundle",
    "base_version",
)
_plain_fields = operator.attrgetter(*_PLAIN_FIELDS)

Packed = tuple[list[Any], list[tuple[Any, ...]], bytes | None, bool]


class _Table:
    """Values repeated across a page (stream ids, agent, key, time), sent once each."""

    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.index: dict[Hashable, int] = {}
        self.values: list[Any] = []

    def __call__(self, value: Hashable) -> int:
        at = self.index.get(value)
        if at is None:
            at = self.index[value] = len(self.values)
            self.values.append(value)
        return at


def pack(records: Sequence[Record], work: Work) -> Packed:
    """``records`` and ``work`` as plain values (see the module docstring)."""
    table = _Table()
    rows: list[tuple[Any, ...]] = []
    for (event, receipt), key in zip(records, work.agent_keys, strict=True):
        env = event.envelope
        encrypted = env.payload_encrypted
        rows.append(
            (
                env.event_id.bytes,
                table(env.tenant_id.bytes),
                table(env.store_id.bytes),
                table(env.source_agent_id.bytes),
                None if env.command_id is None else env.command_id.bytes,
                None if encrypted is None else encrypted.model_dump(),
                table(frozenset(env.model_fields_set)),
                _plain_fields(env),
                event.sequence_number,
                table(event.sequenced_at),
                event.event_signing_hash,
                None if key is None else table(key),
                None
                if receipt is None
                else (
                    table(receipt.sequencer_id.bytes),
                    receipt.event_id.bytes,
                    receipt.sequence_number,
                    table(receipt.sequenced_at),
                    receipt.receipt_hash,
                    table(receipt.signature_alg),
                    receipt.sequencer_signature,
                    receipt.sequencer_key_version,
                ),
            )
        )
    return table.values, rows, work.receipt_key, work.leaves


def _envelope(fields: dict[str, Any], fields_set: frozenset[str]) -> VesEventEnvelope:
    """The envelope of ``fields``, rebuilt without validation as unpickling rebuilds a
    model (pydantic's own ``__setstate__``): its fields are the ones the store already
    parsed, and ``validate`` then judges them as it judged the originals.
    ``model_construct``, which also resolves defaults and aliases, cost a quarter of a
    page's computation."""
    env = VesEventEnvelope.__new__(VesEventEnvelope)
    env.__setstate__(
        {
            "__dict__": fields,
            "__pydantic_fields_set__": set(fields_set),
            "__pydantic_extra__": None,
            "__pydantic_private__": None,
        }
    )
    return env


def unpack(packed: Packed) -> tuple[list[Record], Work]:
    """The inverse of :func:`pack`."""
    values, rows, receipt_key, leaves = packed
    uuids: dict[int, uuid.UUID] = {}

    def as_uuid(at: int) -> uuid.UUID:
        got = uuids.get(at)
        if got is None:
            got = uuids[at] = uuid.UUID(bytes=values[at])
        return got

    records: list[Record] = []
    keys: list[bytes | None] = []
    encrypted_model = EncryptedPayload.model_validate
    for row in rows:
        (event_id, tenant, store, agent, command, encrypted, fields_set, plain,
         sequence, at, stored_hash, key, receipt_row) = row  # fmt: skip
        fields = dict(zip(_PLAIN_FIELDS, plain, strict=True))
        fields["event_id"] = uuid.UUID(bytes=event_id)
        fields["tenant_id"] = as_uuid(tenant)
        fields["store_id"] = as_uuid(store)
        fields["source_agent_id"] = as_uuid(agent)
        fields["command_id"] = None if command is None else uuid.UUID(bytes=command)
        fields["payload_encrypted"] = None if encrypted is None else encrypted_model(encrypted)
        event = StoredEvent(
            _envelope(fields, values[fields_set]), sequence, values[at], stored_hash
        )
        receipt = None
        if receipt_row is not None:
            signer, rid, rseq, rat, rhash, alg, signature, version = receipt_row
            receipt = Receipt(
                sequencer_id=as_uuid(signer),
                event_id=uuid.UUID(bytes=rid),
                sequence_number=rseq,
                sequenced_at=values[rat],
                receipt_hash=rhash,
                signature_alg=values[alg],
                sequencer_signature=signature,
                sequencer_key_version=version,
            )
        records.append((event, receipt))
        keys.append(None if key is None else values[key])
    return records, Work(keys, receipt_key, leaves)


AnswerPacked = tuple[bytes, dict[int, tuple[str, str]], bytes, dict[int, ReceiptFault], bytes]

_NOT_ASKED = 2


def compute_packed(packed: Packed) -> AnswerPacked:
    """Run in a worker process: :func:`compute` of a packed page, answered compactly."""
    records, work = unpack(packed)
    done = compute(records, work)
    problems = {i: (p.reason, p.message) for i, p in enumerate(done.problems) if p is not None}
    hashes = b"".join(h if h is not None else bytes(32) for h in done.signing_hashes)
    agent = bytes(_NOT_ASKED if ok is None else int(ok) for ok in done.agent_ok)
    faults = {i: f for i, f in enumerate(done.receipt_faults) if f is not None}
    return hashes, problems, agent, faults, b"".join(done.leaves or ())


def answers(packed: AnswerPacked, count: int, leaves: bool) -> Computed:
    """The parent's side of :func:`compute_packed`: the :class:`Computed` it stands for."""
    hashes, problems, agent, faults, leaf_bytes = packed
    out = Computed()
    for i in range(count):
        problem = problems.get(i)
        out.problems.append(None if problem is None else EnvelopeInvalid(*problem))
        out.signing_hashes.append(None if problem is not None else hashes[i * 32 : i * 32 + 32])
        out.agent_ok.append(None if agent[i] == _NOT_ASKED else bool(agent[i]))
        out.receipt_faults.append(faults.get(i))
    if leaves:
        out.leaves = [leaf_bytes[i * 32 : i * 32 + 32] for i in range(count)]
    return out
