"""Pages bounded by bytes (``store.paging``), the same on every backend: ``read_page`` and
``read_entity(max_bytes=…)`` end a page before the event that would take it past the
budget, never give an empty page while events remain, say so, and following them
returns every event exactly once."""

from __future__ import annotations

from typing import Any

from stateset_sequencer.store import paging
from stateset_sequencer.store.ports import EventLog
from stateset_sequencer.store.records import StoredEvent, StreamKey
from stateset_sequencer.ves import jsontext
from tests.contract.builders import append, make_event, new_stream, stored

KB = 1024
BIG = 900 * KB


def size_of(event: StoredEvent) -> int:
    """The rule of ``store.paging``, computed here from the envelope as stored."""
    env = event.envelope
    texts = [
        jsontext.payload_text(env),
        jsontext.encrypted_text(env),
        jsontext.bundle_text(env),
        env.entity_type,
        env.entity_id,
        env.event_type,
    ]
    return sum(len(t.encode("utf-8")) for t in texts if t is not None) + paging.EVENT_FIXED_BYTES


def blob(n: int, bytes_: int) -> dict[str, Any]:
    # Multi-byte text, so a backend counting characters instead of bytes is caught.
    return {"n": n, "blob": "é" * (bytes_ // 2)}


async def big_stream(event_log: EventLog) -> tuple[StreamKey, list[StoredEvent]]:
    """Eleven events: 900 KB ones (entity A) between small ones (entity B), and one
    encrypted, in three appends."""
    stream = new_stream()
    events = []
    for i in range(11):
        if i % 3 == 2:
            events.append(make_event(stream, i, entity_id="B"))
        elif i == 7:
            events.append(
                make_event(stream, i, entity_id="A", encrypted=True, payload=blob(i, BIG))
            )
        else:
            events.append(make_event(stream, i, entity_id="A", payload=blob(i, BIG)))
    news = []
    for part in (events[:4], events[4:8], events[8:]):
        news += await append(event_log, stream, part)
    return stream, [stored(n) for n in news]


def assert_bounded(page: list[StoredEvent], budget: int) -> None:
    assert page, "a page is never empty while events remain"
    assert len(page) == 1 or sum(size_of(e) for e in page) <= budget


async def test_read_page_cuts_by_bytes_and_continues(event_log: EventLog) -> None:
    stream, expected = await big_stream(event_log)
    for budget in (1, BIG, 2 * BIG + 10 * KB, 4 * KB * KB):
        seen: list[StoredEvent] = []
        start, pages = 1, 0
        while start <= len(expected):
            page = await event_log.read_page(stream, start, len(expected), budget)
            assert_bounded(page.events, budget)
            # The page ends just before the event that does not fit, not earlier.
            rest = expected[len(seen) + len(page.events) :]
            if page.truncated:
                assert rest and sum(size_of(e) for e in [*page.events, rest[0]]) > budget
            else:
                assert rest == []
            seen += page.events
            start = page.events[-1].sequence_number + 1
            pages += 1
        assert seen == expected  # every event once, in order
        if budget == 1:
            assert pages == len(expected)
    whole = await event_log.read_page(stream, 1, 100, 100 * KB * KB)
    assert whole.events == expected and not whole.truncated
    # The range still bounds the page; an empty range is an empty, whole page.
    assert (await event_log.read_page(stream, 3, 4, 100 * KB * KB)).events == expected[2:4]
    assert (await event_log.read_page(stream, 12, 20, 1)).events == []
    assert not (await event_log.read_page(stream, 12, 20, 1)).truncated
    assert (await event_log.read_page(new_stream(), 1, 10, 1)).events == []


async def test_read_page_counts_small_events_too(event_log: EventLog) -> None:
    stream = new_stream()
    news = await append(event_log, stream, [make_event(stream, i) for i in range(40)])
    expected = [stored(n) for n in news]
    budget = 10 * paging.EVENT_FIXED_BYTES
    page = await event_log.read_page(stream, 1, 40, budget)
    assert page.truncated and 1 < len(page.events) < 10
    assert page.events == expected[: len(page.events)]
    fits = sum(size_of(e) for e in expected[: len(page.events) + 1])
    assert sum(size_of(e) for e in page.events) <= budget < fits


async def test_read_entity_cuts_by_bytes_and_continues(event_log: EventLog) -> None:
    stream, expected = await big_stream(event_log)
    of_a = [e for e in expected if e.envelope.entity_id == "A"]
    for budget in (1, 2 * BIG + 10 * KB):
        seen: list[StoredEvent] = []
        offset = 0
        while offset < len(of_a):
            page, total = await event_log.read_entity(stream, "order", "A", offset, 3, budget)
            assert total == len(of_a)
            assert_bounded(page, budget)
            assert len(page) <= 3
            seen += page
            offset += len(page)
        assert seen == of_a
    # Without a budget, or with room to spare, the count alone bounds the page.
    assert await event_log.read_entity(stream, "order", "A", 1, 3) == (of_a[1:4], len(of_a))
    roomy = await event_log.read_entity(stream, "order", "A", 1, 3, 100 * KB * KB)
    assert roomy == (of_a[1:4], len(of_a))
    assert await event_log.read_entity(stream, "order", "A", 50, 3, 1) == ([], len(of_a))
    assert await event_log.read_entity(stream, "order", "A", 0, 0, 1) == ([], len(of_a))
    assert await event_log.read_entity(stream, "order", "Z", 0, 3, 1) == ([], 0)
