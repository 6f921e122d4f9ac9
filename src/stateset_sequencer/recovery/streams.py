"""Facts about a stream that several recovery tools must read the same way."""

from __future__ import annotations

from ..store.ports import Maintenance
from ..store.records import CounterState, StreamKey
from .export import StreamRange


def stream_top(state: CounterState) -> int:
    """The highest sequence number the stream has used: the higher of its counter and its
    highest stored event. Export and verify-events run their ranges up to it: events
    stored above a counter left behind by a bad restore must not be skipped, and numbers
    a counter issued beyond the last stored event are in range, so verify-events reports
    them missing."""
    return max(state.counter or 0, state.max_sequence)


class UnknownStream(Exception):
    """The options name a stream the database does not hold."""


async def stream_states(store: Maintenance, stream: StreamKey | None) -> list[CounterState]:
    """The counter states of one stream (it must exist) or of every stream."""
    states = await store.counter_states(stream)
    if stream is not None and not states:
        raise UnknownStream(f"no stream {stream.tenant_id}/{stream.store_id} in this database")
    return states


def export_ranges(
    states: list[CounterState], start: int | None, end: int | None
) -> list[StreamRange]:
    """Each stream's range from ``start`` (1) up to ``end``, never past the stream's top."""
    ranges = []
    for state in states:
        top = stream_top(state)
        ranges.append(StreamRange(state.stream, start or 1, min(end or top, top)))
    return ranges
