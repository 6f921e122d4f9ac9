"""The ingest pipeline, in the reference's order of checks (REFERENCE_MAP §4.3).

A reader should see the order of checks as the order of the code:

1. :func:`check_batch` — whole-batch faults (empty, mixed stream, agent mismatch, batch and
   payload size); these fail the request and write nothing;
2. :func:`classify_known_ids` — an exact replay gets its stored receipt back; a different
   event under a known id is ``duplicate_event_id``;
2a. :func:`require_signed_controls` — with ``REQUIRE_SIGNED_EXECUTION_CONTROLS``, a new
   ``ves_version`` 1 event is ``signed_execution_controls_required`` (after step 2, so
   exact replays of stored V1 events still get their receipts);
3. :func:`validate_event` — version, byte lengths, payload kind, encrypted structure,
   ``created_at`` and the payload or cipher hash;
4. :func:`check_key` — the agent key at server time (not found, revoked, expired, not yet
   valid);
5. :func:`check_signature` — Ed25519 over the event signing hash;
5a. the agent's event policy (``sequencer.policies``: event type, entity type,
   ``base_version``, payload size), read once per batch through :class:`PolicyCache`;
6. :func:`dedupe_commands_in_batch` — a ``command_id`` used twice in one batch;
7–10. :class:`~.group_commit.StreamWriter` — the counter lock, ``command_id`` reservation,
   ``base_version`` concurrency, insert with receipt and entity-version bump, and commit,
   for all batches of a stream that arrived meanwhile (group commit).

Rejected and replayed events consume no sequence number. CPU work (hashes, signatures)
runs in a thread pool before the transaction opens; nothing slow happens inside it.
"""

from __future__ import annotations

import asyncio
import enum
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..store.ports import Store
from ..store.records import Existing, StreamKey
from ..ves import envelope as ves_envelope
from ..ves.envelope import VesEventEnvelope
from ..ves.errors import EnvelopeInvalid, VesError
from ..ves.jsontext import StoredTexts, stored_texts
from ..ves.signing import Receipt, ReceiptSigner, verify
from ..ves.storable import INT32_MAX, UnstorableText, is_storable, json_fault, storable_text
from .group_commit import StreamWriter
from .keys import KeyCache, key_problem
from .live import HeadAnnouncer
from .outcomes import Accepted, IngestResult, Rejection, Replayed, Verified, replay_verdict
from .policies import PolicyCache

DEFAULT_MAX_EVENTS_PER_BATCH = 1000
DEFAULT_MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
INLINE_CHECK_MAX = 4  # events; ~50 µs each, less than two thread hand-offs


# --- results ------------------------------------------------------------------------------


class BatchReason(enum.StrEnum):
    """Why a whole batch is refused. Every reason :func:`check_batch` can raise is here;
    ``api/http/errors.py`` maps each to its status and wire code."""

    EMPTY_BATCH = "EMPTY_BATCH"
    MIXED_STREAM = "MIXED_STREAM"
    # the credential is bound to another agent than the request's agentId
    AGENT_MISMATCH = "AGENT_MISMATCH"
    # an event's source_agent_id is not the request's agentId
    SOURCE_AGENT_MISMATCH = "SOURCE_AGENT_MISMATCH"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INVALID_FIELD = "INVALID_FIELD"
    MISSING_PAYLOAD = "MISSING_PAYLOAD"


