"""What the runner and every check share: the range, the page, a finding, the hooks.

Where each hook runs, exactly (``runner.Verifier`` is the only caller):

* ``begin`` and ``end`` run on the event loop, once per range, before its first page and
  after its last; they may await the store.
* ``prepare`` runs on the event loop when a page has been read, before anything is
  computed on it; it may await the store (agent keys, say). Up to ``workers * 2`` pages
  are in flight, so ``prepare`` for a later page may run before ``examine`` of an earlier
  one: it may add to what it has gathered, never change what earlier pages read.
* ``Chunk.digest`` (the envelope checks and signing hashes) and ``signatures`` run on the
  event loop right after ``prepare``. The runner packs the signatures named and sends them
  to the worker processes of ``pool``; that verification is the only work done anywhere
  but the event loop.
* ``examine`` and then ``absorb`` run on the event loop, one page at a time in sequence
  order, once the page's verdicts are back from the pool (meanwhile the pool verifies the
  pages after it), so a page is examined after the page before it was absorbed.
  ``examine`` reports on the page and changes no state of the check; ``absorb`` folds the
  page into state that depends on order (the next expected number, a commitment's
  leaves).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...store.records import CounterState, StoredEvent, StreamKey
from ...ves import envelope as ves_envelope
from ...ves.errors import BadSignature, EnvelopeInvalid
from ...ves.signing import Receipt, verify

Record = tuple[StoredEvent, Receipt | None]
# (public key, 32-byte hash, signature), as ``ves.signing.verify`` takes them.
SignatureItem = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, at ``sequence`` (None: about the stream as a whole). ``code`` is
    stable per ``check``; reports count findings by ``check.code``."""

    stream: StreamKey
    sequence: int | None
    check: str
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": str(self.stream.tenant_id),
            "store_id": str(self.stream.store_id),
            "sequence": self.sequence,
            "check": self.check,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class StreamRun:
    """One range being verified. ``whole`` when it runs from 1 to the stream's end, so
    that facts about the whole stream (the counter) are in scope."""

    stream: StreamKey
    start: int
    end: int
    state: CounterState
    whole: bool

    @property
    def size(self) -> int:
        return max(self.end - self.start + 1, 0)


@dataclass(slots=True)
class Chunk:
    """One page of events with what every check needs first: the recomputed signing hash
    of each event (None where the envelope itself is invalid, with the reason)."""

    run: StreamRun
    records: list[Record]
    signing_hashes: list[bytes | None] = field(default_factory=list)
    problems: list[EnvelopeInvalid | None] = field(default_factory=list)
    # Verdicts of ``ves.signing.verify`` computed ahead (by the worker pool).
    verdicts: dict[SignatureItem, bool] = field(default_factory=dict)

    def digest(self) -> None:
        """Validate each envelope as ingest does (``ves.envelope.validate``), keeping the
        signing hash or the reason it is invalid."""
        for event, _receipt in self.records:
            try:
                self.signing_hashes.append(ves_envelope.validate(event.envelope))
                self.problems.append(None)
            except EnvelopeInvalid as exc:
                self.signing_hashes.append(None)
                self.problems.append(exc)

    def verify(self, public_key: bytes, message_hash: bytes, signature: bytes) -> None:
        """``ves.signing.verify``, answered from the verdicts when it was computed ahead,
        else computed here (a signature not named by ``Check.signatures``, or one the pool
        could not take)."""
        verdict = self.verdicts.get((public_key, message_hash, signature))
        if verdict is None:
            verify(public_key, message_hash, signature)
        elif not verdict:
            raise BadSignature("signature does not verify")


@dataclass(slots=True)
class Examined:
    """What ``examine`` found on a page: findings, and ``data`` that only the same
    check's ``absorb`` reads (its shape is the check's own)."""

    findings: list[Finding] = field(default_factory=list)
    data: Any = None


class Check(ABC):  # noqa: B024 - every hook has a harmless default; a check overrides some
    """A verification step; the module docstring says where and when each hook runs.
    Every hook but ``status`` is called for every range and page."""

    name: str = "check"

    async def begin(self, run: StreamRun) -> list[Finding]:
        return []

    async def prepare(self, chunk: Chunk) -> None:
        return None

    def signatures(self, chunk: Chunk) -> Iterable[SignatureItem]:
        """The signatures ``examine`` will pass to :meth:`Chunk.verify` (called after
        ``digest``); the runner may have them verified ahead, in worker processes. A
        signature not named here is still verified, on the spot."""
        return ()

    def examine(self, chunk: Chunk) -> Examined:
        return Examined()

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        return examined.findings

    async def end(self, run: StreamRun) -> list[Finding]:
        return []

    def status(self) -> str:
        """One line for the report, after every range: what was checked and what not."""
        return "checked"
