"""Commitment rows."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod

from ..records import (
    CommitmentRow,
    StreamKey,
)


class Commitments(ABC):
    """Rows of ``ves_commitments``: Merkle roots over ranges of a stream and the state
    roots they chain into. The engine that computes them (a later issue) grows this port."""

    @abstractmethod
    async def put_commitment(self, row: CommitmentRow) -> None:
        """:class:`IntegrityError` on a duplicate batch id or stream start."""

    @abstractmethod
    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None: ...

    @abstractmethod
    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        """A stream's commitments ordered by sequence_start."""
