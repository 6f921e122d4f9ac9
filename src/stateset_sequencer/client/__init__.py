"""The typed HTTP client SDK (httpx): what agents, ``sequencer-cli`` and the tests use to
talk to a sequencer — ours or the Rust reference, since the wire format is the same.

Receipts come back parsed and checked: each one's hash is recomputed from the event it
answers, it must be signed, and its signature must verify under the sequencer's public key
(given, or fetched from ``/api/v1/ves/sequencer`` before the first check). An unsigned
receipt (alg ``none``) is accepted only with ``allow_unsigned_receipts``; a wrongly signed
one never is.

:class:`Agent` signs the events it sends, with signing version 2 unless told otherwise
(``ves_version=1`` for a sequencer that accepts nothing newer; PROTOCOL §4.1).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from ..ves import envelope as ves_envelope
from ..ves.envelope import DEFAULT_VES_VERSION, VesEventEnvelope
from ..ves.errors import VesError
from ..ves.signing import Receipt, Signer, parse_public_key, verify_receipt

DEFAULT_TIMEOUT_S = 30.0


class SequencerError(Exception):
    """A non-2xx answer. ``code`` is the body's code in whichever of the reference's three
    error shapes it came; ``reason`` our finer cause when the server gave one."""

    def __init__(
        self, status: int, code: str, message: str, body: Any, reason: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.reason = reason


class ReceiptMismatch(Exception):
    """A receipt that does not answer the event it claims to (wrong hash or signature)."""


class UnsignedReceipt(ReceiptMismatch):
    """A receipt without a signature (alg ``none``), refused unless explicitly allowed."""


@dataclass(frozen=True, slots=True)
class Rejected:
    event_id: uuid.UUID
    reason: str
    message: str


@dataclass(slots=True)
class IngestOutcome:
    batch_id: str
    events_accepted: int
    events_rejected: int
    sequence_start: int | None
    sequence_end: int | None
    head_sequence: int
    receipts: list[Receipt] = field(default_factory=list)
    rejections: list[Rejected] = field(default_factory=list)

    @property
    def replayed(self) -> int:
        """Events already stored that came back with their original receipt."""
        return len(self.receipts) - self.events_accepted


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent's key on one stream: builds and signs its events.

    ``ves_version`` 2 (the default) also signs ``command_id`` and ``base_version``, so no
    relay can change them; an unknown version is refused when the first event is built.
    """

    signer: Signer
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    agent_id: uuid.UUID
    key_id: int = 1
    ves_version: int = DEFAULT_VES_VERSION

    def event(
        self,
        entity_type: str,
        entity_id: str,
        event_type: str,
        payload: Any,
        *,
        command_id: uuid.UUID | None = None,
        base_version: int | None = None,
        event_id: uuid.UUID | None = None,
        created_at: str | None = None,
        recipients: Sequence[tuple[int, bytes]] | None = None,
    ) -> VesEventEnvelope:
        """A signed event; ``created_at`` defaults to now, in milliseconds with ``Z`` (the
        text is signed as it stands)."""
        return ves_envelope.sign_event(
            signer=self.signer,
            tenant_id=self.tenant_id,
            store_id=self.store_id,
            source_agent_id=self.agent_id,
            agent_key_id=self.key_id,
            entity_type=entity_type,
            entity_id=entity_id,
            event_type=event_type,
            created_at=created_at or _now_text(),
            payload=payload,
            event_id=event_id,
            command_id=command_id,
            base_version=base_version,
            recipients=recipients,
            ves_version=self.ves_version,
        )


def _now_text() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _error(response: httpx.Response) -> SequencerError:
    try:
        body: Any = response.json()
    except ValueError:
        return SequencerError(response.status_code, "HTTP_ERROR", response.text[:300], None)
    code, message, reason = "HTTP_ERROR", response.text[:300], None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # ApiError
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            details = error.get("details")
            if isinstance(details, dict) and details.get("reason"):
                reason = str(details["reason"])
        elif isinstance(error, str):  # auth middleware or agent handlers
            code = str(body.get("code", code))
            message = error
    return SequencerError(response.status_code, code, message, body, reason)


