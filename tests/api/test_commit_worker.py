"""The automatic commit worker: it commits while ingest runs, the chain it leaves has no
gap or fork, a quiet stream's tail is committed once it is old enough, and on PostgreSQL
another service takes over when the leader stops."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until
from stateset_sequencer.ves import merkle
from tests.api.conftest import Api, MakeApi, open_api, settings_for

FAST = {
    "COMMIT_WORKER_ENABLED": True,
    "COMMIT_MAX_EVENTS": 16,
    "COMMIT_INTERVAL_SECS": 0.3,
    "COMMIT_POLL_INTERVAL_MS": 20,
    "LEADER_LOCK_RETRY_SECS": 0.1,
}
STREAM_2 = StreamKey(kit.TENANT, uuid.UUID("00000000-0000-0000-0000-0000000000b2"))


async def committed_through(api: Api, stream: StreamKey = kit.STREAM) -> int:
    tip = await api.store.last_commitment(stream)
    return 0 if tip is None else int(tip.sequence_end)


async def assert_one_chain(api: Api, stream: StreamKey, head: int) -> None:
    rows = await api.store.list_commitments(stream)
    assert rows[0].sequence_start == 1 and rows[-1].sequence_end == head
    for before, after in itertools.pairwise(rows):
        assert after.sequence_start == before.sequence_end + 1
    merkle.verify_chain(rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_worker_commits_while_ingest_runs(make_api: MakeApi, backend: str) -> None:
    api = await make_api(backend, **FAST)
    await api.register_agent()
    for first in range(0, 200, 10):
        for stream in (kit.STREAM, STREAM_2):
            events = [kit.event(i, stream=stream) for i in range(first, first + 10)]
            response = await api.ingest(events)
            assert response.status_code == 200 and response.json()["eventsAccepted"] == 10
    for stream in (kit.STREAM, STREAM_2):

        async def done(stream: StreamKey = stream) -> bool:
            return await committed_through(api, stream) == 200

        await until(done, f"the worker committed all 200 events of {stream}")
        await assert_one_chain(api, stream, 200)
        rows = await api.store.list_commitments(stream)
        assert max(r.leaf_count for r in rows) <= 16
    worker = api.services.commit_worker
    assert worker is not None and worker.committed >= 2 * (200 // 16)
    # A proof of a worker-made commitment, as any other.
    proof = await api.client.get(
        "/api/v1/ves/proofs/123",
        params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
        headers=api.headers(),
    )
    assert proof.status_code == 200, proof.text


async def test_a_quiet_tail_waits_for_its_interval(make_api: MakeApi) -> None:
    api = await make_api("sqlite", **(FAST | {"COMMIT_INTERVAL_SECS": 3600}))
    await api.register_agent()
    assert (await api.ingest([kit.event(i) for i in range(20)])).status_code == 200

    async def one_batch() -> bool:
        return await committed_through(api) == 16

    await until(one_batch, "the first full batch")
    worker = api.services.commit_worker
    assert worker is not None
    passes = worker.passes
    await until(lambda: worker.passes >= passes + 5, "more passes")
    assert await committed_through(api) == 16  # the 4 left are younger than an hour


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    async with AsyncExitStack() as stack:

        async def make() -> tuple[Api, Api]:
            url = await stack.enter_async_context(pg.scratch_database("seqcommit"))
            a = await stack.enter_async_context(open_api(settings_for(url, tmp_path / "a", **FAST)))
            b = await stack.enter_async_context(open_api(settings_for(url, tmp_path / "b", **FAST)))
            return a, b

        yield make


async def test_another_node_takes_over_when_the_leader_stops(
    two_nodes: Callable[[], Any],
) -> None:
    a, b = await two_nodes()
    workers = [a.services.commit_worker, b.services.commit_worker]
    assert workers[0] is not None and workers[1] is not None

    await until(lambda: any(w.leader.leading for w in workers if w), "a leader")
    leading = [w for w in workers if w and w.leader.leading]
    assert len(leading) == 1  # one across both services
    leader = leading[0]
    follower = workers[1] if leader is workers[0] else workers[0]
    assert follower is not None
    await a.register_agent()
    assert (await a.ingest([kit.event(i) for i in range(32)])).status_code == 200

    async def first_part() -> bool:
        return await committed_through(a) == 32

    await until(first_part, "the leader committed the first 32")
    await leader.close()  # the leader stops; its lock goes with it
    await until(lambda: follower.leader.leading, "the other node took over")
    assert (await b.ingest([kit.event(i) for i in range(32, 64)])).status_code == 200

    async def second_part() -> bool:
        return await committed_through(b) == 64

    await until(second_part, "the new leader committed the rest")
    assert follower.committed >= 2
    await assert_one_chain(a, kit.STREAM, 64)
