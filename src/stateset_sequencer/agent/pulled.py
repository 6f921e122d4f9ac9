"""Checking what a pull brings before anything of it is kept: each event's envelope, its
agent signature (with the keys the sequencer lists), and its receipt."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ..client import ReceiptMismatch, SequencerClient, SequencerError, check_receipt
from ..ves import envelope as ves_envelope
from ..ves.errors import VesError
from ..ves.jsontext import dump_json
from ..ves.signing import Receipt, parse_public_key, verify
from .config import AgentConfig
from .outbox import Outbox, OutboxEvent, PulledEvent, State
from .reports import AgentError


async def check_pulled(
    client: SequencerClient,
    keys: KeyBook,
    config: AgentConfig,
    outbox: Outbox,
    item: dict[str, Any],
) -> tuple[PulledEvent, OutboxEvent | None]:
    """One served event, checked: its envelope, that it is of this stream, its agent
    signature, and its receipt (this outbox's own, or fetched) under the sequencer's key;
    with the outbox's own row for it, if it is one of ours."""
    sequence = item.get("sequence_number")
    sequenced_at = item.get("sequenced_at")
    if type(sequence) is not int or not isinstance(sequenced_at, str):
        raise AgentError("pulled_event_invalid", "a pulled event has no sequence number")
    try:
        env = ves_envelope.parse_envelope(item)
        signing_hash = ves_envelope.validate(env)
    except (VesError, ValueError) as exc:
        raise AgentError(
            "pulled_event_invalid",
            f"event at sequence {sequence} is not a valid envelope: {exc}",
        ) from None
    if env.tenant_id != config.tenant_id or env.store_id != config.store_id:
        raise AgentError(
            "pulled_event_invalid", f"event at sequence {sequence} belongs to another stream"
        )
    public_key = await keys.get(env.source_agent_id, env.agent_key_id)
    try:
        verify(public_key, signing_hash, env.agent_signature)
    except VesError:
        raise AgentError(
            "pulled_signature_invalid",
            f"event {env.event_id} at sequence {sequence}: its agent signature does not "
            "verify; nothing from it on was stored",
        ) from None
    own = outbox.get(env.event_id)
    receipt = own.receipt if own is not None and own.state is State.ACKED else None
    if receipt is None:
        detail = await client.event(env.event_id)
        wire = detail.get("receipt") if isinstance(detail, dict) else None
        if not isinstance(wire, dict):
            raise AgentError(
                "pulled_receipt_missing",
                f"event {env.event_id} at sequence {sequence}: the sequencer returned no "
                "receipt for it",
            )
        try:
            receipt = Receipt.from_wire(wire)
        except VesError as exc:
            raise AgentError("pulled_receipt_invalid", f"event {env.event_id}: {exc}") from None
    if client.sequencer_public_key is None and not client.allow_unsigned_receipts:
        await client.use_sequencer_key()
    try:
        check_receipt(
            receipt,
            env,
            client.sequencer_public_key,
            allow_unsigned=client.allow_unsigned_receipts,
        )
    except ReceiptMismatch as exc:
        raise AgentError("pulled_receipt_invalid", str(exc)) from None
    if receipt.sequence_number != sequence:
        raise AgentError(
            "pulled_receipt_invalid",
            f"event {env.event_id}: served at sequence {sequence}, receipted at "
            f"{receipt.sequence_number}",
        )
    return (
        PulledEvent(sequence, dump_json(env.to_wire()), receipt, sequenced_at, env),
        own,
    )


class KeyBook:
    """Agents' public keys by (agent, key id), asked once per agent."""

    def __init__(self, client: SequencerClient, tenant_id: uuid.UUID) -> None:
        self._client = client
        self._tenant = tenant_id
        self._keys: dict[tuple[uuid.UUID, int], bytes] = {}
        self._asked: set[uuid.UUID | None] = set()
        # Events are checked concurrently: one lookup at a time, so that a second event of
        # the same agent waits for the first one's answer instead of finding it "asked".
        self._lock = asyncio.Lock()

    async def get(self, agent_id: uuid.UUID, key_id: int) -> bytes:
        async with self._lock:
            return await self._get(agent_id, key_id)

    async def _get(self, agent_id: uuid.UUID, key_id: int) -> bytes:
        found = self._keys.get((agent_id, key_id))
        if found is not None:
            return found
        for scope in (None, agent_id):
            if scope in self._asked:
                continue
            self._asked.add(scope)
            try:
                listed = await self._client.list_agent_keys(self._tenant, scope)
            except SequencerError as exc:
                if exc.status == 403:
                    continue  # a store-scoped key: try the agent's own keys
                raise
            for item in listed:
                try:
                    self._keys[(uuid.UUID(str(item["agentId"])), int(item["keyId"]))] = (
                        parse_public_key(str(item["publicKey"]))
                    )
                except (KeyError, TypeError, ValueError, VesError):
                    continue
            found = self._keys.get((agent_id, key_id))
            if found is not None:
                return found
        raise AgentError(
            "pulled_key_unknown",
            f"cannot verify events of agent {agent_id} key {key_id}: the sequencer does not "
            "list that key to this API key (pulling other agents' events needs tenant-wide "
            "read)",
        )
