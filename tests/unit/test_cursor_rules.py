"""The cursor rules of ``sequencer/cursors.py`` without a database: which values are
sequences, who may read or move whose cursor, and the lag."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.sequencer import cursors
from stateset_sequencer.sequencer.auth import NIL, AuthContext, AuthError, AuthReason
from stateset_sequencer.store.errors import AheadOfHeadError
from stateset_sequencer.store.ports import AgentCursors
from stateset_sequencer.store.records import AgentCursor, CursorPosition, StreamKey

TENANT = uuid.UUID(int=0xA1)
STORE = uuid.UUID(int=0xB1)
STREAM = StreamKey(TENANT, STORE)
AGENT = uuid.UUID(int=0x22)
OTHER = uuid.UUID(int=0x33)
AT = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=cursors.MAX_STORED_SEQUENCE))
def test_every_storable_sequence_is_taken_as_is(value: int) -> None:
    assert cursors.parse_sequence(value) == value


@given(st.integers(min_value=cursors.MAX_STORED_SEQUENCE + 1, max_value=cursors.MAX_WIRE_SEQUENCE))
def test_a_u64_no_stream_can_reach_is_past_the_head(value: int) -> None:
    with pytest.raises(cursors.CursorError) as refused:
        cursors.parse_sequence(value)
    assert refused.value.reason is cursors.CursorReason.AHEAD_OF_HEAD
    assert refused.value.message == "sequenceNumber cannot exceed the stream head"


@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=cursors.MAX_WIRE_SEQUENCE + 1),
        st.booleans(),
        st.floats(),
        st.text(),
        st.none(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_anything_else_is_an_invalid_sequence(value: object) -> None:
    with pytest.raises(cursors.CursorError) as refused:
        cursors.parse_sequence(value)
    assert refused.value.reason is cursors.CursorReason.INVALID_SEQUENCE


def ctx(**kw: object) -> AuthContext:
    values: dict[str, object] = {"tenant_id": TENANT, "can_read": True}
    values.update(kw)
    return AuthContext(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "caller",
    [
        ctx(agent_id=AGENT),
        ctx(agent_id=AGENT, store_ids=(STORE,)),
        ctx(can_read=False, can_write=True, can_admin=True),  # a tenant admin, any agent
        ctx(tenant_id=NIL, can_admin=True),  # the global admin
    ],
    ids=["own agent", "own agent, store-scoped", "tenant admin", "global admin"],
)
def test_who_may_touch_the_agents_cursor(caller: AuthContext) -> None:
    cursors.authorize(caller, STREAM, AGENT)


def test_another_agent_or_no_agent_is_denied() -> None:
    for caller in (ctx(agent_id=OTHER), ctx(), ctx(agent_id=OTHER, can_write=True)):
        with pytest.raises(cursors.CursorError) as refused:
            cursors.authorize(caller, STREAM, AGENT)
        assert refused.value.reason is cursors.CursorReason.AGENT_ACCESS_DENIED
        assert refused.value.message == "Agent access denied"


def test_read_access_to_the_stream_comes_first() -> None:
    cases = [
        (ctx(tenant_id=uuid.UUID(int=0xA2), agent_id=AGENT), AuthReason.TENANT_ACCESS_DENIED),
        (ctx(agent_id=AGENT, store_ids=(uuid.UUID(int=0xB2),)), AuthReason.STORE_ACCESS_DENIED),
        (ctx(can_read=False, agent_id=AGENT), AuthReason.INSUFFICIENT_PERMISSIONS),
    ]
    for caller, reason in cases:
        with pytest.raises(AuthError) as refused:
            cursors.authorize(caller, STREAM, AGENT)
        assert refused.value.reason is reason


@pytest.mark.parametrize(("head", "ack", "lag"), [(10, 4, 6), (4, 4, 0), (3, 5, 0), (0, 0, 0)])
def test_lag_saturates_at_zero(head: int, ack: int, lag: int) -> None:
    assert cursors.CursorView(STREAM, AGENT, ack, head, None).lag == lag


class _Refusing(AgentCursors):
    """A port that refuses every advance as past a head of 3."""

    async def get_cursor(self, stream: StreamKey, agent_id: uuid.UUID) -> AgentCursor | None:
        return None

    async def cursor_position(self, stream: StreamKey, agent_id: uuid.UUID) -> CursorPosition:
        return CursorPosition(None, 3)

    async def advance_cursor(
        self, stream: StreamKey, agent_id: uuid.UUID, sequence: int, *, now: datetime
    ) -> CursorPosition:
        raise AheadOfHeadError(sequence, 3)

    async def list_cursors(
        self, tenant_id: uuid.UUID | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[AgentCursor]:
        return []


async def test_the_stores_refusal_becomes_the_rules() -> None:
    with pytest.raises(cursors.CursorError) as refused:
        await cursors.acknowledge(_Refusing(), ctx(agent_id=AGENT), STREAM, AGENT, 4, now=AT)
    assert refused.value.reason is cursors.CursorReason.AHEAD_OF_HEAD
    view = await cursors.read_cursor(_Refusing(), ctx(agent_id=AGENT), STREAM, AGENT)
    assert (view.acknowledged_sequence, view.head_sequence, view.lag, view.updated_at) == (
        0,
        3,
        3,
        None,
    )