def check_receipt(
    receipt: Receipt,
    event: VesEventEnvelope,
    sequencer_public_key: bytes | None = None,
    *,
    allow_unsigned: bool = False,
) -> None:
    """Raise :class:`ReceiptMismatch` unless ``receipt`` answers ``event``: its hash, and
    its signature when ``sequencer_public_key`` is given. An unsigned receipt raises
    :class:`UnsignedReceipt` unless ``allow_unsigned``."""
    if receipt.event_id != event.event_id:
        raise ReceiptMismatch(f"receipt for {receipt.event_id} returned for {event.event_id}")
    try:
        verify_receipt(
            receipt,
            tenant_id=event.tenant_id,
            store_id=event.store_id,
            event_signing_hash=event.signing_hash(),
            sequencer_public_key=None if receipt.unsigned else sequencer_public_key,
        )
    except VesError as exc:
        raise ReceiptMismatch(f"receipt of event {event.event_id}: {exc}") from None
    if receipt.unsigned and not allow_unsigned:
        raise UnsignedReceipt(
            f"receipt of event {event.event_id} is unsigned (alg {receipt.signature_alg!r}); "
            "the sequencer has no receipt-signing key"
        )


class SequencerClient:
    """An async client. Use as ``async with SequencerClient(url, api_key) as client``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        sequencer_public_key: bytes | None = None,
        allow_unsigned_receipts: bool = False,
    ) -> None:
        headers = {"Authorization": f"ApiKey {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
        )
        self.sequencer_public_key = sequencer_public_key
        self.allow_unsigned_receipts = allow_unsigned_receipts
        # Asked at most once: a server without the route (the reference) gets hash checks.
        self._key_asked = sequencer_public_key is not None

    async def __aenter__(self) -> SequencerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any:
        headers = {"content-type": "application/json"} if content is not None else None
        response = await self._http.request(
            method, path, json=json, params=params, content=content, headers=headers
        )
        if response.status_code >= 400:
            raise _error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # --- ingest ---------------------------------------------------------------------------

    async def ingest(
        self, agent_id: uuid.UUID, events: Sequence[VesEventEnvelope], *, check: bool = True
    ) -> IngestOutcome:
        """Send one batch; with ``check``, every receipt is matched to its event and its
        signature verified (:class:`ReceiptMismatch`, :class:`UnsignedReceipt`)."""
        body = {"agentId": str(agent_id), "events": [e.to_wire() for e in events]}
        data = await self.request("POST", "/api/v1/ves/events/ingest", json=body)
        outcome = IngestOutcome(
            batch_id=data["batchId"],
            events_accepted=data["eventsAccepted"],
            events_rejected=data["eventsRejected"],
            sequence_start=data.get("sequenceStart"),
            sequence_end=data.get("sequenceEnd"),
            head_sequence=data["headSequence"],
            receipts=[Receipt.from_wire(r) for r in data.get("receipts", [])],
            rejections=[
                Rejected(uuid.UUID(r["event_id"]), r["reason"], r["message"])
                for r in data.get("rejections", [])
            ],
        )
        if check:
            if not self._key_asked and any(not r.unsigned for r in outcome.receipts):
                await self._fetch_sequencer_key()
            by_id = {e.event_id: e for e in events}
            for receipt in outcome.receipts:
                event = by_id.get(receipt.event_id)
                if event is None:
                    raise ReceiptMismatch(f"receipt for an event not sent: {receipt.event_id}")
                check_receipt(
                    receipt,
                    event,
                    self.sequencer_public_key,
                    allow_unsigned=self.allow_unsigned_receipts,
                )
        return outcome

    async def record(
        self,
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
        data = await self.request(
            "GET", "/api/v1/ves/head", params={"tenant_id": tenant_id, "store_id": store_id}
        )
        return int(data["head_sequence"])

    async def events(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, start: int = 1, limit: int = 1000
    ) -> list[dict[str, Any]]:
        params = {"tenant_id": tenant_id, "store_id": store_id, "from": start, "limit": limit}
        data = await self.request("GET", "/api/v1/ves/events", params=params)
        return [item["envelope"] for item in data["events"]]

    async def iter_events(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, start: int = 1, page: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``start`` to the head, one page at a time, each the stored
        envelope with its ``sequence_number`` and ``sequenced_at``. The server says where
        the next page starts (``next_sequence``, also after a page its byte cap cut short)
        and whether the head lies beyond it."""
        while True:
            params = {"tenant_id": tenant_id, "store_id": store_id, "from": start, "limit": page}
            data = await self.request("GET", "/api/v1/ves/events", params=params)
            batch: list[dict[str, Any]] = data["events"]
            for item in batch:
                yield item["envelope"]
            if not batch or data.get("has_more") is not True:
                return
            start = int(data["next_sequence"])

    async def event(self, event_id: uuid.UUID) -> dict[str, Any]:
        data: dict[str, Any] = await self.request("GET", f"/api/v1/ves/events/{event_id}")
        return data

    async def entity(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        entity_type: str,
        entity_id: str,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        path = f"/api/v1/ves/entities/{_segment(entity_type)}/{_segment(entity_id)}"
        params = {"tenant_id": tenant_id, "store_id": store_id, "from": offset, "limit": limit}
        data: dict[str, Any] = await self.request("GET", path, params=params)
        return data

    async def sequencer_info(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.request("GET", "/api/v1/ves/sequencer")
        return data

    async def use_sequencer_key(self) -> bytes | None:
        """Fetch the receipt key so that later receipts are signature-checked."""
        info = await self.sequencer_info()
        key = info.get("publicKey")
        try:
            self.sequencer_public_key = parse_public_key(key) if key else None
        except VesError as exc:
            raise ReceiptMismatch(f"the sequencer publishes an unusable key: {exc}") from None
        self._key_asked = True
        return self.sequencer_public_key

    # --- agent signing keys ---------------------------------------------------------------

    async def register_agent_key(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        key_id: int,
        public_key: bytes,
        *,
        valid_from: str | None = None,
        valid_to: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "agentId": str(agent_id),
            "keyId": key_id,
            "publicKey": "0x" + public_key.hex(),
        }
        if valid_from is not None:
            body["validFrom"] = valid_from
        if valid_to is not None:
            body["validTo"] = valid_to
        data: dict[str, Any] = await self.request("POST", "/api/v1/agents/keys", json=body)
        return data

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"tenant_id": tenant_id}
        if agent_id is not None:
            params["agent_id"] = agent_id
        data = await self.request("GET", "/api/v1/agents/keys", params=params)
        keys: list[dict[str, Any]] = data["keys"]
        return keys

    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> dict[str, Any]:
        data: dict[str, Any] = await self.request(
            "DELETE", f"/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}"
        )
        return data

    # --- API keys (admin) -----------------------------------------------------------------

    async def create_api_key(
        self,
        tenant_id: uuid.UUID,
        *,
        store_ids: Sequence[uuid.UUID] = (),
        write: bool = False,
        admin: bool = False,
        agent_id: uuid.UUID | None = None,
        rate_limit: int | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "storeIds": [str(s) for s in store_ids],
            "read": True,
            "write": write,
            "admin": admin,
        }
        if agent_id is not None:
            body["agentId"] = str(agent_id)
        if rate_limit is not None:
            body["rateLimit"] = rate_limit
        data = await self.request("POST", "/api/v1/admin/api-keys", json=body)
        return str(data["apiKey"])

    # --- health ---------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.request("GET", "/health")
        return data


def _segment(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
