"""Facts about a stream that several recovery tools must read the same way."""

from __future__ import annotations

from ..store.records import CounterState


def stream_top(state: CounterState) -> int:
    """The highest sequence number the stream has used: the higher of its counter and its
    highest stored event. Export and verify-events run their ranges up to it: events
    stored above a counter left behind by a bad restore must not be skipped, and numbers
    a counter issued beyond the last stored event are in range, so verify-events reports
    them missing."""
    return max(state.counter or 0, state.max_sequence)
