"""Steps 7–10 of ingest: the stream transaction, with group commit.

Concurrent batches for one stream queue up behind the stream's counter lock; one worker
per busy stream merges what has queued into a single transaction and still hands each
caller its own outcomes. Inside the transaction each event is placed in turn: a replay,
a ``command_id`` already taken, a ``base_version`` conflict, or the next sequence number
with a freshly signed receipt.

Ingest's checks keep what a store cannot hold out of the transaction; should something
still fail it (other than the database being down), the merged batches are committed one
by one, so the batch at fault fails alone and every other caller gets its receipts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..store.errors import ConcurrentWriteError, OperationalError, StoreError
from ..store.ports import EventLog
from ..store.records import Existing, NewEvent, StoredEvent, StreamKey
from ..ves.signing import Receipt, ReceiptSigner
from .outcomes import Accepted, Outcome, Rejection, Replayed, Verified, replay_verdict

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    items: Sequence[Verified]
    future: asyncio.Future[tuple[list[Outcome], int]]


class StreamWriter:
    """Appends verified events to streams, merging batches that queue up for one stream
    into a single transaction (group commit) while giving each caller its own outcomes.

    One worker task per busy stream drains its queue; it exits when the queue is empty.
    """

    def __init__(
        self,
        store: EventLog,
        receipt_signer: ReceiptSigner,
        clock: Callable[[], datetime],
        max_group_events: int = 5000,
        max_retries: int = 3,
        on_commit: Callable[[StreamKey, int], None] | None = None,
    ) -> None:
        self._store = store
        # Told each committed head, after the commit (the live streams' announcer).
        self._on_commit = on_commit
        self._signer = receipt_signer
        self._clock = clock
        self._max_group_events = max_group_events
        self._max_retries = max_retries
        self._queues: dict[StreamKey, list[_Request]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    @property
    def busy_streams(self) -> int:
        """Streams with a group-commit worker running now."""
        return len(self._queues)

    async def append(
        self, stream: StreamKey, items: Sequence[Verified]
    ) -> tuple[list[Outcome], int]:
        """Outcomes in the order of ``items``, and the stream head after the commit."""
        future: asyncio.Future[tuple[list[Outcome], int]] = (
            asyncio.get_running_loop().create_future()
        )
        queue = self._queues.get(stream)
        if queue is None:
            queue = self._queues[stream] = []
            queue.append(_Request(items, future))
            # The loop keeps only weak references to tasks: hold the worker until it ends.
            task = asyncio.get_running_loop().create_task(self._drain(stream, queue))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        else:
            queue.append(_Request(items, future))
        return await future

    async def _drain(self, stream: StreamKey, queue: list[_Request]) -> None:
        try:
            while queue:
                group: list[_Request] = []
                size = 0
                while queue and (not group or size + len(queue[0].items) <= self._max_group_events):
                    request = queue.pop(0)
                    group.append(request)
                    size += len(request.items)
                await self._commit_group(stream, group)
        finally:
            del self._queues[stream]

    async def _commit_group(self, stream: StreamKey, group: list[_Request]) -> None:
        """Commit the merged group; if its transaction fails for a reason that may lie in
        one batch's data, commit each batch alone, so only the batch at fault fails."""
        try:
            results, head = await self._commit(stream, group)
        except Exception as exc:
            if len(group) == 1 or not _may_be_one_batch(exc):
                self._fail(group, _as_store_fault(exc))
                return
            log.warning(
                "group commit of %d batches failed (%s: %s); committing them one by one",
                len(group),
                type(exc).__name__,
                str(exc)[:300],
            )
            for request in group:
                await self._commit_group(stream, [request])
            return
        if self._on_commit is not None and any(
            isinstance(outcome, Accepted) for outcomes in results for outcome in outcomes
        ):
            self._on_commit(stream, head)
        for request, outcomes in zip(group, results, strict=True):
            if not request.future.done():
                request.future.set_result((outcomes, head))

    async def _commit(
        self, stream: StreamKey, group: list[_Request]
    ) -> tuple[list[list[Outcome]], int]:
        """One transaction for the group, retried while another stream's writer takes an
        event id meanwhile (each attempt re-classifies every event)."""
        for _attempt in range(self._max_retries):
            try:
                return await self._transaction(stream, group)
            except ConcurrentWriteError:
                continue
        try:
            return await self._transaction(stream, group)
        except ConcurrentWriteError:
            # A store fault like any other: the HTTP layer maps it (503, retry).
            raise ConcurrentWriteError("event id conflict persisted after retries") from None

    @staticmethod
    def _fail(group: list[_Request], exc: BaseException) -> None:
        for request in group:
            if not request.future.done():
                request.future.set_exception(exc)

    async def _transaction(
        self, stream: StreamKey, group: list[_Request]
    ) -> tuple[list[list[Outcome]], int]:
        all_items = [item for request in group for item in request.items]
        async with self._store.stream_transaction(stream) as tx:
            known = await tx.existing([i.envelope.event_id for i in all_items])
            commands = [i.envelope.command_id for i in all_items if i.envelope.command_id]
            taken = await tx.taken_commands(commands) if commands else {}
            entities = list({(i.envelope.entity_type, i.envelope.entity_id) for i in all_items})
            versions = await tx.entity_versions(entities)
            state = _TxState(tx.head, known, taken, versions)
            now = self._clock()
            results = [
                [self._place(stream, state, item, now) for item in request.items]
                for request in group
            ]
            if state.new_events:
                touched = {(e.envelope.entity_type, e.envelope.entity_id) for e in state.new_events}
                await tx.write(
                    state.new_events, {k: state.versions[k] for k in touched}, state.head
                )
            return results, state.head

    def _place(self, stream: StreamKey, state: _TxState, item: Verified, now: datetime) -> Outcome:
        """Decide one event's fate under the lock: replay, command duplicate, version
        conflict, or the next sequence number with a fresh receipt."""
        env = item.envelope
        hit = state.known.get(env.event_id)
        if hit is not None:
            verdict = replay_verdict(stream, env, hit)
            return Replayed(verdict) if isinstance(verdict, Receipt) else verdict
        if env.command_id is not None and env.command_id in state.taken:
            return Rejection(
                env.event_id, "duplicate_command_id", f"Command {env.command_id} already processed"
            )
        entity = (env.entity_type, env.entity_id)
        actual = state.versions.get(entity, 0)
        if env.base_version is not None and env.base_version != actual:
            return Rejection(
                env.event_id,
                f"version_conflict: expected {env.base_version}, actual {actual}",
                f"Entity {env.entity_type}/{env.entity_id} is at version {actual}",
            )
        seq = state.head + 1
        receipt = self._signer.issue(
            tenant_id=stream.tenant_id,
            store_id=stream.store_id,
            event_id=env.event_id,
            sequence_number=seq,
            event_signing_hash=item.signing_hash,
            sequenced_at=now,
        )
        new = NewEvent(env, item.signing_hash, seq, now, receipt)
        state.head = seq
        state.versions[entity] = actual + 1
        state.new_events.append(new)
        # Later batches merged into this transaction see this event as already stored.
        state.known[env.event_id] = _existing_from_new(new)
        if env.command_id is not None:
            state.taken[env.command_id] = env.event_id
        return Accepted(receipt)


