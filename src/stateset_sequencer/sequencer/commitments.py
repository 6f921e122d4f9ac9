"""Commitments over stored events: the Merkle leaf of a stored event.

The commitment engine (a later issue) grows here; the verifier and ``doctor`` already take
their leaves from :func:`event_leaf`, so what they recompute is what the engine commits.
"""

from __future__ import annotations

from ..store.records import StoredEvent
from ..ves import hashing


def event_leaf(event: StoredEvent, signing_hash: bytes | None = None) -> bytes:
    """The Merkle leaf of a stored event (VES_PROTOCOL §6.1): its stream, sequence number,
    ``event_signing_hash`` and agent signature.

    ``signing_hash`` replaces the stored ``event_signing_hash`` column: the verifier passes
    the hash it recomputed from the stored fields, so that a commitment is checked
    against the content as signed rather than only against the column.
    """
    env = event.envelope
    return hashing.leaf_hash(
        env.tenant_id,
        env.store_id,
        event.sequence_number,
        event.event_signing_hash if signing_hash is None else signing_hash,
        env.agent_signature,
    )
