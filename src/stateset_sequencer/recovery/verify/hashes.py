"""Hashes: each envelope is valid as ingest judges it and its stored signing hash
recomputes."""

from __future__ import annotations

from ...store.records import StoredEvent
from .check import Check, Chunk, Examined, Finding


class EnvelopeCheck(Check):
    """The envelope is valid (payload or cipher hash included: ``Chunk.digest`` runs
    ``ves.envelope.validate``, the function ingest runs) and the stored signing hash
    equals the one recomputed from the stored fields."""

    name = "envelope"

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined()
        for (event, _), digest, problem in zip(
            chunk.records, chunk.signing_hashes, chunk.problems, strict=True
        ):
            if problem is not None:
                out.findings.append(self._finding(chunk, event, problem.reason, problem.message))
            elif digest != event.event_signing_hash:
                out.findings.append(
                    self._finding(
                        chunk,
                        event,
                        "signing_hash_mismatch",
                        "stored event_signing_hash differs from the one recomputed from the event",
                    )
                )
        return out

    def _finding(self, chunk: Chunk, event: StoredEvent, code: str, text: str) -> Finding:
        return Finding(chunk.run.stream, event.sequence_number, self.name, code, text)
