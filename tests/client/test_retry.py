"""Retries against real loopback servers answering from a script: what is retried, how
often, after which wait, and what a call that is not idempotent is spared. The policy's
sleep is recorded instead of waited, so the waits asked for are checked exactly."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from stateset_sequencer.client import (
    RetryPolicy,
    SequencerClient,
    SequencerError,
    SequencerUnavailable,
)
from stateset_sequencer.client.retry import retry_after
from stateset_sequencer.testing import kit
from tests.client.scripted import CLOSE, RESET, Sleeps, Step, ok, scripted, status

HEAD = {"head_sequence": 7}


def policy(sleeps: Sleeps, **options: Any) -> RetryPolicy:
    # jitter 1.0: each backoff is its ceiling, base_delay * 2**(n-1) capped at max_delay.
    return RetryPolicy(sleep=sleeps, jitter=lambda: 1.0, **options)


def client(url: str | list[str], sleeps: Sleeps, **options: Any) -> SequencerClient:
    return SequencerClient(url, "ss_key", timeout=5.0, retry=policy(sleeps, **options))


async def test_a_scripted_run_of_failures_is_retried_until_it_succeeds() -> None:
    sleeps = Sleeps()
    script = (status(503, "0.05"), status(429, "1"), status(500), CLOSE, RESET)
    with scripted(*script, then=ok(HEAD)) as server:
        async with client(server.url, sleeps, attempts=6) as sdk:
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 7
        assert server.count == 6
    # Retry-After as asked; then the backoff ceilings of retries 3, 4 and 5.
    assert sleeps.asked == [0.05, 1.0, 0.8, 1.6, 3.2]


def test_full_jitter_draws_below_the_ceiling_and_the_cap_holds() -> None:
    draws = iter([0.5, 0.25, 0.999])
    jittered = RetryPolicy(jitter=lambda: next(draws))
    assert jittered.backoff(1) == pytest.approx(0.1)
    assert jittered.backoff(2) == pytest.approx(0.1)
    assert jittered.backoff(40) == pytest.approx(5.0 * 0.999)  # capped at max_delay
    assert RetryPolicy(jitter=lambda: 1.0).backoff(200) == 5.0  # no overflow far out


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 413, 422, 501])
async def test_other_statuses_are_never_retried(code: int) -> None:
    sleeps = Sleeps()
    with scripted(status(code), then=ok(HEAD)) as server:
        async with client(server.url, sleeps) as sdk:
            with pytest.raises(SequencerError) as refused:
                await sdk.head(kit.TENANT, kit.STORE_ID)
        assert refused.value.status == code and refused.value.code == "SCRIPTED"
        assert server.count == 1 and sleeps.asked == []


async def test_spent_attempts_raise_the_last_answer_with_every_attempt() -> None:
    sleeps = Sleeps()
    with scripted(status(502), status(504), then=status(503)) as server:
        async with client(server.url, sleeps, attempts=4) as sdk:
            with pytest.raises(SequencerError) as spent:
                await sdk.head(kit.TENANT, kit.STORE_ID)
        assert server.count == 4
    assert spent.value.status == 503
    assert [a.outcome for a in spent.value.attempts] == [
        "HTTP 502",
        "HTTP 504",
        "HTTP 503",
        "HTTP 503",
    ]
    assert sleeps.asked == [0.2, 0.4, 0.8]


async def test_retry_after_is_capped_and_a_wait_past_the_deadline_ends_the_call() -> None:
    sleeps = Sleeps()
    with scripted(status(503, "120"), then=ok(HEAD)) as server:
        async with client(server.url, sleeps, max_delay=2.0) as sdk:
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 7
    assert sleeps.asked == [2.0]

    sleeps = Sleeps()
    with scripted(status(429, "3"), then=ok(HEAD)) as server:
        async with client(server.url, sleeps, deadline=1.0) as sdk:
            with pytest.raises(SequencerError) as late:
                await sdk.head(kit.TENANT, kit.STORE_ID)
        assert late.value.status == 429 and server.count == 1 and sleeps.asked == []


async def test_retry_after_as_an_http_date() -> None:
    sleeps = Sleeps()
    past = format_datetime(datetime.now(UTC) - timedelta(minutes=5), usegmt=True)
    with scripted(status(503, past), then=ok(HEAD)) as server:
        async with client(server.url, sleeps) as sdk:
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 7
    assert sleeps.asked == [0.0]

    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after({"retry-after": "Sun, 01 Jun 2025 12:00:07 GMT"}, now) == 7.0
    assert retry_after({"retry-after": "2.5"}) == 2.5
    for unreadable in ("soon", "-1", "nan", ""):
        assert retry_after({"retry-after": unreadable}) is None


async def test_retry_after_is_waited_for_real() -> None:
    with scripted(status(503, "0.2"), then=ok(HEAD)) as server:
        retry = RetryPolicy(attempts=2)
        async with SequencerClient(server.url, retry=retry) as sdk:
            assert await sdk.head(kit.TENANT, kit.STORE_ID) == 7
        first, second = server.seen
    # At least what was asked for, less the event loop's clock resolution.
    assert second.at - first.at >= 0.2 - time.get_clock_info("monotonic").resolution - 0.001


async def test_no_retry_policy_tries_once() -> None:
    with scripted(status(503), then=ok(HEAD)) as server:
        async with SequencerClient(server.url, retry=RetryPolicy.none()) as sdk:
            with pytest.raises(SequencerError):
                await sdk.head(kit.TENANT, kit.STORE_ID)
        assert server.count == 1


MINTED = {"apiKey": "ss_minted", "keyHashPrefix": "ab" * 8}


async def test_a_call_that_is_not_idempotent_is_not_sent_again_after_a_503() -> None:
    sleeps = Sleeps()
    with scripted(status(503, "0"), then=ok(MINTED)) as server:
        async with client(server.url, sleeps) as sdk:
            with pytest.raises(SequencerError) as refused:
                await sdk.create_api_key(kit.TENANT)
        assert refused.value.status == 503 and server.count == 1 and sleeps.asked == []


@pytest.mark.parametrize("fault", [CLOSE, RESET, Step(delay=1.0)], ids=["closed", "reset", "slow"])
async def test_a_call_that_is_not_idempotent_is_not_sent_again_once_it_left(fault: Step) -> None:
    sleeps = Sleeps()
    with scripted(fault, fault, then=ok(MINTED)) as server:
        retry = policy(sleeps)
        async with SequencerClient(server.url, timeout=0.3, retry=retry) as sdk:
            with pytest.raises(SequencerUnavailable) as lost:
                await sdk.create_api_key(kit.TENANT)
            assert lost.value.reached_server  # it may have been applied: the caller decides
            assert server.count == 1 and sleeps.asked == []
            # The same fault on an idempotent call is retried.
            assert await sdk.register_agent_key(kit.TENANT, kit.AGENT_ID, 1, b"k" * 32) == MINTED
        assert server.count == 3 and len(sleeps.asked) == 1


async def test_ingest_and_puts_are_retried_as_idempotent() -> None:
    sleeps = Sleeps()
    cursor = {"acknowledgedSequence": 3}
    with scripted(status(503), CLOSE, then=ok(cursor)) as server:
        async with client(server.url, sleeps) as sdk:
            answer = await sdk.put_cursor(kit.TENANT, kit.STORE_ID, kit.AGENT_ID, 3)
        assert answer == cursor and server.count == 3
        assert {s.method for s in server.seen} == {"PUT"}

    sleeps = Sleeps()
    accepted = {"batchId": str(uuid.uuid4()), "eventsAccepted": 0, "eventsRejected": 0}
    with scripted(status(502), then=ok({**accepted, "headSequence": 0})) as server:
        async with client(server.url, sleeps) as sdk:
            outcome = await sdk.ingest(kit.AGENT_ID, [])
        assert outcome.head_sequence == 0 and server.count == 2
        assert server.seen[0].body == server.seen[1].body  # the very same batch again
