"""The AgentCursors contract, on both backends: a cursor only moves up, never past the
stream's head (checked in the transaction that writes it, nothing written on refusal),
racing acknowledgements end at the highest, and tenants and stores never share one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from stateset_sequencer.store.errors import AheadOfHeadError
from stateset_sequencer.store.ports import AgentCursors, Store
from stateset_sequencer.store.records import AgentCursor, CursorPosition, StreamKey
from tests.contract.builders import BASE_TIME, append, make_event, new_stream

AGENT = uuid.UUID("44444444-4444-4444-4444-444444444444")
OTHER_AGENT = uuid.UUID("55555555-5555-5555-5555-555555555555")
T0 = BASE_TIME


async def _stream_with(store: Store, count: int, stream: StreamKey | None = None) -> StreamKey:
    stream = stream or new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(count)])
    return stream


async def test_no_cursor_reads_as_none_beside_the_head(store: Store, cursors: AgentCursors) -> None:
    stream = await _stream_with(store, 3)
    assert await cursors.get_cursor(stream, AGENT) is None
    assert await cursors.cursor_position(stream, AGENT) == CursorPosition(None, 3)
    unknown = new_stream()
    assert await cursors.cursor_position(unknown, AGENT) == CursorPosition(None, 0)


async def test_acknowledging_zero_on_an_unknown_stream_creates_the_cursor(
    cursors: AgentCursors,
) -> None:
    stream = new_stream()
    position = await cursors.advance_cursor(stream, AGENT, 0, now=T0)
    expected = AgentCursor(stream.tenant_id, stream.store_id, AGENT, 0, T0)
    assert position == CursorPosition(expected, 0)
    assert await cursors.get_cursor(stream, AGENT) == expected


async def test_cursor_only_moves_up_and_records_each_acknowledgement(
    store: Store, cursors: AgentCursors
) -> None:
    stream = await _stream_with(store, 5)
    first = await cursors.advance_cursor(stream, AGENT, 3, now=T0)
    assert first.cursor is not None and first.cursor.acknowledged_sequence == 3
    assert first.head_sequence == 5

    # Lower and equal: the value stays, the time of the latest acknowledgement moves.
    later = T0 + timedelta(seconds=1, microseconds=17)
    lower = await cursors.advance_cursor(stream, AGENT, 2, now=later)
    assert lower.cursor == AgentCursor(stream.tenant_id, stream.store_id, AGENT, 3, later)
    equal = await cursors.advance_cursor(stream, AGENT, 3, now=later + timedelta(seconds=1))
    assert equal.cursor is not None and equal.cursor.acknowledged_sequence == 3

    top = await cursors.advance_cursor(stream, AGENT, 5, now=later + timedelta(seconds=2))
    assert top.cursor is not None and top.cursor.acknowledged_sequence == 5
    assert await cursors.get_cursor(stream, AGENT) == top.cursor


async def test_updated_at_never_moves_back(store: Store, cursors: AgentCursors) -> None:
    stream = await _stream_with(store, 4)
    await cursors.advance_cursor(stream, AGENT, 1, now=T0)
    # Another node with a slow clock raises the value: the value moves, the time does not.
    position = await cursors.advance_cursor(stream, AGENT, 4, now=T0 - timedelta(minutes=5))
    assert position.cursor == AgentCursor(stream.tenant_id, stream.store_id, AGENT, 4, T0)


async def test_past_the_head_is_refused_and_nothing_is_written(
    store: Store, cursors: AgentCursors
) -> None:
    stream = await _stream_with(store, 5)
    with pytest.raises(AheadOfHeadError) as refused:
        await cursors.advance_cursor(stream, AGENT, 6, now=T0)
    assert (refused.value.sequence, refused.value.head) == (6, 5)
    assert await cursors.get_cursor(stream, AGENT) is None

    stored = (await cursors.advance_cursor(stream, AGENT, 4, now=T0)).cursor
    for too_far in (6, 2**63 - 1):
        with pytest.raises(AheadOfHeadError):
            await cursors.advance_cursor(stream, AGENT, too_far, now=T0 + timedelta(hours=1))
    # Neither the value nor the time moved.
    assert await cursors.get_cursor(stream, AGENT) == stored

    await append(store, stream, [make_event(stream, 5)])
    after = await cursors.advance_cursor(stream, AGENT, 6, now=T0 + timedelta(seconds=1))
    assert after.head_sequence == 6
    assert after.cursor is not None and after.cursor.acknowledged_sequence == 6


@pytest.mark.parametrize("bad", [-1, 2**63, 2**64, True])
async def test_values_no_stream_can_hold_are_refused_before_the_store(
    cursors: AgentCursors, bad: int
) -> None:
    stream = new_stream()
    with pytest.raises(ValueError, match="cursor sequence"):
        await cursors.advance_cursor(stream, AGENT, bad, now=T0)
    assert await cursors.get_cursor(stream, AGENT) is None


async def test_racing_acknowledgements_end_at_the_highest(
    store: Store, cursors: AgentCursors
) -> None:
    stream = await _stream_with(store, 40)
    values = [(i * 7) % 41 for i in range(40)]  # 0..40 in a scrambled order
    results = await asyncio.gather(
        *(
            cursors.advance_cursor(stream, AGENT, v, now=T0 + timedelta(microseconds=i))
            for i, v in enumerate(values)
        )
    )
    final = await cursors.get_cursor(stream, AGENT)
    assert final is not None and final.acknowledged_sequence == max(values) == 40
    assert final.updated_at == T0 + timedelta(microseconds=len(values) - 1)
    # Every answer is a value that was stored at some point: at least what was asked.
    for value, position in zip(values, results, strict=True):
        assert position.cursor is not None and position.cursor.acknowledged_sequence >= value


async def test_acknowledgements_racing_appends_never_pass_the_head_they_saw(
    store: Store, cursors: AgentCursors
) -> None:
    stream = await _stream_with(store, 1)

    async def appends() -> None:
        for i in range(1, 21):
            await append(store, stream, [make_event(stream, i)])

    async def acks() -> list[CursorPosition | AheadOfHeadError]:
        seen: list[CursorPosition | AheadOfHeadError] = []
        for k in range(1, 41):
            try:
                seen.append(await cursors.advance_cursor(stream, AGENT, k // 2 + 1, now=T0))
            except AheadOfHeadError as exc:
                seen.append(exc)
        return seen

    _, seen = await asyncio.gather(appends(), acks())
    for outcome in seen:
        if isinstance(outcome, AheadOfHeadError):
            assert outcome.head < outcome.sequence
        else:
            assert outcome.cursor is not None
            assert outcome.cursor.acknowledged_sequence <= outcome.head_sequence
    final = await cursors.cursor_position(stream, AGENT)
    assert final.cursor is not None and final.cursor.acknowledged_sequence <= final.head_sequence


async def test_tenants_stores_and_agents_never_share_a_cursor(
    store: Store, cursors: AgentCursors
) -> None:
    store_id = uuid.uuid4()
    mine = await _stream_with(store, 5, StreamKey(uuid.uuid4(), store_id))
    # Another tenant's stream with the same store id and a lower head.
    theirs = await _stream_with(store, 2, StreamKey(uuid.uuid4(), store_id))
    sibling = await _stream_with(store, 9, StreamKey(mine.tenant_id, uuid.uuid4()))

    await cursors.advance_cursor(mine, AGENT, 5, now=T0)
    assert await cursors.get_cursor(theirs, AGENT) is None
    assert await cursors.get_cursor(sibling, AGENT) is None
    assert await cursors.get_cursor(mine, OTHER_AGENT) is None
    # Each stream's own head bounds its cursors.
    with pytest.raises(AheadOfHeadError):
        await cursors.advance_cursor(theirs, AGENT, 5, now=T0)
    await cursors.advance_cursor(sibling, AGENT, 9, now=T0)
    await cursors.advance_cursor(theirs, OTHER_AGENT, 1, now=T0)

    assert (await cursors.cursor_position(mine, AGENT)).cursor == AgentCursor(
        mine.tenant_id, store_id, AGENT, 5, T0
    )
    assert {(c.store_id, c.agent_id) for c in await cursors.list_cursors(mine.tenant_id)} == {
        (store_id, AGENT),
        (sibling.store_id, AGENT),
    }
    listed = await cursors.list_cursors(theirs.tenant_id)
    assert [(c.tenant_id, c.agent_id, c.acknowledged_sequence) for c in listed] == [
        (theirs.tenant_id, OTHER_AGENT, 1)
    ]


async def test_list_cursors_by_recency(store: Store, cursors: AgentCursors) -> None:
    stream = await _stream_with(store, 3)
    other = await _stream_with(store, 3)
    await cursors.advance_cursor(stream, AGENT, 1, now=T0)
    await cursors.advance_cursor(stream, OTHER_AGENT, 2, now=T0 + timedelta(hours=2))
    await cursors.advance_cursor(other, AGENT, 3, now=T0 + timedelta(hours=1))

    everyone = await cursors.list_cursors()
    mine = [c for c in everyone if c.tenant_id in (stream.tenant_id, other.tenant_id)]
    assert [(c.tenant_id, c.agent_id) for c in mine] == [
        (stream.tenant_id, OTHER_AGENT),
        (other.tenant_id, AGENT),
        (stream.tenant_id, AGENT),
    ]
    recent = await cursors.list_cursors(stream.tenant_id, since=T0 + timedelta(hours=1))
    assert [c.agent_id for c in recent] == [OTHER_AGENT]
    # ``since`` is inclusive.
    exact = await cursors.list_cursors(other.tenant_id, since=T0 + timedelta(hours=1))
    assert [c.acknowledged_sequence for c in exact] == [3]
    assert len(await cursors.list_cursors(stream.tenant_id, limit=1)) == 1
