"""Commitments over stored events and the inclusion proofs they hand out (VES_PROTOCOL
§6-§7). No HTTP here: the routes parse, call these and shape.

The rules, each stated once:

* **A range.** ``[start, end]`` with ``1 <= start <= end``, at most
  :data:`MAX_COMMIT_EVENTS` events, every sequence number of it stored (a hole or a
  number past the head is refused: a commitment vouches for every event it names).
* **The chain.** A stream's first commitment starts at 1; each later one starts at the
  previous one's end + 1, and its ``prev_state_root`` is that one's ``new_state_root``
  (zeros for the first). The same ``[start, end]`` again returns the stored commitment
  (idempotent, so a client may retry); another range from a start already committed is
  a conflict. The store keeps one commitment per (stream, start), so two creators racing
  cannot fork the chain: the loser is answered as a retry or a conflict.
* **Leaves.** :func:`event_leaf` (stream, sequence, ``event_signing_hash``, signature),
  read from the stored columns, so what the verifier recomputes is what was committed.
* **Proofs.** The commitment holding a sequence is found when no batch is named; the
  path has one entry per tree level (length = depth <= 64) and one direction per entry
  (True: the running node is the left child). A proof whose recomputed root differs from
  the stored one is an integrity fault (:class:`CommitmentIntegrityError`), never handed
  out. Trees of recent commitments are
  kept in a bounded cache (:class:`TreeCache`): commitments never change, so a cached
  tree can only be evicted, never stale.

CPU work (hashing the leaves and the tree) happens before anything is written; the write
is one insert.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..store.errors import IntegrityError
from ..store.ports import Commitments, EventLog
from ..store.records import CommitBacklog, CommitmentRow, LeafInput, StoredEvent, StreamKey
from ..ves import hashing, merkle
from ..ves.errors import BadProof

log = structlog.get_logger("stateset_sequencer.commitments")

VES_VERSION = 1  # the commitment format (leaf and state-root recipes), not the event's
MAX_COMMIT_EVENTS = 1 << 20  # a tree of depth 20; the leaves alone are 32 MiB
LEAF_READ_CHUNK = 10_000
MAX_SEQUENCE = 2**63 - 1  # a BIGINT: no stream holds more


class CommitmentReason(enum.StrEnum):
    """Why a commitment or proof request is refused; ``api/http/errors.py`` maps each to
    its status and code."""

    INVALID_RANGE = "invalid_range"
    RANGE_TOO_LARGE = "range_too_large"
    NOT_NEXT = "range_not_next"
    RANGE_CONFLICT = "range_conflict"
    EVENTS_MISSING = "events_missing"
    NOTHING_TO_COMMIT = "nothing_to_commit"
    NOT_FOUND = "commitment_not_found"
    NOT_COMMITTED = "not_committed"
    OUTSIDE_COMMITMENT = "outside_commitment"
    WRONG_STREAM = "commitment_of_another_stream"


class CommitmentError(Exception):
    def __init__(self, reason: CommitmentReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CommitmentIntegrityError(Exception):
    """A stored commitment no longer matches the stored events it covers: the log was
    damaged after it was committed. Not a refusal of the request but a fault of the data,
    which ``verify-events`` names event by event; no proof is handed out."""


def event_leaf(event: StoredEvent, signing_hash: bytes | None = None) -> bytes:
    """The Merkle leaf of a stored event (VES_PROTOCOL §6.1): its stream, sequence number,
    ``event_signing_hash`` and agent signature.

    ``signing_hash`` replaces the stored ``event_signing_hash`` column: the verifier passes
    the hash it recomputed from the stored fields, so that a commitment is checked
    against the content as signed rather than only against the column.
    """
    env = event.envelope
    return hashing.leaf_hash(
        env.tenant_id,
        env.store_id,
        event.sequence_number,
        event.event_signing_hash if signing_hash is None else signing_hash,
        env.agent_signature,
    )


def _leaves(stream: StreamKey, inputs: Sequence[LeafInput]) -> list[bytes]:
    return [
        hashing.leaf_hash(
            stream.tenant_id,
            stream.store_id,
            item.sequence_number,
            item.event_signing_hash,
            item.agent_signature,
        )
        for item in inputs
    ]


def check_range(start: int, end: int) -> None:
    if start < 1 or end < start or end > MAX_SEQUENCE:
        raise CommitmentError(
            CommitmentReason.INVALID_RANGE,
            f"a range is 1 <= sequence_start <= sequence_end <= {MAX_SEQUENCE}; got {start}..{end}",
        )
    if end - start + 1 > MAX_COMMIT_EVENTS:
        raise CommitmentError(
            CommitmentReason.RANGE_TOO_LARGE,
            f"a commitment covers at most {MAX_COMMIT_EVENTS} events; got {end - start + 1}",
        )


@dataclass(frozen=True, slots=True)
class Created:
    """A commitment and whether this call made it (False: the same range was stored)."""

    row: CommitmentRow
    created: bool


@dataclass(frozen=True, slots=True)
class Preview:
    """The next commitment a stream would get, from ``start``; ``commitment`` is None
    when the event at ``start`` itself is missing (nothing can be committed)."""

    start: int
    commitment: merkle.Commitment | None


@dataclass(frozen=True, slots=True)
class Proof:
    """One inclusion proof with the commitment it proves against."""

    sequence_number: int
    commitment: CommitmentRow
    proof: merkle.InclusionProof


class TreeCache:
    """The levels of recently used commitment trees, bounded by their total node count
    (about 100 bytes of memory each). Keyed by (tenant, batch id)."""

    def __init__(self, max_nodes: int = 1 << 18) -> None:
        self._max_nodes = max_nodes
        self._nodes = 0
        self._trees: OrderedDict[tuple[uuid.UUID, uuid.UUID], list[list[bytes]]] = OrderedDict()

    def get(self, key: tuple[uuid.UUID, uuid.UUID]) -> list[list[bytes]] | None:
        levels = self._trees.get(key)
        if levels is not None:
            self._trees.move_to_end(key)
        return levels

    def put(self, key: tuple[uuid.UUID, uuid.UUID], levels: list[list[bytes]]) -> None:
        size = sum(len(level) for level in levels)
        if size > self._max_nodes or key in self._trees:
            return
        while self._trees and self._nodes + size > self._max_nodes:
            _, dropped = self._trees.popitem(last=False)
            self._nodes -= sum(len(level) for level in dropped)
        self._trees[key] = levels
        self._nodes += size


class CommitmentEngine:
    """Creates commitments and hands out proofs over one store."""

    def __init__(
        self, commitments: Commitments, events: EventLog, trees: TreeCache | None = None
    ) -> None:
        self._commitments = commitments
        self._events = events
        self._trees = trees if trees is not None else TreeCache()

    async def _tree(
        self, stream: StreamKey, start: int, end: int, *, prefix: bool = False
    ) -> tuple[list[bytes], list[list[bytes]]]:
        """The leaves and levels over the stored events ``start..=end``; refused unless
        every one of them is stored (``prefix``: the run up to the first missing one)."""
        inputs: list[LeafInput] = []
        at = start
        while at <= end:
            chunk_end = min(at + LEAF_READ_CHUNK - 1, end)
            chunk = await self._commitments.leaf_inputs(stream, at, chunk_end)
            expected = list(range(at, chunk_end + 1))
            if [item.sequence_number for item in chunk] != expected:
                have = {item.sequence_number for item in chunk}
                first = next(n for n in expected if n not in have)
                if prefix:
                    inputs.extend(item for item in chunk if item.sequence_number < first)
                    break
                raise CommitmentError(
                    CommitmentReason.EVENTS_MISSING,
                    f"sequence {first} of {start}..{end} is not stored; a commitment covers "
                    "only events that are all present",
                )
            inputs.extend(chunk)
            at = chunk_end + 1
        # Hashing a large range is CPU work: off the event loop.
        return await asyncio.to_thread(_hash_tree, stream, inputs)

    async def preview_next(self, stream: StreamKey, max_events: int) -> Preview | None:
        """What committing the stream's next range would give now, computed and not
        stored: from the tip + 1 up to the head (at most ``max_events``), stopping before
        the first missing event. None when there is nothing past the tip."""
        tip = await self._commitments.last_commitment(stream)
        start = 1 if tip is None else tip.sequence_end + 1
        head = await self._events.head(stream)
        if head < start:
            return None
        end = min(head, start + max(min(max_events, MAX_COMMIT_EVENTS), 1) - 1)
        leaves, levels = await self._tree(stream, start, end, prefix=True)
        if not leaves:
            return Preview(start, None)
        prev = hashing.ZERO_HASH if tip is None else bytes(tip.new_state_root)
        made = merkle.commit(stream.tenant_id, stream.store_id, start, leaves, prev, levels=levels)
        return Preview(start, made)

    async def recomputes(self, row: CommitmentRow) -> bool:
        """Whether the stored events of a commitment still give its stored roots
        (``EVENTS_MISSING`` when some are gone)."""
        stream = StreamKey(row.tenant_id, row.store_id)
        leaves, levels = await self._tree(stream, row.sequence_start, row.sequence_end)
        again = merkle.commit(
            row.tenant_id,
            row.store_id,
            row.sequence_start,
            leaves,
            bytes(row.prev_state_root),
            levels=levels,
        )
        return (again.merkle_root, again.new_state_root) == (
            bytes(row.merkle_root),
            bytes(row.new_state_root),
        )

    async def create(
        self, stream: StreamKey, start: int, end: int, *, now: datetime | None = None
    ) -> Created:
        check_range(start, end)
        # The tip first: a commitment stored after this read is then seen by the next one
        # (a retry of the same range is answered with it) or collides at insert.
        tip = await self._commitments.last_commitment(stream)
        same = await self._commitments.commitment_starting_at(stream, start)
        if same is not None:
            return self._same_or_conflict(same, end)
        expected = 1 if tip is None else tip.sequence_end + 1
        if start != expected:
            raise CommitmentError(
                CommitmentReason.NOT_NEXT,
                f"the next commitment of this stream starts at {expected}, not {start}",
            )
        leaves, levels = await self._tree(stream, start, end)
        made = merkle.commit(
            stream.tenant_id,
            stream.store_id,
            start,
            leaves,
            hashing.ZERO_HASH if tip is None else bytes(tip.new_state_root),
            levels=levels,
        )
        row = CommitmentRow(
            batch_id=uuid.uuid4(),
            tenant_id=stream.tenant_id,
            store_id=stream.store_id,
            ves_version=VES_VERSION,
            tree_depth=made.tree_depth,
            leaf_count=made.leaf_count,
            padded_leaf_count=made.padded_leaf_count,
            merkle_root=made.merkle_root,
            prev_state_root=made.prev_state_root,
            new_state_root=made.new_state_root,
            sequence_start=made.sequence_start,
            sequence_end=made.sequence_end,
            committed_at=now or datetime.now(UTC),
        )
        try:
            await self._commitments.put_commitment(row)
        except IntegrityError:
            # Another creator stored a commitment from this start meanwhile.
            raced = await self._commitments.commitment_starting_at(stream, start)
            if raced is None:
                raise
            return self._same_or_conflict(raced, end)
        self._trees.put((row.tenant_id, row.batch_id), levels)
        return Created(row, True)

    @staticmethod
    def _same_or_conflict(stored: CommitmentRow, end: int) -> Created:
        if stored.sequence_end == end:
            return Created(stored, False)
        raise CommitmentError(
            CommitmentReason.RANGE_CONFLICT,
            f"a commitment already exists for start {stored.sequence_start} but ends at "
            f"{stored.sequence_end}",
        )

    async def create_next(
        self, stream: StreamKey, max_events: int, *, now: datetime | None = None
    ) -> Created:
        """Commit from the chain's tip + 1 up to the head, at most ``max_events`` events."""
        tip = await self._commitments.last_commitment(stream)
        start = 1 if tip is None else tip.sequence_end + 1
        head = await self._events.head(stream)
        if head < start:
            raise CommitmentError(
                CommitmentReason.NOTHING_TO_COMMIT,
                f"no events to commit: the stream's head is {head} and its commitments "
                f"reach {start - 1}",
            )
        end = min(head, start + max(min(max_events, MAX_COMMIT_EVENTS), 1) - 1)
        return await self.create(stream, start, end, now=now)

    async def commit_due(
        self,
        *,
        max_events: int,
        interval_seconds: float,
        now: datetime | None = None,
        page: int = 500,
    ) -> list[CommitmentRow]:
        """One pass of automatic commitments over every stream: full batches of
        ``max_events`` as long as that many are pending, then the rest once the oldest
        uncommitted event is ``interval_seconds`` old. Returns what was committed."""
        moment = now or datetime.now(UTC)
        made: list[CommitmentRow] = []
        after: StreamKey | None = None
        while True:
            backlog = await self._commitments.commit_backlog(after, page)
            for item in backlog:
                made.extend(await self._commit_stream(item, max_events, interval_seconds, moment))
            if len(backlog) < page:
                return made
            after = backlog[-1].stream

    async def _commit_stream(
        self, item: CommitBacklog, max_events: int, interval_seconds: float, now: datetime
    ) -> list[CommitmentRow]:
        made: list[CommitmentRow] = []
        committed, oldest = item.committed_through, item.oldest_uncommitted_at
        while item.head > committed:
            pending = item.head - committed
            old = oldest is not None and (now - oldest).total_seconds() >= interval_seconds
            if pending < max_events and not old:
                break
            end = committed + min(pending, max_events)
            try:
                result = await self.create(item.stream, committed + 1, end, now=now)
            except CommitmentError as exc:
                # Another creator got there first (the next pass sees its commitment), or
                # the range has a hole, which stalls this stream until it is repaired and
                # must not stall the others.
                if exc.reason is CommitmentReason.EVENTS_MISSING:
                    log.error(
                        "automatic commitment stalled: events are missing",
                        tenant_id=str(item.stream.tenant_id),
                        store_id=str(item.stream.store_id),
                        detail=exc.message,
                    )
                elif exc.reason not in (CommitmentReason.RANGE_CONFLICT, CommitmentReason.NOT_NEXT):
                    raise
                break
            made.append(result.row)
            committed, oldest = end, None  # what is left is younger than what was committed
        return made

    async def proof(
        self, stream: StreamKey, sequence_number: int, batch_id: uuid.UUID | None = None
    ) -> Proof:
        """The inclusion proof of ``sequence_number`` in the commitment named, or in the
        one holding it when none is named."""
        if batch_id is None:
            row = await self._commitments.commitment_covering(stream, sequence_number)
            if row is None:
                raise CommitmentError(
                    CommitmentReason.NOT_COMMITTED,
                    f"sequence {sequence_number} is not in any commitment yet",
                )
        else:
            found = await self._commitments.get_commitment(batch_id)
            if found is None:
                raise CommitmentError(CommitmentReason.NOT_FOUND, "Commitment not found")
            if (found.tenant_id, found.store_id) != (stream.tenant_id, stream.store_id):
                raise CommitmentError(
                    CommitmentReason.WRONG_STREAM, "the commitment belongs to another stream"
                )
            if not found.sequence_start <= sequence_number <= found.sequence_end:
                raise CommitmentError(
                    CommitmentReason.OUTSIDE_COMMITMENT,
                    f"sequence {sequence_number} is outside the commitment's range "
                    f"{found.sequence_start}..{found.sequence_end}",
                )
            row = found
        levels = await self.levels(row)
        proof = merkle.proof_from_levels(
            levels, sequence_number - row.sequence_start, row.leaf_count
        )
        return Proof(sequence_number, row, proof)

    async def all_proofs(self, row: CommitmentRow) -> list[Proof]:
        """The proof of every event of one commitment, from one tree (for handing a whole
        batch of proofs to an auditor, or to agents that keep their own)."""
        levels = await self.levels(row)
        return [
            Proof(row.sequence_start + i, row, merkle.proof_from_levels(levels, i, row.leaf_count))
            for i in range(row.leaf_count)
        ]

    async def levels(self, row: CommitmentRow) -> list[list[bytes]]:
        """The tree of a stored commitment, rebuilt from the stored events unless cached;
        an integrity fault when it no longer gives the stored root."""
        key = (row.tenant_id, row.batch_id)
        cached = self._trees.get(key)
        if cached is not None:
            return cached
        stream = StreamKey(row.tenant_id, row.store_id)
        try:
            _, levels = await self._tree(stream, row.sequence_start, row.sequence_end)
        except CommitmentError as exc:
            raise CommitmentIntegrityError(
                f"commitment {row.batch_id} covers events that are no longer stored "
                f"({exc.message}); run sequencer-cli verify-events"
            ) from None
        if levels[-1][0] != bytes(row.merkle_root):
            raise CommitmentIntegrityError(
                f"the stored events of commitment {row.batch_id} no longer give its Merkle "
                "root; run sequencer-cli verify-events",
            )
        self._trees.put(key, levels)
        return levels


