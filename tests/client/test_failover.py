"""Several base URLs: a failed attempt moves to the next one, round robin, and the client
keeps to the URL that answered."""

from __future__ import annotations

import httpx
import pytest

from stateset_sequencer.client import (
    RetryPolicy,
    SequencerClient,
    SequencerError,
    SequencerUnavailable,
)
from stateset_sequencer.testing import kit
from tests.client.scripted import Sleeps, dead_url, ok, scripted, status

HEAD = {"head_sequence": 3}


def client(urls: list[str], sleeps: Sleeps, attempts: int = 5) -> SequencerClient:
    retry = RetryPolicy(attempts=attempts, sleep=sleeps, jitter=lambda: 1.0)
    return SequencerClient(urls, "ss_key", timeout=5.0, retry=retry)


async def test_a_refused_connection_moves_to_the_next_url_which_is_kept() -> None:
    sleeps = Sleeps()
    down = dead_url()
    with scripted(then=ok(HEAD)) as up:
        async with client([down, up.url], sleeps) as sdk:
            assert sdk.base_url == down and sdk.base_urls == (down, up.url)
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 3
            assert sdk.base_url == up.url
            assert len(sleeps.asked) == 1
            # Later calls start where the last one succeeded: no refused connection again.
            for _ in range(3):
                assert await sdk.head(kit.TENANT, kit.STORE_ID) == 3
            assert len(sleeps.asked) == 1
        assert up.count == 4


async def test_a_retryable_status_moves_on_and_the_client_sticks_to_the_other_node() -> None:
    sleeps = Sleeps()
    with scripted(status(503), then=ok(HEAD)) as first, scripted(then=ok(HEAD)) as second:
        async with client([first.url, second.url], sleeps) as sdk:
            for _ in range(3):
                assert await sdk.head(kit.TENANT, kit.STORE_ID) == 3
            assert sdk.base_url == second.url
        assert (first.count, second.count) == (1, 3)


async def test_an_answer_that_is_not_retried_does_not_move_the_client() -> None:
    sleeps = Sleeps()
    with scripted(status(404), then=ok(HEAD)) as first, scripted(then=ok(HEAD)) as second:
        async with client([first.url, second.url], sleeps) as sdk:
            with pytest.raises(SequencerError):
                await sdk.head(kit.TENANT, kit.STORE_ID)
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 3
            assert sdk.base_url == first.url  # the node answered: it works
        assert (first.count, second.count) == (2, 0)


async def test_when_every_url_fails_each_attempt_is_named_in_turn() -> None:
    sleeps = Sleeps()
    a, b = dead_url(), dead_url()
    with scripted(then=status(503)) as c:
        async with client([a, b, c.url], sleeps, attempts=3) as sdk:
            with pytest.raises(SequencerError) as answered:
                await sdk.health()
        # The last attempt was answered: its answer is raised, every attempt listed.
        assert [t.url for t in answered.value.attempts] == [a, b, c.url]
        assert answered.value.status == 503

        async with client([a, b, c.url], sleeps) as sdk:
            with pytest.raises(SequencerUnavailable) as unavailable:
                await sdk.health()
    # The last attempt had no answer: unavailable, with every attempt in turn.
    assert [t.url for t in unavailable.value.attempts] == [a, b, c.url, a, b]
    text = str(unavailable.value)
    assert "\n" not in text and "GET /health: no answer after 5 attempts" in text
    assert a in text and b in text and "HTTP 503" in text and "ConnectError" in text
    assert unavailable.value.urls == (a, b, c.url)
    assert unavailable.value.reached_server  # c answered 503: it was reached


async def test_a_call_that_is_not_idempotent_fails_over_only_when_it_never_left() -> None:
    sleeps = Sleeps()
    minted = {"apiKey": "ss_new", "keyHashPrefix": "cd" * 8}
    with scripted(then=ok(minted)) as up:
        async with client([dead_url(), up.url], sleeps) as sdk:
            assert await sdk.create_api_key(kit.TENANT) == "ss_new"
        assert up.count == 1
    with scripted(then=status(503)) as first, scripted(then=ok(minted)) as second:
        async with client([first.url, second.url], sleeps) as sdk:
            with pytest.raises(SequencerError) as refused:
                await sdk.create_api_key(kit.TENANT)
            assert refused.value.status == 503
        assert (first.count, second.count) == (1, 0)


async def test_unreachable_everywhere_is_an_httpx_transport_error_too() -> None:
    sleeps = Sleeps()
    async with client([dead_url()], sleeps, attempts=2) as sdk:
        with pytest.raises(httpx.TransportError) as caught:
            await sdk.health()
    assert isinstance(caught.value, SequencerUnavailable)
    assert not caught.value.reached_server
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
