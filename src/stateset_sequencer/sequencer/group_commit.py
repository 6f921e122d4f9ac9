"""Steps 7–10 of ingest: the stream transaction, with group commit.

Concurrent batches for one stream queue up behind the stream's counter lock; one worker
per busy stream merges what has queued into a single transaction and still hands each
caller its own outcomes. Inside the transaction each event is placed in turn: a replay,
a ``command_id`` already taken, a ``base_version`` conflict, or the next sequence number
with a freshly signed receipt.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..store.errors import ConcurrentWriteError
from ..store.ports import EventLog
from ..store.records import Existing, NewEvent, StoredEvent, StreamKey
from ..ves.signing import Receipt, ReceiptSigner
from .outcomes import Accepted, Outcome, Rejection, Replayed, Verified, replay_verdict


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
    ) -> None:
        self._store = store
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
        for attempt in range(self._max_retries + 1):
            try:
                results, head = await self._transaction(stream, group)
            except ConcurrentWriteError:
                if attempt < self._max_retries:
                    continue  # another stream took an event id meanwhile: re-classify
                # A store fault like any other: the HTTP layer maps it (503, retry).
                self._fail(group, ConcurrentWriteError("event id conflict persisted after retries"))
                return
            except Exception as exc:  # a database fault fails every merged batch, whole
                self._fail(group, exc)
                return
            for request, outcomes in zip(group, results, strict=True):
                if not request.future.done():
                    request.future.set_result((outcomes, head))
            return

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


def _existing_from_new(new: NewEvent) -> Existing:
    return Existing(
        StoredEvent(new.envelope, new.sequence_number, new.sequenced_at, new.event_signing_hash),
        new.receipt,
    )