@dataclass(slots=True)
class _TxState:
    head: int
    known: dict[uuid.UUID, Existing]
    taken: dict[uuid.UUID, uuid.UUID]
    versions: dict[tuple[str, str], int]
    new_events: list[NewEvent] = field(default_factory=list)


def _may_be_one_batch(exc: Exception) -> bool:
    """Whether a failed group transaction may owe its fault to one batch's data, so that
    committing the batches one by one can save the others. Not when the database is
    unreachable or refused the work (every batch would wait for the same fault again, one
    after the other), nor when concurrent writers kept colliding (already retried)."""
    return not isinstance(exc, OperationalError | ConcurrentWriteError)


def _as_store_fault(exc: Exception) -> Exception:
    """A fault inside the transaction as the store fault the callers are told of: a value
    a driver could not encode (anything not a :class:`StoreError`) is the store refusing
    the batch. The driver's text stays in the message, for the log, never a response."""
    if isinstance(exc, StoreError):
        return exc
    fault = StoreError(f"the store refused the batch: {type(exc).__name__}: {exc}"[:500])
    fault.__cause__ = exc
    return fault


def _existing_from_new(new: NewEvent) -> Existing:
    return Existing(
        StoredEvent(new.envelope, new.sequence_number, new.sequenced_at, new.event_signing_hash),
        new.receipt,
    )
