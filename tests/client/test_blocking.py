"""The blocking client is the async one, method for method: the same names and
signatures, its loop on a thread of its own that closes with it."""

from __future__ import annotations

import inspect
import threading
import uuid
from typing import Any

import pytest

from stateset_sequencer.client import (
    RetryPolicy,
    SequencerClient,
    SequencerError,
    SyncSequencerClient,
)
from stateset_sequencer.testing import kit
from tests.client.scripted import Sleeps, ok, scripted, status

# What the async client has that the blocking one answers otherwise (the context manager).
ASYNC_ONLY = {"close"}


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member) and not isinstance(member, type)
    }


def test_every_async_method_has_its_blocking_twin_with_the_same_signature() -> None:
    async_methods = public_methods(SequencerClient)
    blocking = public_methods(SyncSequencerClient)
    assert set(async_methods) == set(blocking)
    for name, method in async_methods.items():
        if name in ASYNC_ONLY:
            continue
        twin = blocking[name]
        assert twin.__wrapped__ is method, name
        assert inspect.signature(twin) == inspect.signature(method), name
        assert twin.__doc__ == method.__doc__, name
    assert inspect.signature(SyncSequencerClient.__init__) == inspect.signature(
        SequencerClient.__init__
    )
    properties = {n for n, m in inspect.getmembers(SequencerClient) if isinstance(m, property)}
    assert properties <= {n for n in dir(SyncSequencerClient) if not n.startswith("_")}


def page(first: int, count: int, more: bool) -> dict[str, Any]:
    events = [{"envelope": {"sequence_number": n}} for n in range(first, first + count)]
    return {"events": events, "next_sequence": first + count, "has_more": more}


def test_blocking_calls_and_the_iterator_form_of_iter_events() -> None:
    pages = (ok(page(1, 2, True)), ok(page(3, 2, True)), ok(page(5, 1, False)))
    with scripted(*pages, then=ok({"head_sequence": 5})) as server:
        with SyncSequencerClient(server.url, "ss_key") as client:
            numbers = [e["sequence_number"] for e in client.iter_events(kit.TENANT, kit.STORE_ID)]
            assert numbers == [1, 2, 3, 4, 5]
            head: int = client.head(kit.TENANT, kit.STORE_ID)
            assert head == 5
            assert client.base_url == server.url
        froms = [s.path.split("from=")[1].split("&")[0] for s in server.seen[:3]]
        assert froms == ["1", "3", "5"]


def test_an_iterator_left_early_is_closed_and_the_client_still_works() -> None:
    with scripted(then=ok(page(1, 3, True))) as server, SyncSequencerClient(server.url) as client:
        items = client.iter_events(kit.TENANT, kit.STORE_ID)
        assert next(items)["sequence_number"] == 1
        items.close()  # runs the async generator's aclose on the loop
        assert client.events(kit.TENANT, kit.STORE_ID)[0]["sequence_number"] == 1


def test_errors_and_state_come_through_unchanged() -> None:
    sleeps = Sleeps()
    retry = RetryPolicy(attempts=2, sleep=sleeps)
    with (
        scripted(status(503), then=status(409)) as server,
        SyncSequencerClient(server.url, retry=retry) as client,
    ):
        with pytest.raises(SequencerError) as refused:
            client.get_agent(uuid.uuid4())
        assert refused.value.status == 409 and len(refused.value.attempts) == 2
        assert len(sleeps.asked) == 1
        client.allow_unsigned_receipts = True
        client.sequencer_public_key = b"k" * 32
        client.retry = RetryPolicy.none()
        assert client._client.allow_unsigned_receipts is True
        assert client._client.sequencer_public_key == b"k" * 32
        assert client.retry.attempts == 1


def test_close_stops_the_thread_and_later_calls_are_refused() -> None:
    before = set(threading.enumerate())
    client = SyncSequencerClient("http://127.0.0.1:1")
    (thread,) = set(threading.enumerate()) - before
    assert thread.daemon and thread.name == "sequencer-client"
    client.close()
    client.close()  # twice is fine
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        client.health()


async def test_a_blocking_client_works_under_a_running_event_loop() -> None:
    # Its loop is its own, so code that has one running (a notebook) can still call it.
    with scripted(then=ok({"status": "healthy"})) as server, SyncSequencerClient(server.url) as c:
        assert c.health() == {"status": "healthy"}
