"""What the runner and every check share: the range, the page, a finding, the hooks.

Where each hook runs, exactly (``runner.Verifier`` is the only caller):

* Ranges are read one after the other and their pages flow through one pipeline: the
  next range's first pages are read while the last pages of the one before are still
  being computed. Everything a check reports is still settled in order, range by range
  and page by page, so findings come out exactly as a serial pass gives them.
* ``begin`` and ``end`` run on the event loop, once per range, in that settled order:
  ``begin`` after the previous range's ``end``, before its own first page is examined,
  ``end`` after its last; they may await the store.
* ``prepare`` runs on the event loop when a page has been read, before anything is
  computed on it; it may await the store (agent keys, say). Up to ``workers * 2`` pages
  are in flight, possibly of the next range, so ``prepare`` (and ``ask``) for a later
  page may run before ``begin`` of its range and before ``examine`` of an earlier page:
  they may add to what the check has gathered, never read or change state that ``begin``
  or ``absorb`` keep.
* ``ask`` runs on the event loop right after ``prepare``: it says what the page needs
  computed (``Chunk.work``: keys to verify signatures under, whether leaves are wanted).
  That computation (``compute``: envelope validation and signing hashes, both Ed25519
  signatures, receipt hashes, Merkle leaves) is the only work done anywhere but the event
  loop, in the worker processes of ``pool`` on a large verification.
* ``examine`` and then ``absorb`` run on the event loop, one page at a time in sequence
  order, once the page's answers (``Chunk.computed``) are back, so a page is examined
  after the page before it was absorbed. ``examine`` reports on the page and changes no
  state of the check; ``absorb`` folds the page into state that depends on order (the
  next expected number, a commitment's leaves).
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import Any

from ...store.records import CounterState, StreamKey
from ...ves.errors import EnvelopeInvalid
from .compute import Computed, Record, Work


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
    """One page of events, what the checks asked to have computed on it (``work``) and,
    once back, the answers (``computed``)."""

    run: StreamRun
    records: list[Record]
    work: Work = field(init=False)
    computed: Computed = field(default_factory=Computed)

    def __post_init__(self) -> None:
        self.work = Work([None] * len(self.records))

    @property
    def signing_hashes(self) -> list[bytes | None]:
        """The signing hash recomputed from each event (``ves.envelope.validate``, as
        ingest runs it), None where the envelope itself is invalid."""
        return self.computed.signing_hashes

    @property
    def problems(self) -> list[EnvelopeInvalid | None]:
        """Why each invalid envelope is invalid (None where it is valid)."""
        return self.computed.problems


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

    def ask(self, chunk: Chunk) -> None:
        """Say in ``chunk.work`` what ``examine`` will read from ``chunk.computed``
        (signing hashes and envelope problems are always computed)."""
        return None

    def examine(self, chunk: Chunk) -> Examined:
        return Examined()

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        return examined.findings

    async def end(self, run: StreamRun) -> list[Finding]:
        return []

    def status(self) -> str:
        """One line for the report, after every range: what was checked and what not."""
        return "checked"
