"""``verify-events``: prove a stored stream is intact, in one streaming pass.

The verifier reads a range in pages (memory stays bounded whatever the stream's size) and
hands each page to a list of :class:`Check` objects. A check has hooks for a range
(``begin``/``end``, on the event loop, may do I/O), for a page before its CPU work
(``prepare``, I/O such as fetching agent keys), for naming the Ed25519 signatures the page
needs checked (``signatures``), for the rest of the CPU work (``examine``) and for folding
results in sequence order (``absorb``). New checks — on-chain anchors, say — slot in as
further classes without touching the runner.

Where the time goes: two Ed25519 verifications per event (agent and receipt) cost more
than everything else together, so on a large verification they are done by a pool of
worker processes, a page at a time and several pages in flight, while the event loop reads,
decodes and examines the next pages. The work sent is three byte strings per page (keys,
hashes, signatures: 128 bytes an event) and the answer one byte per signature: pickling
the decoded events instead cost about as much as verifying them. Threads did not scale:
libsodium releases the GIL, but a thread coming back from it waits for the GIL behind the
thread running Python (up to the 5 ms switch interval), so a thread pool ran no faster
than one core. ``examine`` asks :meth:`Chunk.verify` for each signature, which answers
from the pool's verdicts, or verifies on the spot what was not sent (small runs, odd
lengths), the same function either way (``ves.signing.verify``).

Every hash and signature is computed by ``ves/`` — the same functions ingest uses — so
the verifier and the sequencer cannot disagree about what a valid event is.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from abc import ABC
from collections import Counter, deque
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ..store.base import AgentKey, CommitmentRow, CounterState, Store, StoredEvent, StreamKey
from ..ves import envelope as ves_envelope
from ..ves import hashing, merkle
from ..ves.codec import parse_rfc3339
from ..ves.errors import BadSignature, EnvelopeInvalid, VesError
from ..ves.signing import SIGNATURE_ALG_ED25519, Receipt, is_valid, verify, verify_receipt

DEFAULT_CHUNK = 2000
DEFAULT_FINDINGS_CAP = 1000
# Below this many events in all, signatures are verified inline: starting the worker
# processes (each imports the package) takes about a second on a busy 2-core machine,
# roughly what verifying 10,000 events' signatures inline costs.
PROCESS_THRESHOLD = 20_000

Record = tuple[StoredEvent, Receipt | None]
# (public key, 32-byte hash, signature), as ``ves.signing.verify`` takes them.
SignatureItem = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Finding:
    stream: StreamKey
    sequence: int | None  # None: about the stream as a whole
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
        for event, _receipt in self.records:
            try:
                self.signing_hashes.append(ves_envelope.validate(event.envelope))
                self.problems.append(None)
            except EnvelopeInvalid as exc:
                self.signing_hashes.append(None)
                self.problems.append(exc)

    def verify(self, public_key: bytes, message_hash: bytes, signature: bytes) -> None:
        """``ves.signing.verify``, answered from the verdicts when it was computed ahead."""
        verdict = self.verdicts.get((public_key, message_hash, signature))
        if verdict is None:
            verify(public_key, message_hash, signature)
        elif not verdict:
            raise BadSignature("signature does not verify")


@dataclass(slots=True)
class Examined:
    findings: list[Finding] = field(default_factory=list)
    data: Any = None


class Check(ABC):  # noqa: B024 - every hook has a harmless default; a check overrides some
    """A verification step. ``examine`` runs on worker threads, possibly for several pages
    at once, so it must only read the check's state; ``absorb`` runs on the event loop in
    sequence order and is where order-dependent state changes."""

    name: str = "check"

    async def begin(self, run: StreamRun) -> list[Finding]:
        return []

    async def prepare(self, chunk: Chunk) -> None:
        return None

    def signatures(self, chunk: Chunk) -> Iterable[SignatureItem]:
        """The signatures ``examine`` will pass to :meth:`Chunk.verify` (after
        ``digest``); the runner may verify them ahead, elsewhere. A signature not named
        here is still verified, on the spot."""
        return ()

    def examine(self, chunk: Chunk) -> Examined:
        return Examined()

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        return examined.findings

    async def end(self, run: StreamRun) -> list[Finding]:
        return []

    def status(self) -> str:
        return "checked"


# --- the checks -------------------------------------------------------------------------------


class SequenceCheck(Check):
    """Numbers run from the range's start to its end without a gap, and (for a whole
    stream) the counter equals the highest stored sequence."""

    name = "sequence"

    def __init__(self) -> None:
        self._expected = 1

    async def begin(self, run: StreamRun) -> list[Finding]:
        self._expected = run.start
        return []

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        found = []
        for event, _ in chunk.records:
            seq = event.sequence_number
            if seq > self._expected:
                found.append(self._missing(chunk.run, self._expected, seq - 1, "before"))
            self._expected = seq + 1
        return found

    def _missing(self, run: StreamRun, first: int, last: int, why: str) -> Finding:
        span = str(first) if first == last else f"{first}..{last}"
        text = f"sequence number{'s' if first != last else ''} {span} missing"
        if why == "tail":
            text += (
                f": the counter is at {run.state.counter} but the highest stored event "
                f"is {run.state.max_sequence}"
            )
        return Finding(run.stream, first, self.name, "gap", text)

    async def end(self, run: StreamRun) -> list[Finding]:
        found = []
        if self._expected <= run.end:
            found.append(self._missing(run, self._expected, run.end, "tail"))
        state = run.state
        if run.whole and state.event_count > 0:
            if state.counter is None:
                found.append(
                    Finding(
                        run.stream, 1, self.name, "counter_missing", "events but no counter row"
                    )
                )
            elif state.counter < state.max_sequence:
                found.append(
                    Finding(
                        run.stream,
                        state.counter + 1,
                        self.name,
                        "counter_behind",
                        f"counter {state.counter} is below stored event {state.max_sequence}: "
                        "the next append would collide (repair-counters fixes it)",
                    )
                )
        return found


class EnvelopeCheck(Check):
    """The envelope is valid (payload or cipher hash included) and the stored signing
    hash equals the one recomputed from the stored fields."""

    name = "envelope"

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined()
        for (event, _), digest, problem in zip(
            chunk.records, chunk.signing_hashes, chunk.problems, strict=True
        ):
            if problem is not None:
                out.findings.append(
                    self._finding(chunk, event, problem.reason, problem.message or problem.reason)
                )
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


def key_problem_at(key: AgentKey | None, at: datetime) -> str | None:
    """Why ``key`` could not have signed an event sequenced at ``at``; None if it could.
    Unlike ingest (which judges at server time), a later revocation does not count."""
    if key is None:
        return "agent key not registered"
    if key.revoked_at is not None and key.revoked_at <= at:
        return f"agent key was revoked at {key.revoked_at.isoformat()}, before sequencing"
    if key.valid_to is not None and key.valid_to < at:
        return f"agent key expired at {key.valid_to.isoformat()}, before sequencing"
    if key.valid_from is not None and key.valid_from > at:
        return f"agent key was not yet valid (valid from {key.valid_from.isoformat()})"
    return None


class AgentSignatureCheck(Check):
    """The agent's Ed25519 signature verifies against its registered key, and the key was
    valid when the event was sequenced. Keys are fetched once per (tenant, agent, key id)."""

    name = "agent_signature"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys: dict[tuple[UUID, UUID, int], AgentKey | None] = {}

    async def prepare(self, chunk: Chunk) -> None:
        for event, _ in chunk.records:
            env = event.envelope
            ident = (env.tenant_id, env.source_agent_id, env.agent_key_id)
            if ident not in self._keys:
                self._keys[ident] = await self._store.get_agent_key(*ident)

    def signatures(self, chunk: Chunk) -> Iterable[SignatureItem]:
        for (event, _), digest in zip(chunk.records, chunk.signing_hashes, strict=True):
            env = event.envelope
            key = self._keys.get((env.tenant_id, env.source_agent_id, env.agent_key_id))
            if key is not None and digest is not None:
                yield key.public_key, digest, env.agent_signature

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined()
        for (event, _), digest in zip(chunk.records, chunk.signing_hashes, strict=True):
            env = event.envelope
            key = self._keys.get((env.tenant_id, env.source_agent_id, env.agent_key_id))
            problem = key_problem_at(key, event.sequenced_at)
            code = "agent_key_invalid"
            if problem is None and key is not None and digest is not None:
                try:
                    chunk.verify(key.public_key, digest, env.agent_signature)
                except VesError:
                    code, problem = "invalid_signature", "agent signature does not verify"
            if problem is not None:
                out.findings.append(
                    Finding(chunk.run.stream, event.sequence_number, self.name, code, problem)
                )
        return out

    def status(self) -> str:
        return f"checked ({len(self._keys)} distinct agent keys)"


class ReceiptCheck(Check):
    """A receipt is stored for every event, names it, carries its sequence number and
    time, its hash recomputes, and its signature verifies under the sequencer's key."""

    name = "receipt"

    def __init__(self, sequencer_public_key: bytes | None) -> None:
        self._key = sequencer_public_key
        self._unsigned = 0
        self._signed_unchecked = 0

    def signatures(self, chunk: Chunk) -> Iterable[SignatureItem]:
        if self._key is None:
            return
        for _, receipt in chunk.records:
            if receipt is not None and receipt.signature_alg == SIGNATURE_ALG_ED25519:
                yield self._key, receipt.receipt_hash, receipt.sequencer_signature

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined(data=(0, 0))
        unsigned = signed_unchecked = 0
        # One ingest batch shares one sequenced_at: parse each distinct text once.
        times: dict[str, datetime] = {}
        for (event, receipt), digest in zip(chunk.records, chunk.signing_hashes, strict=True):
            problem = self._problem(chunk, event, receipt, digest, times)
            if receipt is not None and problem is None:
                if receipt.signature_alg != SIGNATURE_ALG_ED25519:
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
        chunk: Chunk,
        event: StoredEvent,
        receipt: Receipt | None,
        digest: bytes | None,
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
            if at != event.sequenced_at:
                return "receipt_mismatch", f"receipt sequenced_at {receipt.sequenced_at} differs"
        except VesError:
            return "receipt_mismatch", f"receipt sequenced_at {receipt.sequenced_at!r} unreadable"
        env = event.envelope
        # The event's own hash when it is valid: a receipt binds the content as signed.
        bound = digest if digest is not None else event.event_signing_hash
        key = self._key if receipt.signature_alg == SIGNATURE_ALG_ED25519 else None
        try:
            # verify_receipt checks the hash (no key given), then its signature step is
            # done here through chunk.verify, which may hold the verdict already.
            verify_receipt(
                receipt,
                tenant_id=env.tenant_id,
                store_id=env.store_id,
                event_signing_hash=bound,
                sequencer_public_key=None,
            )
            if key is not None:
                if not receipt.sequencer_signature:
                    raise BadSignature(
                        f"receipt is not Ed25519-signed (alg {receipt.signature_alg!r})"
                    )
                chunk.verify(key, receipt.receipt_hash, receipt.sequencer_signature)
        except VesError as exc:
            code = "receipt_hash_mismatch" if "hash" in str(exc) else "receipt_signature_invalid"
            return code, f"receipt: {exc}"
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
            parts.append(f"{self._unsigned} receipts unsigned (alg none)")
        return "; ".join(parts)


