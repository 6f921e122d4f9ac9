"""What the SDK says about input it cannot use: a base URL that is not one, a host that
does not exist, and answers that are not what the route promises. Each is an SDK
exception naming the problem, never a KeyError or a TypeError from deep inside."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stateset_sequencer.client import (
    InvalidBaseURL,
    ReceiptMismatch,
    RetryPolicy,
    SequencerClient,
    SequencerClientError,
    SequencerError,
    SequencerUnavailable,
    SyncSequencerClient,
    UnexpectedResponse,
)
from stateset_sequencer.testing import kit
from tests.client.scripted import Sleeps, Step, ok, scripted


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1", "not a url", "http://", "/api/v1", "http://h:1/?q=1", "http://h#x", ""],
)
def test_a_base_url_that_is_not_one_is_refused_at_once(url: str) -> None:
    with pytest.raises(InvalidBaseURL) as refused:
        SequencerClient(url)
    assert isinstance(refused.value, ValueError)
    with pytest.raises(InvalidBaseURL):
        SyncSequencerClient(["http://127.0.0.1:1", url])


def test_no_base_url_at_all_is_refused() -> None:
    with pytest.raises(InvalidBaseURL, match="no base URL"):
        SequencerClient([])


async def test_a_host_that_does_not_resolve_is_unavailable() -> None:
    sleeps = Sleeps()
    retry = RetryPolicy(attempts=2, sleep=sleeps)
    async with SequencerClient("http://sequencer.invalid", retry=retry) as sdk:
        with pytest.raises(SequencerUnavailable) as unknown:
            await sdk.health()
    assert unknown.value.urls == ("http://sequencer.invalid",)
    assert "ConnectError" in str(unknown.value) and len(sleeps.asked) == 1


def raw(body: bytes, content_type: str = "application/json") -> Step:
    return Step(200, raw=body, content_type=content_type)


BATCH = {"batchId": str(uuid.uuid4()), "eventsAccepted": 0, "eventsRejected": 0}


@pytest.mark.parametrize(
    ("answer", "call", "needle"),
    [
        (raw(b"{not json"), "head", "not valid JSON"),
        (raw(b"<html>hello</html>", "text/html"), "head", "expected a JSON object, got text"),
        (ok([1, 2]), "head", "expected a JSON object, got an array"),
        (ok({"head": 5}), "head", "no 'head_sequence'"),
        (ok({"head_sequence": "5"}), "head", "'head_sequence' is text, expected an integer"),
        (ok({"head_sequence": True}), "head", "is a boolean, expected an integer"),
        (ok({"events": "none"}), "events", "'events' is text, expected an array"),
        (ok({"events": [1]}), "events", "'events[0]' is a number, expected an object"),
        (ok({"events": [{"seq": 1}]}), "events", "no 'envelope'"),
        (ok({"keys": None}), "list_agent_keys", "'keys' is null"),
        (ok(BATCH), "ingest", "no 'headSequence'"),
        (ok({**BATCH, "headSequence": 0, "receipts": [{"x": 1}]}), "ingest", "receipts[0]"),
        (ok({**BATCH, "headSequence": 0, "rejections": [{"event_id": "x"}]}), "ingest", "UUID"),
        (ok({"publicKey": 5}), "use_sequencer_key", "unusable key"),
        (ok({"x": 1}), "metrics", "expected the exposition text"),
        (Step(302, headers={"location": "https://elsewhere"}), "health", "redirect to https"),
    ],
)
async def test_an_answer_of_the_wrong_shape_is_named(answer: Step, call: str, needle: str) -> None:
    calls: dict[str, Any] = {
        "head": lambda c: c.head(kit.TENANT, kit.STORE_ID),
        "events": lambda c: c.events(kit.TENANT, kit.STORE_ID),
        "list_agent_keys": lambda c: c.list_agent_keys(kit.TENANT),
        "ingest": lambda c: c.ingest(kit.AGENT_ID, []),
        "use_sequencer_key": lambda c: c.use_sequencer_key(),
        "metrics": lambda c: c.metrics(),
        "health": lambda c: c.health(),
    }
    with scripted(then=answer) as server:
        async with SequencerClient(server.url, retry=RetryPolicy.none()) as sdk:
            with pytest.raises(SequencerClientError) as wrong:
                await calls[call](sdk)
    assert isinstance(wrong.value, UnexpectedResponse | ReceiptMismatch)
    assert needle in str(wrong.value), str(wrong.value)


async def test_an_unexpected_answer_names_the_route() -> None:
    with scripted(then=raw(b"[]")) as server:
        async with SequencerClient(server.url) as sdk:
            with pytest.raises(UnexpectedResponse) as wrong:
                await sdk.get_cursor(kit.TENANT, kit.STORE_ID, kit.AGENT_ID)
    assert wrong.value.what == f"GET /api/v1/ves/cursors/{kit.AGENT_ID}"
    assert wrong.value.problem == "expected a JSON object, got an array"


async def test_an_error_body_that_is_not_json_is_still_a_sequencer_error() -> None:
    with scripted(then=Step(418, raw=b"I'm a teapot", content_type="text/plain")) as server:
        async with SequencerClient(server.url) as sdk:
            with pytest.raises(SequencerError) as refused:
                await sdk.health()
    assert (refused.value.status, refused.value.code) == (418, "HTTP_ERROR")
    assert refused.value.message == "I'm a teapot" and refused.value.body is None
