"""The client SDK refuses receipts it cannot trust: an unsigned one unless allowed, and a
wrongly signed one always. The server side never issues either; a mock transport does."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from stateset_sequencer.client import ReceiptMismatch, SequencerClient, UnsignedReceipt
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing

SIGNED = signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED)
OTHER = signing.ReceiptSigner(uuid.UUID(int=7), bytes([1]) * 32)
EVENTS = [kit.event(i) for i in range(2)]


def transport(
    receipts: signing.ReceiptSigner, published: signing.ReceiptSigner | None, asked: list[str]
) -> httpx.MockTransport:
    """Ingest answers with ``receipts``; ``/ves/sequencer`` publishes ``published``'s key
    (404 when None, as a server without the route)."""

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/api/v1/ves/sequencer":
            if published is None:
                return httpx.Response(404, json={"error": "not found", "code": "NOT_FOUND"})
            return httpx.Response(200, json=kit.sequencer_answer(published))
        body = json.loads(request.content)
        return httpx.Response(200, json=kit.ingest_answer(body, receipts))

    return httpx.MockTransport(handle)


def client(
    receipts: signing.ReceiptSigner,
    published: signing.ReceiptSigner | None,
    asked: list[str],
    **options: object,
) -> SequencerClient:
    return SequencerClient(
        "http://sequencer.test",
        transport=transport(receipts, published, asked),
        **options,  # type: ignore[arg-type]
    )


async def test_signed_receipts_are_checked_under_the_published_key() -> None:
    asked: list[str] = []
    async with client(SIGNED, SIGNED, asked) as c:
        outcome = await c.ingest(kit.AGENT_ID, EVENTS)
        assert outcome.events_accepted == 2 and c.sequencer_public_key == SIGNED.public_key
        await c.ingest(kit.AGENT_ID, EVENTS)
    # The key is fetched once, before the first check.
    assert asked.count("/api/v1/ves/sequencer") == 1


async def test_a_wrongly_signed_receipt_is_refused_even_when_unsigned_ones_are_allowed() -> None:
    for allow in (False, True):
        async with client(OTHER, SIGNED, [], allow_unsigned_receipts=allow) as c:
            with pytest.raises(ReceiptMismatch, match="signature does not verify") as info:
                await c.ingest(kit.AGENT_ID, EVENTS)
            assert not isinstance(info.value, UnsignedReceipt)
    # A pinned key is used as given, without asking the server.
    asked: list[str] = []
    async with client(SIGNED, SIGNED, asked, sequencer_public_key=OTHER.public_key) as c:
        with pytest.raises(ReceiptMismatch, match="signature does not verify"):
            await c.ingest(kit.AGENT_ID, EVENTS)
    assert "/api/v1/ves/sequencer" not in asked


async def test_an_unsigned_receipt_is_refused_unless_allowed() -> None:
    unsigned = kit.LegacyUnsignedReceipts()
    async with client(unsigned, SIGNED, []) as c:
        with pytest.raises(UnsignedReceipt, match="unsigned"):
            await c.ingest(kit.AGENT_ID, EVENTS)
    # Even with a key at hand: the key cannot make an unsigned receipt signed.
    async with client(unsigned, None, [], sequencer_public_key=SIGNED.public_key) as c:
        with pytest.raises(UnsignedReceipt):
            await c.ingest(kit.AGENT_ID, EVENTS)
    async with client(unsigned, None, [], allow_unsigned_receipts=True) as c:
        outcome = await c.ingest(kit.AGENT_ID, EVENTS)
        assert [r.unsigned for r in outcome.receipts] == [True, True]


async def test_without_the_key_route_signed_receipts_get_their_hash_checked() -> None:
    """A server without ``/api/v1/ves/sequencer`` (the reference): nothing to check a
    signature against, so the hash is checked; an unsigned receipt is still refused."""
    async with client(SIGNED, None, []) as c:
        assert (await c.ingest(kit.AGENT_ID, EVENTS)).events_accepted == 2
        assert c.sequencer_public_key is None
    async with client(kit.LegacyUnsignedReceipts(), None, []) as c:
        with pytest.raises(UnsignedReceipt):
            await c.ingest(kit.AGENT_ID, EVENTS)
