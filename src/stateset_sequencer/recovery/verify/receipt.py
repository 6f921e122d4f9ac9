"""Receipts: one per event, naming it, and its hash and signature verify."""

from __future__ import annotations

from datetime import datetime

from ...store.records import StoredEvent
from ...ves.codec import parse_rfc3339
from ...ves.errors import VesError
from ...ves.signing import Receipt
from .check import Check, Chunk, Examined, Finding
from .compute import ReceiptFault


class ReceiptCheck(Check):
    """A receipt is stored for every event, names it, carries its sequence number and
    time, its hash recomputes, and it is signed and its signature verifies under the
    sequencer's key. An unsigned receipt (alg ``none``, as older versions stored without a
    key) is a finding unless ``allow_unsigned``, when it is counted in the status line;
    without a sequencer key, signed ones are counted there too."""

    name = "receipt"

    def __init__(self, sequencer_public_key: bytes | None, *, allow_unsigned: bool = False) -> None:
        self._key = sequencer_public_key
        self._allow_unsigned = allow_unsigned
        self._unsigned = 0
        self._signed_unchecked = 0

    def ask(self, chunk: Chunk) -> None:
        chunk.work.receipt_key = self._key

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined()
        unsigned = signed_unchecked = 0
        # One ingest batch shares one sequenced_at: parse each distinct text once.
        times: dict[str, datetime] = {}
        for (event, receipt), fault in zip(
            chunk.records, chunk.computed.receipt_faults, strict=True
        ):
            problem = self._problem(event, receipt, fault, times)
            if receipt is not None and problem is None:
                if receipt.unsigned:
                    unsigned += 1
                elif self._key is None:
                    signed_unchecked += 1
            if problem is not None:
                code, text = problem
                out.findings.append(
                    Finding(chunk.run.stream, event.sequence_number, self.name, code, text)
                )
        out.data = (unsigned, signed_unchecked)
        return out

    def _problem(
        self,
        event: StoredEvent,
        receipt: Receipt | None,
        fault: ReceiptFault | None,
        times: dict[str, datetime],
    ) -> tuple[str, str] | None:
        if receipt is None:
            return "receipt_missing", "no receipt stored for the event"
        if receipt.event_id != event.envelope.event_id:
            return "receipt_mismatch", f"receipt names event {receipt.event_id}"
        if receipt.sequence_number != event.sequence_number:
            return "receipt_mismatch", f"receipt carries sequence {receipt.sequence_number}"
        try:
            at = times.get(receipt.sequenced_at)
            if at is None:
                at = times[receipt.sequenced_at] = parse_rfc3339(receipt.sequenced_at)
        except VesError:
            return "receipt_mismatch", f"receipt sequenced_at {receipt.sequenced_at!r} unreadable"
        if at != event.sequenced_at:
            return "receipt_mismatch", f"receipt sequenced_at {receipt.sequenced_at} differs"
        # Its hash and signature (``ves.signing.verify_receipt``, computed with the
        # page: ``compute``).
        if fault is not None:
            return fault
        if receipt.unsigned and not self._allow_unsigned:
            return (
                "receipt_unsigned",
                "receipt is unsigned (alg 'none'); --allow-unsigned-receipts accepts "
                "receipts stored so by older versions",
            )
        return None

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        unsigned, signed_unchecked = examined.data
        self._unsigned += unsigned
        self._signed_unchecked += signed_unchecked
        return examined.findings

    def status(self) -> str:
        parts = ["hashes checked"]
        if self._key is None:
            parts.append(
                f"signatures NOT checked ({self._signed_unchecked} signed receipts): no "
                "sequencer public key (pass --sequencer-public-key)"
            )
        else:
            parts.append("signatures checked")
        if self._unsigned:
            parts.append(f"{self._unsigned} receipts unsigned (alg none), allowed")
        return "; ".join(parts)
