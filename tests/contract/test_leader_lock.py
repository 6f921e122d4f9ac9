"""The LeaderLock port on both backends, and the runtime helper that runs a singleton
worker under it: two stores on one database contend, exactly one leads, and a leader
that goes away (released, closed, or its PostgreSQL session killed) is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from stateset_sequencer.runtime.leader import LeaderElected
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import LeaderLock, Store
from stateset_sequencer.testing.kit import until

from .conftest import Opened

# Generous: conditions are waited on, never timed.
BOUND_S = 30.0
RETRY_S = 0.05


@pytest.fixture
async def second(opened: Opened, tmp_path: Path) -> AsyncIterator[Store]:
    """Another store on the same database, as another server process would open it."""
    store = await open_store(parse_database_url(opened.url, tmp_path), max_connections=2)
    try:
        yield store
    finally:
        await store.close()


async def terminate_leaders(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'sequencer-leader' AND datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def test_exactly_one_holder_until_released(leader_lock: LeaderLock, second: Store) -> None:
    first = await leader_lock.try_lead("work")
    assert first is not None
    assert await second.try_lead("work") is None
    assert await leader_lock.try_lead("work") is None  # not re-entrant either
    other = await second.try_lead("other-work")  # locks of other names are independent
    assert other is not None
    await first.release()
    await first.release()  # idempotent
    taken = await second.try_lead("work")
    assert taken is not None
    assert await leader_lock.try_lead("work") is None
    await taken.release()
    await other.release()


async def test_lock_names_are_checked(leader_lock: LeaderLock) -> None:
    for bad in ("", "UPPER", "a/b", "../x", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="leader lock name"):
            await leader_lock.try_lead(bad)


async def test_a_held_lock_is_not_lost_by_itself(leader_lock: LeaderLock) -> None:
    held = await leader_lock.try_lead("quiet", check_interval=RETRY_S)
    assert held is not None
    lost = asyncio.ensure_future(held.lost())
    await asyncio.sleep(RETRY_S * 4)  # several liveness checks pass
    assert not lost.done()
    lost.cancel()
    await held.release()


async def test_a_killed_session_loses_the_lock(opened: Opened, second: Store) -> None:
    if opened.backend != "postgres":
        pytest.skip("only a PostgreSQL session can be killed under a held lock")
    held = await opened.store.try_lead("work", check_interval=RETRY_S)
    assert held is not None
    assert await terminate_leaders(opened.url) == 1
    await asyncio.wait_for(held.lost(), BOUND_S)
    taken = await second.try_lead("work")
    assert taken is not None
    await held.release()  # after the loss: still quick and harmless
    await taken.release()


class Worker:
    """A singleton worker that records whether it is running."""

    def __init__(self, lock: LeaderLock) -> None:
        self.running = False
        self.started = 0
        self.elected = LeaderElected(lock, "work", self.work, retry_interval=RETRY_S)

    async def work(self) -> None:
        self.started += 1
        self.running = True
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False


async def test_one_worker_runs_and_a_successor_takes_over(opened: Opened, second: Store) -> None:
    a, b = Worker(opened.store), Worker(second)
    a.elected.start()
    b.elected.start()
    try:
        await until(lambda: a.running or b.running, "one worker leads")
        await asyncio.sleep(RETRY_S * 4)  # several retries of the other pass
        assert [a.running, b.running].count(True) == 1
        assert a.elected.leading == a.running and b.elected.leading == b.running
        leader, follower = (a, b) if a.running else (b, a)
        await leader.elected.close()  # shutdown releases the lock
        assert not leader.running
        await until(lambda: follower.running, "the other takes over after a shutdown")
        leader.elected = LeaderElected(
            opened.store if leader is a else second, "work", leader.work, retry_interval=RETRY_S
        )
        leader.elected.start()
        await asyncio.sleep(RETRY_S * 4)
        assert not leader.running  # the lock is held: no second worker
        if opened.backend == "postgres":
            assert await terminate_leaders(opened.url) == 1
            await until(lambda: not follower.running, "the killed leader stops its work")
            # The killed worker keeps contending and may win the free lock back before the
            # other's next try; stopping it leaves the other as the only contender, which
            # must then lead (had it won the lock back, closing it released it).
            await follower.elected.close()
            await until(lambda: leader.running, "the other takes over after a kill")
            assert [a.running, b.running].count(True) == 1
    finally:
        await a.elected.close()
        await b.elected.close()
    assert not a.running and not b.running


async def test_failing_work_is_retried_and_the_lock_released(
    leader_lock: LeaderLock, second: Store
) -> None:
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    elected = LeaderElected(leader_lock, "work", fails, retry_interval=RETRY_S)
    elected.start()
    try:
        await until(lambda: calls >= 3, "the work is tried again")
    finally:
        await elected.close()
    taken = await second.try_lead("work")
    assert taken is not None
    await taken.release()