class CommitmentCheck(Check):
    """Commitments are contiguous from 1, state roots chain and recompute, and each
    commitment fully inside the range has its Merkle root recomputed from the events."""

    name = "commitments"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._targets: deque[CommitmentRow] = deque()
        self._leaves: list[bytes] = []
        self._broken = False
        self._checked = 0
        self._skipped = 0
        self._total = 0

    async def begin(self, run: StreamRun) -> list[Finding]:
        rows = await self._store.list_commitments(run.stream)
        self._total += len(rows)
        found = self._chain_findings(run, rows)
        inside = [c for c in rows if run.start <= c.sequence_start and c.sequence_end <= run.end]
        self._skipped += len(rows) - len(inside)
        self._targets = deque(inside)
        self._leaves, self._broken = [], False
        return found

    def _chain_findings(self, run: StreamRun, rows: Sequence[CommitmentRow]) -> list[Finding]:
        found = []
        prev_root, prev_end = hashing.ZERO_HASH, 0
        stream_id = hashing.stream_id(run.stream.tenant_id, run.stream.store_id)
        for c in rows:

            def bad(code: str, text: str, c: CommitmentRow = c) -> None:
                where = f"commitment {c.sequence_start}..{c.sequence_end}"
                found.append(
                    Finding(run.stream, c.sequence_start, self.name, code, f"{where}: {text}")
                )

            if c.sequence_start != prev_end + 1:
                bad("commitment_gap", f"does not start at {prev_end + 1}")
            if c.leaf_count != c.sequence_end - c.sequence_start + 1:
                bad("commitment_count", f"leaf_count {c.leaf_count} does not fit the range")
            if c.prev_state_root != prev_root:
                bad("state_root_chain", "prev_state_root is not the previous new_state_root")
            expected = hashing.state_root(
                stream=stream_id,
                prev_state_root=c.prev_state_root,
                merkle_root=c.merkle_root,
                sequence_start=c.sequence_start,
                sequence_end=c.sequence_end,
                leaf_count=c.leaf_count,
            )
            if expected != c.new_state_root:
                bad("state_root_mismatch", "new_state_root does not recompute")
            if run.whole and c.sequence_end > run.state.max_sequence:
                bad("commitment_beyond_head", f"covers events above {run.state.max_sequence}")
            prev_root, prev_end = c.new_state_root, c.sequence_end
        return found

    def examine(self, chunk: Chunk) -> Examined:
        if not self._targets:
            return Examined()
        s = chunk.run.stream
        return Examined(
            data=[
                hashing.leaf_hash(
                    s.tenant_id,
                    s.store_id,
                    event.sequence_number,
                    digest if digest is not None else event.event_signing_hash,
                    event.envelope.agent_signature,
                )
                for (event, _), digest in zip(chunk.records, chunk.signing_hashes, strict=True)
            ]
        )

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        found: list[Finding | None] = []
        if examined.data is None:
            return []
        for (event, _), leaf in zip(chunk.records, examined.data, strict=True):
            seq = event.sequence_number
            while self._targets and seq > self._targets[0].sequence_end:
                found.append(self._close(chunk.run.stream, complete=False))
            if not self._targets or seq < self._targets[0].sequence_start:
                continue
            target = self._targets[0]
            if seq != target.sequence_start + len(self._leaves):
                self._broken = True
            self._leaves.append(leaf)
            if seq == target.sequence_end:
                found.append(self._close(chunk.run.stream, complete=True))
        return [f for f in found if f is not None]

    def _close(self, stream: StreamKey, *, complete: bool) -> Finding | None:
        target = self._targets.popleft()
        leaves, broken = self._leaves, self._broken
        self._leaves, self._broken = [], False
        where = f"commitment {target.sequence_start}..{target.sequence_end}"
        if not complete or broken or len(leaves) != target.leaf_count:
            return Finding(
                stream,
                target.sequence_start,
                self.name,
                "commitment_events_missing",
                f"{where}: its events are not all stored; the Merkle root cannot be recomputed",
            )
        self._checked += 1
        if merkle.merkle_root(leaves) != target.merkle_root:
            return Finding(
                stream,
                target.sequence_start,
                self.name,
                "merkle_root_mismatch",
                f"{where}: Merkle root recomputed from the stored events differs",
            )
        return None

    async def end(self, run: StreamRun) -> list[Finding]:
        closed = [self._close(run.stream, complete=False) for _ in range(len(self._targets))]
        return [f for f in closed if f is not None]

    def status(self) -> str:
        if self._total == 0:
            return "no commitments stored"
        return (
            f"{self._total} commitments chained; {self._checked} Merkle roots recomputed, "
            f"{self._skipped} outside the range"
        )


