"""An ingest's answer and the check of each receipt in it against the event it answers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..ves.envelope import VesEventEnvelope
from ..ves.errors import VesError
from ..ves.signing import Receipt, verify_receipt
from .errors import ReceiptMismatch, UnexpectedResponse, UnsignedReceipt
from .shapes import Reply


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


def check_receipts(
    outcome: IngestOutcome,
    events: Sequence[VesEventEnvelope],
    sequencer_public_key: bytes | None,
    *,
    allow_unsigned: bool,
) -> None:
    """Every receipt of ``outcome`` matched to the event sent that it answers."""
    by_id = {e.event_id: e for e in events}
    for receipt in outcome.receipts:
        event = by_id.get(receipt.event_id)
        if event is None:
            raise ReceiptMismatch(f"receipt for an event not sent: {receipt.event_id}")
        check_receipt(receipt, event, sequencer_public_key, allow_unsigned=allow_unsigned)


def ingest_outcome(reply: Reply) -> IngestOutcome:
    """The parsed answer of ``POST /api/v1/ves/events/ingest``."""
    receipts = []
    for index, item in enumerate(reply.objects("receipts", optional=True)):
        try:
            receipts.append(Receipt.from_wire(item))
        except (VesError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(reply.what, f"receipts[{index}]: {exc}") from None
    rejections = []
    for index, item in enumerate(reply.objects("rejections", optional=True)):
        row = Reply(f"{reply.what} rejections[{index}]", item)
        try:
            event_id = uuid.UUID(row.text("event_id"))
        except ValueError:
            raise UnexpectedResponse(row.what, "event_id is not a UUID") from None
        rejections.append(Rejected(event_id, row.text("reason"), row.text("message")))
    return IngestOutcome(
        batch_id=reply.text("batchId"),
        events_accepted=reply.integer("eventsAccepted"),
        events_rejected=reply.integer("eventsRejected"),
        sequence_start=reply.optional_integer("sequenceStart"),
        sequence_end=reply.optional_integer("sequenceEnd"),
        head_sequence=reply.integer("headSequence"),
        receipts=receipts,
        rejections=rejections,
    )
