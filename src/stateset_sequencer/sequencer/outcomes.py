"""What happens to an event at ingest: the outcome types, and the one rule for a known
event id (an exact replay gets its stored receipt back), which both the checks before the
transaction and the stream writer inside it apply."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ..store.records import Existing, StreamKey
from ..ves.envelope import VesEventEnvelope
from ..ves.jsontext import StoredTexts
from ..ves.signing import Receipt


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event refused, with the reference's per-event reason code."""

    event_id: uuid.UUID
    reason: str
    message: str


@dataclass(slots=True)
class IngestResult:
    """What one ingest call did. Its wire form is built by the HTTP layer."""

    batch_id: uuid.UUID
    events_accepted: int
    events_rejected: int
    sequence_start: int | None
    sequence_end: int | None
    head_sequence: int
    rejections: list[Rejection]
    receipts: list[Receipt]


@dataclass(frozen=True, slots=True)
class Verified:
    """An event that passed every per-event check, with what the checks computed that the
    store needs again: its signing hash, the instant its ``created_at`` names, and its
    stored JSON texts."""

    envelope: VesEventEnvelope
    signing_hash: bytes
    created_at: datetime
    texts: StoredTexts


@dataclass(frozen=True, slots=True)
class Accepted:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class Replayed:
    receipt: Receipt


Outcome = Accepted | Replayed | Rejection


def is_exact_replay(stored: VesEventEnvelope, incoming: VesEventEnvelope) -> bool:
    """Same event in every signed and sequencing-relevant field (the PQC scheme and bundle
    are not compared, as in the reference)."""
    skip = {"agent_signature_scheme", "agent_signature_bundle"}
    return bool(stored.model_dump(exclude=skip) == incoming.model_dump(exclude=skip))


def replay_verdict(stream: StreamKey, env: VesEventEnvelope, hit: Existing) -> Receipt | Rejection:
    stored = hit.event.envelope
    if StreamKey(stored.tenant_id, stored.store_id) != stream:
        return Rejection(env.event_id, "duplicate_event_id", "Event ID already exists")
    if not is_exact_replay(stored, env):
        return Rejection(
            env.event_id, "duplicate_event_id", "Event ID already exists with different contents"
        )
    if hit.receipt is None:
        return Rejection(env.event_id, "duplicate_event_id", "Event ID already exists")
    return hit.receipt
