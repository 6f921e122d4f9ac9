"""Ingest and the stream's reads: events, entities, the receipt key, agent cursors and
projections."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..ves.envelope import VesEventEnvelope
from ..ves.errors import VesError
from ..ves.signing import parse_public_key
from .core import ClientCore, segment
from .envelopes import Agent
from .errors import ReceiptMismatch, SequencerError
from .receipts import IngestOutcome, check_receipts, ingest_outcome
from .shapes import Reply

INGEST = "/api/v1/ves/events/ingest"
EVENTS = "/api/v1/ves/events"


def _envelopes(reply: Reply) -> list[dict[str, Any]]:
    return [Reply(reply.what, item).child("envelope").data for item in reply.objects("events")]


class EventRoutes(ClientCore):
    # --- ingest ---------------------------------------------------------------------------

    async def ingest(
        self, agent_id: uuid.UUID, events: Sequence[VesEventEnvelope], *, check: bool = True
    ) -> IngestOutcome:
        """Send one batch; with ``check``, every receipt is matched to its event and its
        signature verified (:class:`ReceiptMismatch`, :class:`UnsignedReceipt`). Retried
        as an idempotent call: a batch sent twice is stored once, and the second answer
        carries the stored receipts."""
        body = {"agentId": str(agent_id), "events": [e.to_wire() for e in events]}
        outcome = ingest_outcome(await self._reply("POST", INGEST, json=body, idempotent=True))
        if check:
            if not self._key_asked and any(not r.unsigned for r in outcome.receipts):
                await self._fetch_sequencer_key()
            check_receipts(
                outcome,
                events,
                self.sequencer_public_key,
                allow_unsigned=self.allow_unsigned_receipts,
            )
        return outcome

    async def record(
        self,
        /,
        agent: Agent,
        entity_type: str,
        entity_id: str,
        event_type: str,
        payload: Any,
        **options: Any,
    ) -> tuple[VesEventEnvelope, IngestOutcome]:
        """Sign one event with ``agent`` (``options`` as :meth:`Agent.event` takes them)
        and send it; a rejection comes back in the outcome, not as an exception."""
        event = agent.event(entity_type, entity_id, event_type, payload, **options)
        return event, await self.ingest(agent.agent_id, [event])

    async def _fetch_sequencer_key(self) -> None:
        try:
            await self.use_sequencer_key()
        except SequencerError as exc:
            if exc.status != 404:
                raise
            self._key_asked = True

    # --- reads ----------------------------------------------------------------------------

    async def head(self, tenant_id: uuid.UUID, store_id: uuid.UUID) -> int:
        params = {"tenant_id": tenant_id, "store_id": store_id}
        return (await self._reply("GET", "/api/v1/ves/head", params=params)).integer(
            "head_sequence"
        )

    async def events(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, start: int = 1, limit: int = 1000
    ) -> list[dict[str, Any]]:
        params = {"tenant_id": tenant_id, "store_id": store_id, "from": start, "limit": limit}
        return _envelopes(await self._reply("GET", EVENTS, params=params))

    async def iter_events(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, start: int = 1, page: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``start`` to the head, one page at a time, each the stored
        envelope with its ``sequence_number`` and ``sequenced_at``. The server says where
        the next page starts (``next_sequence``, also after a page its byte cap cut short)
        and whether the head lies beyond it."""
        while True:
            params = {"tenant_id": tenant_id, "store_id": store_id, "from": start, "limit": page}
            reply = await self._reply("GET", EVENTS, params=params)
            batch = _envelopes(reply)
            for envelope in batch:
                yield envelope
            if not batch or reply.data.get("has_more") is not True:
                return
            start = reply.integer("next_sequence")

    async def event(self, event_id: uuid.UUID) -> dict[str, Any]:
        """One event (``event``) with its receipt (``receipt``, null when none)."""
        return await self._object("GET", f"{EVENTS}/{event_id}")

    async def entity(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        entity_type: str,
        entity_id: str,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        path = f"/api/v1/ves/entities/{segment(entity_type)}/{segment(entity_id)}"
        params = {"tenant_id": tenant_id, "store_id": store_id, "from": offset, "limit": limit}
        return await self._object("GET", path, params=params)

    async def sequencer_info(self) -> dict[str, Any]:
        return await self._object("GET", "/api/v1/ves/sequencer")

    async def use_sequencer_key(self) -> bytes | None:
        """Fetch the receipt key so that later receipts are signature-checked."""
        info = await self.sequencer_info()
        key = info.get("publicKey")
        try:
            self.sequencer_public_key = parse_public_key(key) if key else None
        except (VesError, TypeError) as exc:
            raise ReceiptMismatch(f"the sequencer publishes an unusable key: {exc}") from None
        self._key_asked = True
        return self.sequencer_public_key

    # --- agent cursors (docs/CURSORS.md) --------------------------------------------------

    async def get_cursor(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, agent_id: uuid.UUID
    ) -> dict[str, Any]:
        """How far ``agent_id`` has processed the stream: ``acknowledgedSequence`` (0 when
        never), ``headSequence``, ``lag``, ``updatedAt``."""
        params = {"tenant_id": tenant_id, "store_id": store_id}
        return await self._object("GET", f"/api/v1/ves/cursors/{agent_id}", params=params)

    async def put_cursor(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        agent_id: uuid.UUID,
        acknowledged_sequence: int,
    ) -> dict[str, Any]:
        """Raise the agent's cursor to ``acknowledged_sequence``; a lower one leaves it
        where it is, and the answer is the stored cursor either way."""
        body = {
            "tenantId": str(tenant_id),
            "storeId": str(store_id),
            "sequenceNumber": acknowledged_sequence,
        }
        return await self._object("PUT", f"/api/v1/ves/cursors/{agent_id}", json=body)

    # --- projections ----------------------------------------------------------------------

    async def get_projection(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        entity_type: str,
        entity_id: str,
        *,
        source: str = "ves",
    ) -> dict[str, Any]:
        """The document the projection worker folded for one entity, with its
        ``version`` (events folded so far); 404 before its first event is folded."""
        path = f"/api/v1/projections/{segment(entity_type)}/{segment(entity_id)}"
        params = {"tenant_id": tenant_id, "store_id": store_id, "source": source}
        return await self._object("GET", path, params=params)
