"""Steps 7–10 of ingest: the append transaction, with group commit.

Concurrent batches queue up; one worker per lane merges what has queued into a single
transaction and still hands each caller its own outcomes. A lane is one stream, or, where
the store says one transaction over several streams beats one per stream
(``Capabilities.merge_streams``: SQLite's single writer, whose commit is the cost), every
stream at once. Inside the transaction each event is placed in turn: a replay, a
``command_id`` already taken, a ``base_version`` conflict, or the next sequence number.
The receipts of every placed event are then signed together, in the thread pool.

Ingest's checks keep what a store cannot hold out of the transaction; should something
still fail it (other than the database being down), the merged work is committed again in
smaller parts (each stream alone, then each batch alone), so the batch at fault fails
alone and every other caller gets its receipts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime

from ..store.errors import ConcurrentWriteError, OperationalError, StoreError
from ..store.ports import EventLog
from ..store.records import Existing, NewEvent, StoredEvent, StreamKey
from ..ves.signing import Receipt, ReceiptSigner
from .outcomes import Accepted, Outcome, Rejection, Replayed, Verified, replay_verdict

log = logging.getLogger(__name__)

# Fewer receipts than this are signed on the loop: a hand-off to a thread and back costs
# about what signing four does.
INLINE_SIGN_MAX = 4
# The lane of every stream when the store merges streams.
_ONE_LANE = StreamKey(uuid.UUID(int=0), uuid.UUID(int=0))


@dataclass(slots=True)
class _Request:
    stream: StreamKey
    items: Sequence[Verified]
    future: asyncio.Future[tuple[list[Outcome], int]]


Groups = dict[StreamKey, list[_Request]]


class StreamWriter:
    """Appends verified events to streams, merging batches that queue up into a single
    transaction (group commit) while giving each caller its own outcomes.

    One worker task per busy lane drains its queue; it exits when the queue is empty.
    """

    def __init__(
        self,
        store: EventLog,
        receipt_signer: ReceiptSigner,
        clock: Callable[[], datetime],
        max_group_events: int = 5000,
        max_retries: int = 3,
        on_commit: Callable[[StreamKey, int], None] | None = None,
        *,
        merge_streams: bool = False,
        executor: Executor | None = None,
        sign_threads: int = 1,
    ) -> None:
        self._store = store
        # Told each committed head, after the commit (the live streams' announcer).
        self._on_commit = on_commit
        self._signer = receipt_signer
        self._clock = clock
        self._max_group_events = max_group_events
        self._max_retries = max_retries
        self._merge_streams = merge_streams
        self._executor = executor
        self._sign_threads = max(1, sign_threads)
        self._queues: dict[StreamKey, list[_Request]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._busy: dict[StreamKey, int] = {}

    @property
    def busy_streams(self) -> int:
        """Streams with events queued or being committed now."""
        return len(self._busy)

    async def append(
        self, stream: StreamKey, items: Sequence[Verified]
    ) -> tuple[list[Outcome], int]:
        """Outcomes in the order of ``items``, and the stream head after the commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[list[Outcome], int]] = loop.create_future()
        lane = _ONE_LANE if self._merge_streams else stream
        request = _Request(stream, items, future)
        self._busy[stream] = self._busy.get(stream, 0) + 1
        try:
            queue = self._queues.get(lane)
            if queue is None:
                queue = self._queues[lane] = [request]
                # The loop keeps only weak references to tasks: hold the worker until it ends.
                task = loop.create_task(self._drain(lane, queue))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)
            else:
                queue.append(request)
            return await future
        finally:
            left = self._busy[stream] - 1
            if left:
                self._busy[stream] = left
            else:
                del self._busy[stream]

    async def _drain(self, lane: StreamKey, queue: list[_Request]) -> None:
        try:
            while queue:
                groups: Groups = {}
                size, limit = 0, self._max_group_events
                while queue and (not groups or size + len(queue[0].items) <= limit):
                    request = queue.pop(0)
                    groups.setdefault(request.stream, []).append(request)
                    size += len(request.items)
                await self._commit_groups(groups)
        finally:
            del self._queues[lane]

    async def _commit_groups(self, groups: Groups) -> None:
        """Commit the merged groups; if their transaction fails for a reason that may lie
        in one batch's data, commit each stream's group alone, then each batch alone, so
        only the batch at fault fails."""
        try:
            results, heads = await self._commit(groups)
        except Exception as exc:
            requests = [r for group in groups.values() for r in group]
            if len(requests) == 1 or not _may_be_one_batch(exc):
                self._fail(requests, _as_store_fault(exc))
                return
            log.warning(
                "group commit of %d batches over %d streams failed (%s: %s); "
                "committing them in parts",
                len(requests),
                len(groups),
                type(exc).__name__,
                str(exc)[:300],
            )
            if len(groups) > 1:
                parts = [{stream: group} for stream, group in groups.items()]
            else:
                parts = [{r.stream: [r]} for r in requests]
            for part in parts:
                await self._commit_groups(part)
            return
        for stream, group in groups.items():
            outcomes_of = results[stream]
            if self._on_commit is not None and any(
                isinstance(outcome, Accepted) for outcomes in outcomes_of for outcome in outcomes
            ):
                self._on_commit(stream, heads[stream])
            for request, outcomes in zip(group, outcomes_of, strict=True):
                if not request.future.done():
                    request.future.set_result((outcomes, heads[stream]))

    async def _commit(
        self, groups: Groups
    ) -> tuple[dict[StreamKey, list[list[Outcome]]], dict[StreamKey, int]]:
        """One transaction for the groups, retried while another writer takes an event id
        meanwhile. The first attempt trusts ingest's check for known ids, made just
        before; each retry looks every event up again under the locks."""
        for attempt in range(self._max_retries + 1):
            try:
                return await self._transaction(groups, recheck=attempt > 0)
            except ConcurrentWriteError:
                continue
        # A store fault like any other: the HTTP layer maps it (503, retry).
        raise ConcurrentWriteError("event id conflict persisted after retries") from None

    @staticmethod
    def _fail(requests: list[_Request], exc: BaseException) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(exc)

    async def _transaction(
        self, groups: Groups, *, recheck: bool
    ) -> tuple[dict[StreamKey, list[list[Outcome]]], dict[StreamKey, int]]:
        async with self._store.append_transaction(list(groups)) as tx:
            known: dict[uuid.UUID, Existing] = {}
            if recheck:
                ids = [i.envelope.event_id for g in groups.values() for r in g for i in r.items]
                known = await tx.existing(ids)
            now = self._clock()
            placed: dict[StreamKey, tuple[_TxState, list[list[_Placement]]]] = {}
            # Event ids placed so far in this transaction, whichever stream placed them.
            placed_ids: dict[uuid.UUID, tuple[_TxState, int]] = {}
            for stream, group in groups.items():
                part = tx.streams[stream]
                items = [item for request in group for item in request.items]
                commands = [i.envelope.command_id for i in items if i.envelope.command_id]
                taken = await part.taken_commands(commands) if commands else {}
                # Versions are read only to check a base_version; the write raises each
                # touched entity's version by its count of new events, in the database.
                versions: dict[tuple[str, str], int] = {}
                if any(i.envelope.base_version is not None for i in items):
                    entities = list({(i.envelope.entity_type, i.envelope.entity_id) for i in items})
                    versions = await part.entity_versions(entities)
                state = _TxState(stream, part.head, known, taken, versions, placed_ids)
                placed[stream] = (
                    state,
                    [[_place(state, item) for item in request.items] for request in group],
                )
            await self._sign([state for state, _ in placed.values()], now)
            results: dict[StreamKey, list[list[Outcome]]] = {}
            heads: dict[StreamKey, int] = {}
            for stream, (state, placements) in placed.items():
                results[stream] = [[_outcome(state, p) for p in ps] for ps in placements]
                heads[stream] = state.head
                if state.new_events:
                    await tx.streams[stream].write(state.new_events, state.increments, state.head)
            return results, heads

    async def _sign(self, states: list[_TxState], now: datetime) -> None:
        """Issue the receipts of every placed event, a slice per thread where there are
        enough of them (PyNaCl signs without the GIL), and make the new events."""
        jobs: list[tuple[_TxState, int, int]] = []
        total = sum(len(state.placed) for state in states)
        if not total:
            return
        slice_size = max(64, -(-total // self._sign_threads))
        for state in states:
            for start in range(0, len(state.placed), slice_size):
                jobs.append((state, start, min(start + slice_size, len(state.placed))))
        if total <= INLINE_SIGN_MAX or self._executor is None:
            signed = [self._issue(state, start, end, now) for state, start, end in jobs]
        else:
            loop = asyncio.get_running_loop()
            signed = await asyncio.gather(
                *(
                    loop.run_in_executor(self._executor, self._issue, state, start, end, now)
                    for state, start, end in jobs
                )
            )
        for (state, start, _end), receipts in zip(jobs, signed, strict=True):
            for offset, receipt in enumerate(receipts):
                p = state.placed[start + offset]
                item = p.item
                state.new_events.append(
                    NewEvent(item.envelope, item.signing_hash, p.sequence_number, now,
                             receipt, item.created_at, item.texts)
                )  # fmt: skip

    def _issue(self, state: _TxState, start: int, end: int, now: datetime) -> list[Receipt]:
        return self._signer.issue_many(
            tenant_id=state.stream.tenant_id,
            store_id=state.stream.store_id,
            events=[
                (p.item.envelope.event_id, p.sequence_number, p.item.signing_hash)
                for p in state.placed[start:end]
            ],
            sequenced_at=now,
        )


@dataclass(frozen=True, slots=True)
class _Placed:
    """An event given the next sequence number, its receipt still to be signed."""

    item: Verified
    sequence_number: int


@dataclass(frozen=True, slots=True)
class _SameAsPlaced:
    """An event whose id an earlier batch of the transaction placed (in this stream or
    another merged with it): judged against that event once its receipt exists."""

    item: Verified
    owner: _TxState
    index: int


_Placement = Outcome | int | _SameAsPlaced  # int: the index of a placed event


@dataclass(slots=True)
class _TxState:
    stream: StreamKey
    head: int
    known: dict[uuid.UUID, Existing]
    taken: dict[uuid.UUID, uuid.UUID]
    versions: dict[tuple[str, str], int]  # as stored (read when a base_version needs them)
    placed_ids: dict[uuid.UUID, tuple[_TxState, int]]
    increments: dict[tuple[str, str], int] = field(default_factory=dict)
    placed: list[_Placed] = field(default_factory=list)
    new_events: list[NewEvent] = field(default_factory=list)


def _place(state: _TxState, item: Verified) -> _Placement:
    """Decide one event's fate under the lock: replay, command duplicate, version
    conflict, or the next sequence number (its receipt is signed after every placement)."""
    env = item.envelope
    stream = state.stream
    earlier = state.placed_ids.get(env.event_id)
    if earlier is not None:
        return _SameAsPlaced(item, *earlier)
    hit = state.known.get(env.event_id)
    if hit is not None:
        verdict = replay_verdict(stream, env, hit)
        return Replayed(verdict) if isinstance(verdict, Receipt) else verdict
    if env.command_id is not None and env.command_id in state.taken:
        return Rejection(
            env.event_id, "duplicate_command_id", f"Command {env.command_id} already processed"
        )
    entity = (env.entity_type, env.entity_id)
    actual = state.versions.get(entity, 0) + state.increments.get(entity, 0)
    if env.base_version is not None and env.base_version != actual:
        return Rejection(
            env.event_id,
            f"version_conflict: expected {env.base_version}, actual {actual}",
            f"Entity {env.entity_type}/{env.entity_id} is at version {actual}",
        )
    state.head += 1
    state.increments[entity] = state.increments.get(entity, 0) + 1
    # Later batches of this transaction see this event as already stored.
    state.placed_ids[env.event_id] = (state, len(state.placed))
    state.placed.append(_Placed(item, state.head))
    if env.command_id is not None:
        state.taken[env.command_id] = env.event_id
    return len(state.placed) - 1


def _outcome(state: _TxState, placement: _Placement) -> Outcome:
    """A placement as the caller's outcome, now that every receipt is signed."""
    if isinstance(placement, int):
        return Accepted(state.new_events[placement].receipt)
    if isinstance(placement, _SameAsPlaced):
        verdict = replay_verdict(
            state.stream,
            placement.item.envelope,
            _existing_from_new(placement.owner.new_events[placement.index]),
        )
        return Replayed(verdict) if isinstance(verdict, Receipt) else verdict
    return placement


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