class BatchRejected(Exception):
    """A whole-batch fault: nothing is written."""

    def __init__(self, reason: BatchReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    max_events_per_batch: int = DEFAULT_MAX_EVENTS_PER_BATCH
    max_event_payload_bytes: int = DEFAULT_MAX_EVENT_PAYLOAD_BYTES


# --- step 1: whole-batch checks -----------------------------------------------------------


def check_batch(
    agent_id: uuid.UUID,
    events: Sequence[VesEventEnvelope],
    limits: Limits,
    bound_agent_id: uuid.UUID | None = None,
    authorize: Callable[[StreamKey], None] | None = None,
) -> tuple[StreamKey, list[StoredTexts]]:
    """Faults that fail the whole request, in the reference's order. ``authorize`` is the
    caller's write-permission check on the stream (it raises to refuse); it runs where the
    reference's handler runs ``ensure_write``, after the agent checks and before the
    limits, so that each fault gets the same status as there. Returns the stream and each
    event's stored JSON texts, which the checks made and the row reuses."""
    if not events:
        raise BatchRejected(BatchReason.EMPTY_BATCH, "events must not be empty")
    stream = StreamKey(events[0].tenant_id, events[0].store_id)
    for env in events:
        if env.tenant_id != stream.tenant_id or env.store_id != stream.store_id:
            raise BatchRejected(
                BatchReason.MIXED_STREAM, "all events in a batch must share tenant_id and store_id"
            )
    if bound_agent_id is not None and bound_agent_id != agent_id:
        raise BatchRejected(BatchReason.AGENT_MISMATCH, "Agent mismatch")
    for env in events:
        if env.source_agent_id != agent_id:
            raise BatchRejected(
                BatchReason.SOURCE_AGENT_MISMATCH,
                f"event {env.event_id}: source_agent_id does not match agentId",
            )
    if authorize is not None:
        authorize(stream)
    if len(events) > limits.max_events_per_batch:
        raise BatchRejected(
            BatchReason.BATCH_TOO_LARGE,
            f"batch of {len(events)} events exceeds {limits.max_events_per_batch}",
        )
    texts: list[StoredTexts] = []
    for env in events:
        stored = stored_texts(env)
        check_fields(env, stored)
        size = stored.payload_size  # over text check_fields found storable (valid UTF-8)
        if size > limits.max_event_payload_bytes:
            raise BatchRejected(
                BatchReason.PAYLOAD_TOO_LARGE,
                f"event {env.event_id}: payload of {size} bytes exceeds "
                f"{limits.max_event_payload_bytes}",
            )
        texts.append(stored)
    return stream, texts


def check_fields(env: VesEventEnvelope, texts: StoredTexts) -> None:
    """Everything the event puts in a row, held to what both stores can keep
    (``ves.storable``), and a payload for the event's kind.

    The envelope's own check gives the reference's rule (UTF-8 byte lengths); the rest of
    the storable-text rule (no NUL, which PostgreSQL text cannot hold) is checked here,
    where events are stored, on every stored field, signed or not: the three text fields,
    the JSON texts of the payload, the encrypted payload and the signature bundle (a lone
    surrogate anywhere in them), and the integer the stores keep in 32 bits. So nothing
    a store would refuse reaches the stream transaction, where it would fail every batch
    merged with it. (``created_at`` is stored too, but only once it has parsed as an
    RFC 3339 timestamp, which is ASCII.) The reference's HTTP and gRPC handlers fail the
    whole request on field faults (400) before any event is sequenced; so do we, on every
    backend alike."""
    try:
        ves_envelope.check_lengths(env)
    except EnvelopeInvalid as exc:
        raise BatchRejected(
            BatchReason.INVALID_FIELD, f"event {env.event_id}: {exc.message}"
        ) from None
    for name, _limit in ves_envelope.TEXT_FIELDS:  # the limits were checked just above
        _storable(env, name, getattr(env, name))
    encrypted = env.payload_encrypted
    _storable_json(env, "payload", env.payload, texts.payload)
    if encrypted is not None:
        _storable_json(env, "payload_encrypted", encrypted.model_dump(mode="json"), texts.encrypted)
    _storable_json(env, "agent_signature_bundle", env.agent_signature_bundle, texts.bundle)
    scheme = env.agent_signature_scheme
    if scheme is not None and scheme > INT32_MAX:
        raise BatchRejected(
            BatchReason.INVALID_FIELD,
            f"event {env.event_id}: agent_signature_scheme must be at most {INT32_MAX}, "
            f"got {scheme}",
        )
    if env.payload_kind == ves_envelope.PAYLOAD_KIND_PLAINTEXT and env.payload is None:
        raise BatchRejected(
            BatchReason.MISSING_PAYLOAD, f"event {env.event_id}: payload is required for kind 0"
        )
    if env.payload_kind != ves_envelope.PAYLOAD_KIND_PLAINTEXT and env.payload_encrypted is None:
        raise BatchRejected(
            BatchReason.MISSING_PAYLOAD,
            f"event {env.event_id}: payload_encrypted is required for kind 1",
        )


def _storable(env: VesEventEnvelope, name: str, text: str | None) -> None:
    """Refuse the batch for text no store can hold."""
    if text is None:
        return
    try:
        storable_text(text, field=name)
    except UnstorableText as exc:
        raise BatchRejected(
            BatchReason.INVALID_FIELD, f"event {env.event_id}: {exc.message}"
        ) from None


def _storable_json(env: VesEventEnvelope, name: str, value: Any, text: str | None) -> None:
    """Refuse the batch for a JSON value whose stored text no store can hold, naming the
    string at fault. (Only a lone surrogate, from JSON's ``"\\ud800"`` escape, can be at
    fault in a JSON text: the codec writes NUL as the escape ``\\u0000``.)"""
    if text is None or is_storable(text):
        return
    fault = json_fault(value, field=name)
    message = fault.message if fault is not None else f"{name} cannot be stored"
    raise BatchRejected(BatchReason.INVALID_FIELD, f"event {env.event_id}: {message}")


# --- step 2: known event ids --------------------------------------------------------------


@dataclass(slots=True)
class _Classified:
    pending: list[VesEventEnvelope] = field(default_factory=list)
    replays: list[Receipt] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def classify_known_ids(
    stream: StreamKey, events: Iterable[VesEventEnvelope], known: dict[uuid.UUID, Existing]
) -> _Classified:
    out = _Classified()
    seen: set[uuid.UUID] = set()
    for env in events:
        if env.event_id in seen:
            out.rejections.append(
                Rejection(
                    env.event_id, "duplicate_event_id", f"Event {env.event_id} duplicated in batch"
                )
            )
            continue
        seen.add(env.event_id)
        hit = known.get(env.event_id)
        if hit is None:
            out.pending.append(env)
            continue
        verdict = replay_verdict(stream, env, hit)
        if isinstance(verdict, Receipt):
            out.replays.append(verdict)
        else:
            out.rejections.append(verdict)
    return out


# --- steps 3–5: validation, key, signature ------------------------------------------------


def validate_event(
    env: VesEventEnvelope, strict_format: bool
) -> ves_envelope.Validated | Rejection:
    try:
        return ves_envelope.validate_parts(env, strict_format=strict_format)
    except EnvelopeInvalid as exc:
        return Rejection(env.event_id, exc.reason, exc.message)
    except VesError as exc:  # defensive: every fault is a rejection, never a 500
        return Rejection(env.event_id, "schema_validation", str(exc))


def check_key(env: VesEventEnvelope, problem: str | None) -> Rejection | None:
    if problem is None:
        return None
    return Rejection(env.event_id, f"agent_key_invalid: {problem}", problem)


def check_signature(
    env: VesEventEnvelope, public_key: bytes, signing_hash: bytes
) -> Rejection | None:
    try:
        verify(public_key, signing_hash, env.agent_signature)
    except VesError:
        return Rejection(env.event_id, "invalid_signature", "Agent signature does not verify")
    return None


def _validate_chunk(
    chunk: Sequence[VesEventEnvelope], strict: bool
) -> list[ves_envelope.Validated | Rejection]:
    return [validate_event(env, strict) for env in chunk]


def _verify_chunk(chunk: Sequence[tuple[VesEventEnvelope, bytes, bytes]]) -> list[Rejection | None]:
    return [check_signature(env, pk, digest) for env, pk, digest in chunk]


# --- step 2a: signed execution controls ---------------------------------------------------

SIGNED_EXECUTION_CONTROLS_REQUIRED = "signed_execution_controls_required"


def require_signed_controls(
    pending: Sequence[VesEventEnvelope], rejections: list[Rejection]
) -> list[VesEventEnvelope]:
    """Keep the events whose ``command_id`` and ``base_version`` are signed (not V1)."""
    kept: list[VesEventEnvelope] = []
    for env in pending:
        if env.ves_version == ves_envelope.VES_VERSION_V1:
            rejections.append(
                Rejection(
                    env.event_id,
                    SIGNED_EXECUTION_CONTROLS_REQUIRED,
                    "This sequencer accepts only ves_version 2 events, which sign "
                    "command_id and base_version; re-sign the event with ves_version 2",
                )
            )
        else:
            kept.append(env)
    return kept


# --- step 6: command ids within the batch -------------------------------------------------


def dedupe_commands_in_batch(
    verified: Sequence[Verified],
) -> tuple[list[Verified], list[Rejection]]:
    kept: list[Verified] = []
    rejections: list[Rejection] = []
    seen: set[uuid.UUID] = set()
    for item in verified:
        command = item.envelope.command_id
        if command is not None and command in seen:
            rejections.append(
                Rejection(
                    item.envelope.event_id,
                    "duplicate_command_id",
                    f"Command {command} duplicated in batch",
                )
            )
            continue
        if command is not None:
            seen.add(command)
        kept.append(item)
    return kept, rejections


# --- the service --------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


SchemaStage = Callable[
    [Sequence[VesEventEnvelope]],
    Awaitable[tuple[Sequence[VesEventEnvelope], list[Rejection]]],
]
"""The handler-level schema check: returns the events that pass and the rejections."""


class Sequencer:
    """Verifies signed events and sequences them; one instance per process."""

    def __init__(
        self,
        store: Store,
        receipt_signer: ReceiptSigner,
        *,
        limits: Limits | None = None,
        strict_format: bool = False,
        clock: Callable[[], datetime] = utc_now,
        key_cache_ttl_seconds: float = 30.0,
        verify_threads: int | None = None,
        schema_stage: SchemaStage | None = None,
        require_signed_execution_controls: bool = False,
    ) -> None:
        self.store = store
        self.schema_stage = schema_stage
        self.receipt_signer = receipt_signer
        self.limits = limits or Limits()
        self.strict_format = strict_format
        self.require_signed_execution_controls = require_signed_execution_controls
        self.clock = clock
        self.keys = KeyCache(store, key_cache_ttl_seconds)
        # Policies follow the key cache's TTL and invalidation (docs: agent event policies).
        self.policies = PolicyCache(store, key_cache_ttl_seconds)
        self._workers = verify_threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ves-verify")
        # Every committed head is announced to live subscribers on every process.
        self.announcer = HeadAnnouncer(store)
        self._writer = StreamWriter(
            store,
            receipt_signer,
            clock,
            on_commit=self.announcer.note,
            merge_streams=store.capabilities.merge_streams,
            executor=self._pool,
            sign_threads=self._workers,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def aclose(self) -> None:
        """Send what the announcer still holds, then close."""
        await self.announcer.close()
        self.close()

    def active_streams(self) -> int:
        return self._writer.busy_streams

    async def ingest(
        self,
        agent_id: uuid.UUID,
        events: Sequence[VesEventEnvelope],
        *,
        bound_agent_id: uuid.UUID | None = None,
        authorize: Callable[[StreamKey], None] | None = None,
    ) -> IngestResult:
        batch_id = uuid.uuid4()
        stream, texts = check_batch(agent_id, events, self.limits, bound_agent_id, authorize)
        # The events travel on as the same objects, so their texts are found by identity.
        texts_of = {id(env): t for env, t in zip(events, texts, strict=True)}
        rejections: list[Rejection] = []
        if self.schema_stage is not None:
            events, rejections = await self.schema_stage(events)
        known = await self.store.existing([e.event_id for e in events]) if events else {}
        classified = classify_known_ids(stream, events, known)
        rejections += classified.rejections
        pending = classified.pending
        if self.require_signed_execution_controls:
            pending = require_signed_controls(pending, rejections)
        verified = await self._verify(pending, rejections, texts_of)
        verified, policy_rejections = await self.policies.enforce(
            stream.tenant_id, agent_id, verified
        )
        rejections += policy_rejections
        verified, command_rejections = dedupe_commands_in_batch(verified)
        rejections += command_rejections

        receipts = list(classified.replays)
        new_receipts: list[Receipt] = []
        if verified:
            outcomes, head = await self._writer.append(stream, verified)
            for outcome in outcomes:
                if isinstance(outcome, Accepted):
                    new_receipts.append(outcome.receipt)
                elif isinstance(outcome, Replayed):
                    receipts.append(outcome.receipt)
                else:
                    rejections.append(outcome)
        else:
            head = await self.store.head(stream)
        seqs = [r.sequence_number for r in new_receipts]
        return IngestResult(
            batch_id=batch_id,
            events_accepted=len(new_receipts),
            events_rejected=len(rejections),
            sequence_start=min(seqs) if seqs else None,
            sequence_end=max(seqs) if seqs else None,
            head_sequence=head,
            rejections=rejections,
            receipts=receipts + new_receipts,
        )

    async def _verify(
        self,
        pending: Sequence[VesEventEnvelope],
        rejections: list[Rejection],
        texts_of: dict[int, StoredTexts],
    ) -> list[Verified]:
        """Steps 3–5 for every pending event, first failure wins per event."""
        if not pending:
            return []
        loop = asyncio.get_running_loop()
        digests = await self._in_pool(
            loop, partial(_validate_chunk, strict=self.strict_format), pending
        )
        valid: list[tuple[VesEventEnvelope, ves_envelope.Validated]] = []
        for env, checked in zip(pending, digests, strict=True):
            if isinstance(checked, Rejection):
                rejections.append(checked)
            else:
                valid.append((env, checked))
        now = self.clock()
        # A batch usually names one key; look each distinct key up once.
        wanted = {(env.tenant_id, env.source_agent_id, env.agent_key_id) for env, _ in valid}
        found = {ident: await self.keys.get(*ident) for ident in wanted}
        keyed: list[tuple[VesEventEnvelope, bytes, bytes]] = []
        kept: list[ves_envelope.Validated] = []
        for env, checked in valid:
            key = found[(env.tenant_id, env.source_agent_id, env.agent_key_id)]
            problem = check_key(env, key_problem(key, now))
            if problem is not None:
                rejections.append(problem)
            else:
                assert key is not None  # key_problem reports a missing key
                keyed.append((env, key.public_key, checked.signing_hash))
                kept.append(checked)
        if not keyed:
            return []
        results = await self._in_pool(loop, _verify_chunk, keyed)
        verified: list[Verified] = []
        for (env, _pk, digest), checked, problem in zip(keyed, kept, results, strict=True):
            if problem is not None:
                rejections.append(problem)
            else:
                verified.append(Verified(env, digest, checked.created_at, texts_of[id(env)]))
        return verified

    async def _in_pool(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[Sequence[Any]], list[Any]],
        items: Sequence[Any],
    ) -> list[Any]:
        """Run ``fn`` over chunks of ``items`` in the thread pool, keeping order. A few
        events are cheaper to check on the loop than to hand to a thread and back."""
        if len(items) <= INLINE_CHECK_MAX:
            return fn(items)
        chunk = max(64, -(-len(items) // self._workers))
        parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        done = await asyncio.gather(*(loop.run_in_executor(self._pool, fn, part) for part in parts))
        return [x for part in done for x in part]
