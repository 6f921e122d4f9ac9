"""``agent sync --watch --live``: the pause between rounds ends when the server's live
stream shows an event the outbox has not pulled, and where there is no stream to follow
the rounds keep to their interval, as plain polling does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stateset_sequencer.agent.config import AgentConfig, AgentHome
from stateset_sequencer.agent.keystore import KeyStore
from stateset_sequencer.agent.outbox import Outbox
from stateset_sequencer.agent.service import AgentService
from stateset_sequencer.client import SequencerClient, SequencerError, TailItem
from stateset_sequencer.ves.signing import parse_public_key
from tests.agent.conftest import SEQUENCER_PK, STORE, TENANT, Sequencer

INTERVAL_S = 60.0  # far longer than the test may take: only the stream can end the pause
WAIT_S = 20.0


def _agent(sequencer: Sequencer, home: Path) -> None:
    """An agent registered on the server with a key of its own, as `agent init` leaves it."""
    agent_id = uuid.uuid4()
    key = KeyStore(home).create(agent_id)
    registered = sequencer.admin(
        "POST",
        "/api/v1/agents/keys",
        json={
            "tenantId": str(TENANT),
            "agentId": str(agent_id),
            "keyId": key.key_id,
            "publicKey": "0x" + key.public_key.hex(),
        },
    )
    assert registered.status_code == 200, registered.text
    config = AgentConfig(
        agent_id,
        TENANT,
        STORE,
        (sequencer.url,),
        api_key=sequencer.mint_agent_key(agent_id),
        sequencer_public_key=SEQUENCER_PK,
    )
    AgentHome(home).save(config)


@contextmanager
def _service(home: Path, **options: Any) -> Iterator[AgentService]:
    place = AgentHome(home)
    config = place.load()
    with Outbox(place.outbox_path(None, config)) as box:
        yield AgentService(config, box, KeyStore(home), **options)


async def test_a_new_event_on_the_stream_ends_the_pause(
    sqlite_sequencer: Sequencer, homes: tuple[Path, Path]
) -> None:
    watcher, writer = homes
    _agent(sqlite_sequencer, watcher)
    _agent(sqlite_sequencer, writer)
    lines: list[str] = []
    first_round = asyncio.Event()

    def said(line: str) -> None:
        lines.append(line)
        first_round.set()

    with _service(watcher) as service:
        watching = asyncio.create_task(
            service.watch(interval_s=INTERVAL_S, rounds=2, on_round=said, live=True)
        )
        async with asyncio.timeout(WAIT_S):
            await first_round.wait()
            with _service(writer) as other:
                other.emit("order", "o-1", "order.created", {"n": 1})
                assert (await other.push()).acked == 1
            assert await watching == 2
        state = service.outbox.sync_state(TENANT, STORE)
    assert state.last_pulled_sequence == 1
    assert lines[-1].endswith("pulled 1, head 1")


class _NoStream(SequencerClient):
    """A client of a server without the stream route (the Rust reference, say)."""

    async def tail(self, *args: Any, **kwargs: Any) -> AsyncGenerator[TailItem, None]:
        raise SequencerError(404, "NOT_FOUND", "no such route", None)
        yield  # an async generator, as the real one is


async def test_without_a_stream_the_rounds_keep_to_the_interval(
    sqlite_sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "a"
    _agent(sqlite_sequencer, home)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    def factory(config: AgentConfig, api_key: str | None) -> SequencerClient:
        return _NoStream(
            list(config.urls),
            api_key if api_key is not None else config.api_key,
            sequencer_public_key=parse_public_key(SEQUENCER_PK),
        )

    with _service(home, client_factory=factory) as service:
        service.emit("order", "o-1", "order.created", {"n": 1})
        rounds = await service.watch(interval_s=1.5, rounds=3, sleep=sleep, live=True)
    assert rounds == 3 and waits == [1.5, 1.5]