class AnchorCheck(Check):
    """``--deep``: compare anchored state roots with the chain. No chain client exists in
    this build yet, so the check says so rather than pretend to have looked."""

    name = "anchors"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._anchored = 0

    async def begin(self, run: StreamRun) -> list[Finding]:
        rows = await self._store.list_commitments(run.stream)
        self._anchored += sum(1 for c in rows if c.chain_tx_hash is not None)
        return []

    def status(self) -> str:
        return (
            "NOT CONFIGURED: no chain client in this build; "
            f"{self._anchored} anchored commitments not compared with the chain"
        )


def default_checks(store: Store, *, sequencer_public_key: bytes | None, deep: bool) -> list[Check]:
    checks: list[Check] = [
        SequenceCheck(),
        EnvelopeCheck(),
        AgentSignatureCheck(store),
        ReceiptCheck(sequencer_public_key),
        CommitmentCheck(store),
    ]
    if deep:
        checks.append(AnchorCheck(store))
    return checks


# --- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamResult:
    run: StreamRun
    events: int = 0
    first: Finding | None = None


@dataclass(slots=True)
class Report:
    cap: int = DEFAULT_FINDINGS_CAP
    findings: list[Finding] = field(default_factory=list)
    total: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    streams: list[StreamResult] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def events(self) -> int:
        return sum(s.events for s in self.streams)

    @property
    def first(self) -> Finding | None:
        for result in self.streams:
            if result.first is not None:
                return result.first
        return None

    def add(self, result: StreamResult, found: Sequence[Finding]) -> None:
        for f in found:
            self.total += 1
            self.by_code[f"{f.check}.{f.code}"] += 1
            if len(self.findings) < self.cap:
                self.findings.append(f)
            if result.first is None or _earlier(f, result.first):
                result.first = f

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.total == 0,
            "events_checked": self.events,
            "elapsed_seconds": round(self.elapsed, 3),
            "events_per_second": round(self.events / self.elapsed) if self.elapsed > 0 else None,
            "finding_count": self.total,
            "findings_by_code": dict(sorted(self.by_code.items())),
            "findings_capped_at": self.cap,
            "first_finding": None if self.first is None else self.first.to_json(),
            "checks": self.checks,
            "streams": [
                {
                    "tenant_id": str(r.run.stream.tenant_id),
                    "store_id": str(r.run.stream.store_id),
                    "from": r.run.start,
                    "to": r.run.end,
                    "counter": r.run.state.counter,
                    "max_sequence": r.run.state.max_sequence,
                    "events_checked": r.events,
                    "first_bad_sequence": None if r.first is None else r.first.sequence,
                }
                for r in self.streams
            ],
            "findings": [f.to_json() for f in self.findings],
        }


