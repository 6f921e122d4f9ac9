"""Agent cursors: how far an agent says it has processed a stream, and its lag behind the
head (REFERENCE_DELTA §3.3). No HTTP here: the routes parse, call these and shape.

The rules, each stated once:

* **Who.** Any credential with read access to the (tenant, store), as ``ensure_read``
  judges it; read is enough to acknowledge, since consumers that only read still report
  progress. Unless the credential is an admin (of the tenant, or the global one), it must
  be bound to the agent it names: an agent sees and moves only its own cursor, and a key
  bound to no agent moves none. Otherwise 403 ``Agent access denied``.
* **What.** A sequence is an integer from 0 to 2^64-1, the reference's u64 (anything
  else, booleans and fractions included, is refused as a wrong type). One above the
  stream's head is refused, with nothing written: an agent cannot acknowledge what has
  not been sequenced. The head is read in the same transaction as the write.
* **Monotonic.** A cursor only moves up. Acknowledging a lower or equal sequence is not an
  error: acknowledgements arrive late and are retried, so the answer is 200 with the
  stored (higher) value, and ``updated_at`` still records this acknowledgement as the
  agent's latest sign of life.
* **Lag.** ``head - acknowledged``, never below 0 (a counter repaired downwards can leave a
  cursor above the head until the stream catches up).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from ..store.errors import AheadOfHeadError
from ..store.ports import AgentCursors
from ..store.records import CursorPosition, StreamKey
from .auth import AuthContext, ensure_read

MAX_WIRE_SEQUENCE = 2**64 - 1  # the reference's u64
MAX_STORED_SEQUENCE = 2**63 - 1  # a BIGINT: no stream head can exceed it
AGENT_ACCESS_DENIED_MESSAGE = "Agent access denied"
AHEAD_OF_HEAD_MESSAGE = "sequenceNumber cannot exceed the stream head"
INVALID_SEQUENCE_MESSAGE = f"sequenceNumber must be an integer from 0 to {MAX_WIRE_SEQUENCE}"


class CursorReason(enum.StrEnum):
    """Why a cursor read or acknowledgement is refused; ``api/http/errors.py`` maps each
    to its status and code."""

    AGENT_ACCESS_DENIED = "agent_access_denied"
    INVALID_SEQUENCE = "invalid_sequence"
    AHEAD_OF_HEAD = "ahead_of_head"


class CursorError(Exception):
    def __init__(self, reason: CursorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class CursorView:
    """What a cursor route answers: the agent's position (0 and no time when it never
    acknowledged) beside the head it was read or checked against."""

    stream: StreamKey
    agent_id: uuid.UUID
    acknowledged_sequence: int
    head_sequence: int
    updated_at: datetime | None

    @property
    def lag(self) -> int:
        return max(self.head_sequence - self.acknowledged_sequence, 0)


def authorize(ctx: AuthContext, stream: StreamKey, agent_id: uuid.UUID) -> None:
    """Raises ``AuthError`` (no read access to the stream) or :class:`CursorError`
    (another agent's cursor)."""
    ensure_read(ctx, stream.tenant_id, stream.store_id)
    if not ctx.can_admin and ctx.agent_id != agent_id:
        raise CursorError(CursorReason.AGENT_ACCESS_DENIED, AGENT_ACCESS_DENIED_MESSAGE)


def parse_sequence(value: object) -> int:
    """The acknowledged sequence as sent; :class:`CursorError` unless a u64. A u64 past
    what a stream can hold is answered as past the head without asking the store."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WIRE_SEQUENCE:
        raise CursorError(CursorReason.INVALID_SEQUENCE, INVALID_SEQUENCE_MESSAGE)
    if value > MAX_STORED_SEQUENCE:
        raise CursorError(CursorReason.AHEAD_OF_HEAD, AHEAD_OF_HEAD_MESSAGE)
    return value


def _view(stream: StreamKey, agent_id: uuid.UUID, position: CursorPosition) -> CursorView:
    cursor = position.cursor
    return CursorView(
        stream,
        agent_id,
        cursor.acknowledged_sequence if cursor is not None else 0,
        position.head_sequence,
        cursor.updated_at if cursor is not None else None,
    )


async def read_cursor(
    store: AgentCursors, ctx: AuthContext, stream: StreamKey, agent_id: uuid.UUID
) -> CursorView:
    authorize(ctx, stream, agent_id)
    return _view(stream, agent_id, await store.cursor_position(stream, agent_id))


async def acknowledge(
    store: AgentCursors,
    ctx: AuthContext,
    stream: StreamKey,
    agent_id: uuid.UUID,
    sequence: object,
    *,
    now: datetime | None = None,
) -> CursorView:
    """Raise the agent's cursor to ``sequence`` (a lower or equal one leaves it where it
    is) and answer its position afterwards."""
    authorize(ctx, stream, agent_id)
    checked = parse_sequence(sequence)
    try:
        position = await store.advance_cursor(
            stream, agent_id, checked, now=now if now is not None else datetime.now(UTC)
        )
    except AheadOfHeadError:
        raise CursorError(CursorReason.AHEAD_OF_HEAD, AHEAD_OF_HEAD_MESSAGE) from None
    return _view(stream, agent_id, position)
