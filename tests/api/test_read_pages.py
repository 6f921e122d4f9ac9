"""Read pages bounded by bytes (issue 11 item 11) and entity ids that hold a newline (item 18).

A page of events is cut at ``MAX_PAGE_BYTES`` (always one event at least) and says where
to continue with ``truncated`` and ``next_from``; a page that is not cut is byte for byte
what the route answered when it built the page whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.api.http.events import (
    LegacyEntityPage,
    LegacyEventsPage,
    VesEntityPage,
    VesEventsPage,
)
from stateset_sequencer.client import SequencerClient
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY, BASE, Api, MakeApi
from tests.api.test_auth import stream_params

KB = 1024
PAGE_BYTES = 2 * KB * KB
BIG = 900 * KB
BIG_EVENTS = 9


async def get(api: Api, path: str, **params: Any) -> httpx.Response:
    response = await api.client.get(path, params=params, headers=api.headers())
    assert response.status_code == 200, response.text
    return response


def big_event(i: int) -> Any:
    # Half the events of one entity, and multi-byte text: the cap counts bytes.
    entity = "BIG" if i % 2 == 0 else f"E-{i}"
    return kit.event(i, entity_id=entity, payload={"n": i, "blob": "é" * (BIG // 2)})


async def ingest_big(api: Api) -> None:
    await api.register_agent()
    for start in range(0, BIG_EVENTS, 3):  # three per batch, under the 10 MiB body limit
        batch = [big_event(i) for i in range(start, start + 3)]
        response = await api.ingest(batch)
        assert response.status_code == 200 and response.json()["eventsAccepted"] == 3


def check_bounded(response: httpx.Response, body: dict[str, Any]) -> None:
    """At most MAX_PAGE_BYTES of events, or a single event."""
    events = body["events"]
    assert events, "a page is never empty while events remain"
    one = max(len(json.dumps(e, ensure_ascii=False)) for e in events)
    assert len(events) == 1 or len(response.content) <= PAGE_BYTES + one


async def follow(
    api: Api, path: str, first: int, limit: int, sequence: Callable[[dict[str, Any]], int]
) -> tuple[list[int], int]:
    """Every sequence number reached by following the pages from ``first``, and how many
    pages were cut."""
    p = stream_params()
    seen: list[int] = []
    cut, start = 0, first
    while True:
        response = await get(api, path, **p, **{"from": start, "limit": limit})
        body = response.json()
        if not body["events"]:
            return seen, cut
        check_bounded(response, body)
        seen += [sequence(e) for e in body["events"]]
        if body.get("truncated"):
            assert body["truncated"] is True and body["next_from"] == seen[-1] + 1
            cut += 1
            start = body["next_from"]
        else:
            assert "next_from" not in body
            start += limit


async def test_event_pages_are_cut_by_bytes_and_continue(make_api: MakeApi) -> None:
    for backend in ("sqlite", "postgres"):
        api = await make_api(backend, MAX_PAGE_BYTES=PAGE_BYTES)
        await ingest_big(api)
        everything = list(range(1, BIG_EVENTS + 1))
        ves, cut = await follow(
            api, "/api/v1/ves/events", 1, 100, lambda e: e["envelope"]["sequence_number"]
        )
        assert ves == everything and cut == 4  # 2 events of 900 KB a page, then 1
        legacy, cut = await follow(
            api, "/api/v1/events", 0, 100, lambda e: e["envelope"]["sequence_number"]
        )
        assert legacy == everything and cut == 4
        # The client follows the cut pages too (it used to stop at the first short one).
        transport = httpx.ASGITransport(app=create_app(api.services))
        async with SequencerClient(BASE, ADMIN_KEY, transport=transport) as client:
            walked = [e async for e in client.iter_events(kit.TENANT, kit.STORE_ID, page=4)]
        assert [e["sequence_number"] for e in walked] == everything
        # One event over the cap still makes a page: progress is guaranteed.
        tiny = await make_api(backend, MAX_PAGE_BYTES=1)
        await ingest_big(tiny)
        one_by_one, cut = await follow(
            tiny, "/api/v1/ves/events", 1, 1000, lambda e: e["envelope"]["sequence_number"]
        )
        assert one_by_one == everything and cut == BIG_EVENTS - 1


async def test_entity_pages_are_cut_by_bytes_and_continue(api: Api) -> None:
    api.services.settings.MAX_PAGE_BYTES = PAGE_BYTES
    await ingest_big(api)
    p = stream_params()
    for path in ("/api/v1/ves/entities/order/BIG", "/api/v1/entities/order/BIG"):
        offset, seen = 0, []
        while True:
            response = await get(api, path, **p, **{"from": offset, "limit": 100})
            body = response.json()
            assert body["total"] == 5
            if not body["events"]:
                break
            check_bounded(response, body)
            seen += [
                e.get("sequence_number") or e["envelope"]["sequence_number"] for e in body["events"]
            ]
            assert body["has_more"] is (len(seen) < 5)
            if body["has_more"]:
                assert body["truncated"] is True and body["next_from"] == len(seen)
                offset = body["next_from"]
            else:
                assert "truncated" not in body
                break
        assert seen == [1, 3, 5, 7, 9]


def rendered_whole(model: type[BaseModel], body: dict[str, Any]) -> bytes:
    """What the route answered before it streamed: its dict validated through the
    response model and rendered by JSONResponse."""
    return bytes(
        JSONResponse(model.model_validate(body).model_dump(mode="json", exclude_unset=True)).body
    )


async def test_streamed_pages_are_the_pages_built_whole(api: Api) -> None:
    await api.register_agent()
    payloads: list[Any] = [
        {"big": 2**70 + 1, "neg": -(2**63) - 1, "f": 12.5, "e": 1e300, "z": -0.0},
        {"text": 'Grüße, 日本語, 🎉 \u2028 "quoted" \\ \x00 \t', "nested": [[], {}, [None]]},
        [1, "two", {"three": True}],
        "just text",
        0,
    ]
    events = [kit.event(i, entity_id="X", payload=pl) for i, pl in enumerate(payloads)]
    assert (await api.ingest(events)).status_code == 200
    p = stream_params()
    for path, model in (
        ("/api/v1/ves/events", VesEventsPage),
        ("/api/v1/events", LegacyEventsPage),
        ("/api/v1/ves/entities/order/X", VesEntityPage),
        ("/api/v1/entities/order/X", LegacyEntityPage),
    ):
        response = await get(api, path, **p)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert len(body["events"]) == len(payloads) and "truncated" not in body
        assert response.content == rendered_whole(model, body), path
    empty = await get(api, "/api/v1/ves/events", **p, **{"from": 99})
    assert empty.json() == {
        "events": [],
        "count": 0,
        "next_sequence": 99,
        "head_sequence": len(payloads),
        "has_more": False,
    }
    assert empty.content == rendered_whole(VesEventsPage, empty.json())


async def test_entity_id_with_a_newline_reads_back(api: Api) -> None:
    await api.register_agent()
    ids = ["line\nbreak", "trailing\n", "\r\n", "a/b\nc"]
    events = [kit.event(i, entity_id=entity_id) for i, entity_id in enumerate(ids)]
    assert (await api.ingest(events)).status_code == 200
    p = stream_params()
    for prefix in ("/api/v1/ves/entities/order", "/api/v1/entities/order"):
        for event, encoded in zip(
            events, ("line%0Abreak", "trailing%0A", "%0D%0A", "a/b%0Ac"), strict=True
        ):
            body = (await get(api, f"{prefix}/{encoded}", **p)).json()
            assert body["entity_id"] == event.entity_id and body["total"] == 1
            found = body["events"][0]
            assert (found.get("event_id") or found["envelope"]["event_id"]) == str(event.event_id)