def _hash_tree(
    stream: StreamKey, inputs: Sequence[LeafInput]
) -> tuple[list[bytes], list[list[bytes]]]:
    leaves = _leaves(stream, inputs)
    return leaves, merkle.tree_levels(leaves)


# --- verifying a proof someone hands us -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProofCheck:
    valid: bool
    leaf_hash: bytes
    merkle_root: bytes


def check_proof(
    leaf_hash: bytes,
    merkle_root: bytes,
    proof_path: Sequence[bytes],
    leaf_index: int,
    directions: Sequence[bool] | None = None,
) -> ProofCheck:
    """Whether the proof leads from the leaf to the root. Directions, when sent, must be
    the ones the index gives (one per path entry): a proof whose directions disagree with
    its index is not one the reference SDK would accept either. Malformed input (a
    non-32-byte hash, a path over 64 entries) is ``BadProof`` for the caller to refuse."""
    if len(proof_path) > merkle.MAX_PROOF_DEPTH:
        raise BadProof(f"a proof path has at most {merkle.MAX_PROOF_DEPTH} entries")
    if len(leaf_hash) != 32 or len(merkle_root) != 32 or any(len(p) != 32 for p in proof_path):
        raise BadProof("hashes are 32 bytes (64 hex digits)")
    if leaf_index < 0:
        raise BadProof("leaf_index is not negative")
    valid = merkle.is_included(leaf_hash, merkle_root, proof_path, leaf_index)
    if valid and directions is not None:
        wanted = [(leaf_index >> depth) & 1 == 0 for depth in range(len(proof_path))]
        valid = list(directions) == wanted
    return ProofCheck(valid, leaf_hash, merkle_root)