def _earlier(a: Finding, b: Finding) -> bool:
    # A finding about the stream as a whole (no sequence) ranks after numbered ones.
    ka = a.sequence if a.sequence is not None else float("inf")
    kb = b.sequence if b.sequence is not None else float("inf")
    return ka < kb


# --- the runner -------------------------------------------------------------------------------


def plan_run(state: CounterState, start: int | None, end: int | None) -> StreamRun:
    """The range to verify: from ``start`` (1) to ``end`` (the higher of the counter and
    the highest stored event, so that events above a lagging counter are seen too)."""
    top = max(state.counter or 0, state.max_sequence)
    first = 1 if start is None else start
    last = top if end is None else end
    return StreamRun(state.stream, first, last, state, whole=start in (None, 1) and end is None)


class Verifier:
    """Runs the checks over some ranges. ``processes``: verify signatures in ``workers``
    worker processes (True), inline (False), or decide by the total size (None)."""

    def __init__(
        self,
        store: Store,
        checks: list[Check],
        *,
        workers: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        findings_cap: int = DEFAULT_FINDINGS_CAP,
        processes: bool | None = None,
    ) -> None:
        self.store = store
        self.checks = checks
        self.workers = workers or os.cpu_count() or 1
        self.chunk_size = chunk_size
        self.processes = processes
        self.report = Report(cap=findings_cap)

    async def run(self, runs: Sequence[StreamRun], advance: Any = None) -> Report:
        started = time.perf_counter()
        use_pool = self.processes
        if use_pool is None:
            total = sum(max(r.end - r.start + 1, 0) for r in runs)
            use_pool = self.workers > 1 and total >= PROCESS_THRESHOLD
        if use_pool:
            # spawn, not fork: the parent has an event loop, a connection pool and maybe
            # SQLite threads, none of which a forked child could safely inherit.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
                for run in runs:
                    await self._verify(run, advance, pool)
        else:
            for run in runs:
                await self._verify(run, advance, None)
        self.report.elapsed = time.perf_counter() - started
        self.report.checks = {c.name: c.status() for c in self.checks}
        return self.report

    async def _verify(self, run: StreamRun, advance: Any, pool: ProcessPoolExecutor | None) -> None:
        result = StreamResult(run)
        self.report.streams.append(result)
        for check in self.checks:
            self.report.add(result, await check.begin(run))
        loop = asyncio.get_running_loop()
        # A few pages in flight keep every worker busy while the next page is read, and
        # bound memory to (workers * 2) pages.
        depth = self.workers * 2 if pool is not None else 1
        pending: deque[tuple[Chunk, list[SignatureItem], Awaitable[bytes] | None]] = deque()

        async def settle_one() -> None:
            chunk, items, work = pending.popleft()
            if work is not None:
                answers = await work
                chunk.verdicts = {item: bool(ok) for item, ok in zip(items, answers, strict=True)}
            for check in self.checks:
                self.report.add(result, check.absorb(chunk, check.examine(chunk)))
            result.events += len(chunk.records)
            if advance is not None:
                advance(len(chunk.records))

        async def submit(records: list[Record]) -> None:
            chunk = Chunk(run, records)
            for check in self.checks:
                await check.prepare(chunk)
            chunk.digest()
            items: list[SignatureItem] = []
            work: Awaitable[bytes] | None = None
            if pool is not None:
                # Only well-formed items fit the packed form; any other is verified on
                # the spot by Chunk.verify, which then reports it as ves does.
                items = [
                    item
                    for check in self.checks
                    for item in check.signatures(chunk)
                    if len(item[0]) == 32 and len(item[1]) == 32 and len(item[2]) == 64
                ]
                if items:
                    keys, hashes, sigs = (b"".join(part) for part in zip(*items, strict=True))
                    work = loop.run_in_executor(pool, verify_packed, keys, hashes, sigs)
            pending.append((chunk, items, work))
            while len(pending) >= depth:
                await settle_one()

        page: list[Record] = []
        if run.end >= run.start:
            async for record in self.store.iter_events_with_receipts(
                run.stream, run.start, run.end, batch_size=self.chunk_size
            ):
                page.append(record)
                if len(page) >= self.chunk_size:
                    await submit(page)
                    page = []
        if page:
            await submit(page)
        while pending:
            await settle_one()
        for check in self.checks:
            self.report.add(result, await check.end(run))


def verify_packed(keys: bytes, hashes: bytes, signatures: bytes) -> bytes:
    """Run in a worker process: ``ves.signing.is_valid`` on each (32-byte key, 32-byte
    hash, 64-byte signature) packed end to end; one byte (1 valid, 0 not) per item."""
    count = len(keys) // 32
    return bytes(
        is_valid(
            keys[i * 32 : i * 32 + 32],
            hashes[i * 32 : i * 32 + 32],
            signatures[i * 64 : i * 64 + 64],
        )
        for i in range(count)
    )
