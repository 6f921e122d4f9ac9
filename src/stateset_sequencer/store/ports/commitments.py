"""Commitment rows, the leaf inputs they are computed from, and their anchors."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import datetime

from ..records import AnchorOutcome, CommitBacklog, CommitmentRow, LeafInput, StreamKey


class Commitments(ABC):
    """Rows of ``ves_commitments``: Merkle roots over ranges of a stream and the state
    roots they chain into. The engine (``sequencer/commitments.py``) computes them; the
    store keeps them and guards the chain: one commitment per (stream, sequence_start),
    which, with every commitment starting where an existing one ends, keeps each stream's
    commitments one unbroken chain whoever writes them. Reads the engine builds on are made
    on the primary, so a commitment just written is always seen."""

    @abstractmethod
    async def put_commitment(self, row: CommitmentRow) -> None:
        """:class:`IntegrityError` on a duplicate batch id or stream start."""

    @abstractmethod
    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None: ...

    @abstractmethod
    async def list_commitments(
        self, stream: StreamKey, anchored: bool | None = None, limit: int | None = None
    ) -> list[CommitmentRow]:
        """A stream's commitments ordered by sequence_start: all of them, or only those
        with (``anchored=True``) or without (``False``) a chain transaction."""

    @abstractmethod
    async def last_commitment(self, stream: StreamKey) -> CommitmentRow | None:
        """The stream's commitment with the highest ``sequence_end`` (the chain's tip)."""

    @abstractmethod
    async def commitment_starting_at(
        self, stream: StreamKey, sequence_start: int
    ) -> CommitmentRow | None: ...

    @abstractmethod
    async def commitment_covering(
        self, stream: StreamKey, sequence_number: int
    ) -> CommitmentRow | None:
        """The commitment whose range holds ``sequence_number``, if any."""

    @abstractmethod
    async def leaf_inputs(self, stream: StreamKey, start: int, end: int) -> list[LeafInput]:
        """The leaf inputs of the stream's stored events in ``start..=end``, in sequence
        order (a hole is simply absent: the caller checks contiguity)."""

    @abstractmethod
    async def pending_commitments(self, limit: int) -> list[CommitmentRow]:
        """Commitments of every stream without a chain transaction, oldest first (by
        ``committed_at``, then stream order), at most ``limit``."""

    @abstractmethod
    async def pending_heads(self, limit: int) -> list[CommitmentRow]:
        """The first commitment without a chain transaction of each stream that has one,
        oldest first, at most ``limit``: one row per stream, so that a stream stuck at its
        first cannot hide the others from the anchor worker."""

    @abstractmethod
    async def record_anchor(
        self,
        batch_id: uuid.UUID,
        chain_id: int,
        chain_tx_hash: bytes,
        chain_block_number: int | None,
        anchored_at: datetime | None,
    ) -> tuple[AnchorOutcome, CommitmentRow | None]:
        """Set the chain fields of an unanchored commitment, atomically: the same
        transaction hash again is ``ALREADY_RECORDED`` (nothing changes), another one is
        ``CONFLICT``. ``anchored_at=None`` records a transaction still short of finality
        (our anchor worker); the anchor service reports final ones. Returns the row as it
        stands afterwards."""

    @abstractmethod
    async def unconfirmed_anchors(self, limit: int) -> list[CommitmentRow]:
        """Commitments of every stream with a chain transaction but no ``anchored_at``
        yet, oldest block first, at most ``limit``."""

    @abstractmethod
    async def confirm_anchor(self, row: CommitmentRow, anchored_at: datetime) -> bool:
        """Set ``anchored_at`` if the commitment still has ``row``'s transaction and no
        ``anchored_at``; False when another writer changed it meanwhile."""

    @abstractmethod
    async def clear_anchor(self, row: CommitmentRow) -> bool:
        """Clear the chain fields if the commitment still has ``row``'s transaction (the
        chain dropped it in a reorg, so it is to be anchored again); False otherwise."""

    @abstractmethod
    async def commit_backlog(self, after: StreamKey | None, limit: int) -> list[CommitBacklog]:
        """Streams whose head is past their last commitment, in (tenant, store) order,
        starting after ``after``, at most ``limit`` (what the commit worker walks)."""
