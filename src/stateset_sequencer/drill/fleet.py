"""The agents' write load during a drill: ``agents`` agents over ``streams`` streams, each
stream written by one agent through an outbox of its own (an agent home per stream, as
``sequencer-cli agent init`` would lay it out), so every recovery command a runbook names
(``sync-agent``, ``export-events --status``) works on them unchanged.

Each lane signs events into its outbox and pushes them, and keeps pushing through any
failure: an event stays in the outbox until its receipt arrives, which is the whole point
of the drill. Every push is recorded with its start, end and acknowledgement count, which is
what the timeline and the RTO are read from.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..agent.config import AgentConfig, AgentHome
from ..agent.keystore import KeyStore
from ..agent.outbox import UNSYNCED, Outbox
from ..agent.service import AgentService
from ..client import SequencerClient

PUSH_BATCH = 50
# A lane pushes at least this many times, so that a failure strikes mid-load even in a
# small drill.
MIN_PUSHES = 20
# After a failed push: long enough not to spin on a dead server, short enough that the
# lane's first success after recovery is not hidden behind its own back-off.
RETRY_PAUSE_S = 0.2


@dataclass(frozen=True, slots=True)
class Push:
    lane: int
    started: float  # seconds on the drill's clock
    ended: float
    acked: int
    error: str | None = None


@dataclass(slots=True)
class Lane:
    index: int
    agent_id: uuid.UUID
    store_id: uuid.UUID
    home: Path
    target: int
    emitted: int = 0
    outbox: Outbox | None = None
    service: AgentService | None = None


@dataclass(slots=True)
class Fleet:
    """Owns the lanes' homes under ``root``. ``clock`` gives seconds since the drill began."""

    root: Path
    tenant_id: uuid.UUID
    agents: int
    streams: int
    events: int
    clock: Callable[[], float]
    batch: int = 0  # 0: PUSH_BATCH, or less when a lane has few events
    lanes: list[Lane] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    _running: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    def __post_init__(self) -> None:
        if self.agents < 1 or self.streams < self.agents or self.events < self.streams:
            raise ValueError(
                "a drill needs at least one agent, at least as many streams as agents, and "
                "at least one event per stream"
            )
        if self.batch == 0:
            self.batch = max(1, min(PUSH_BATCH, self.events // (self.streams * MIN_PUSHES)))
        self._running.set()

    @property
    def agent_ids(self) -> list[uuid.UUID]:
        return sorted({lane.agent_id for lane in self.lanes})

    @property
    def homes(self) -> list[Path]:
        return [lane.home for lane in self.lanes]

    @property
    def acked(self) -> int:
        return sum(p.acked for p in self.pushes)

    @property
    def emitted(self) -> int:
        return sum(lane.emitted for lane in self.lanes)

    async def enrol(
        self,
        admin_url: str,
        admin_key: str,
        urls: Callable[[int], Sequence[str]],
        sequencer_public_key: bytes,
    ) -> None:
        """Create each agent's key, register it, and lay out one home per stream. ``urls``
        gives lane ``i`` its base URLs, first preferred (the client fails over in order)."""
        per_stream, extra = divmod(self.events, self.streams)
        agent_homes: list[tuple[uuid.UUID, Path]] = []
        async with SequencerClient(admin_url, admin_key) as admin:
            for n in range(self.agents):
                agent_id = uuid.uuid4()
                base = self.root / f"agent-{n}"
                key = KeyStore(base).create(agent_id)
                await admin.register_agent_key(self.tenant_id, agent_id, key.key_id, key.public_key)
                agent_homes.append((agent_id, base))
        for index in range(self.streams):
            agent_id, base = agent_homes[index % self.agents]
            home = base / f"stream-{index}"
            home.mkdir(parents=True, mode=0o700)
            # The key files keep their 0600 mode: a copy per home, so each home stands alone.
            shutil.copytree(base / "keys", home / "keys")
            config = AgentConfig(
                agent_id=agent_id,
                tenant_id=self.tenant_id,
                store_id=uuid.uuid4(),
                urls=tuple(urls(index)),
                api_key=admin_key,
                sequencer_public_key=sequencer_public_key.hex(),
            )
            AgentHome(home).save(config)
            self.lanes.append(
                Lane(
                    index,
                    agent_id,
                    config.store_id,
                    home,
                    per_stream + (1 if index < extra else 0),
                )
            )

    def open(self) -> None:
        for lane in self.lanes:
            home = AgentHome(lane.home)
            config = home.load()
            lane.outbox = Outbox(home.outbox_path(config=config))
            lane.service = AgentService(config, lane.outbox, KeyStore(lane.home))

    def close(self) -> None:
        for lane in self.lanes:
            if lane.outbox is not None:
                lane.outbox.close()
                lane.outbox = lane.service = None

    def extend(self, per_lane: int) -> None:
        """Give every lane ``per_lane`` more events to write (the writes after a recovery
        that comes once the load is over), for the next :meth:`run`."""
        for lane in self.lanes:
            lane.target += per_lane
        self.events += per_lane * len(self.lanes)

    def pause(self) -> None:
        """Stop signing and sending (an operator stops the writers before a restore)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopping = True
        self._running.set()

    async def run(self, rate: float | None = None) -> None:
        """Until every lane has emitted its share and holds nothing unsent, or :meth:`stop`.
        ``rate``: events per second over the whole fleet (None: as fast as acknowledged)."""
        await asyncio.gather(*(self._lane(lane, rate) for lane in self.lanes))

    async def wait_acked(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.acked} of {count} events acknowledged in {timeout} s")
            await asyncio.sleep(0.05)

    def unsynced(self) -> int:
        total = 0
        for lane in self.lanes:
            assert lane.outbox is not None
            counts = lane.outbox.counts()
            total += sum(counts.get(state, 0) for state in UNSYNCED)
        return total

    async def _lane(self, lane: Lane, rate: float | None) -> None:
        assert lane.service is not None and lane.outbox is not None
        # Each lane's share of the rate, as a pause per batch.
        pace = None if rate is None else self.batch * len(self.lanes) / rate
        while not self._stopping:
            await self._running.wait()
            if self._stopping:
                break
            began = self.clock()
            for _ in range(min(self.batch, lane.target - lane.emitted)):
                lane.service.emit(
                    "drill-item",
                    f"item-{lane.emitted % 64}",
                    "drill.tick",
                    {"lane": lane.index, "n": lane.emitted},
                )
                lane.emitted += 1
            pending = sum(lane.outbox.counts().get(state, 0) for state in UNSYNCED)
            if pending == 0:  # all emitted (emitting comes first) and all acknowledged
                return
            try:
                report = await lane.service.push(batch_size=self.batch)
            except Exception as exc:  # every failure is the drill's subject; it is recorded
                self.pushes.append(Push(lane.index, began, self.clock(), 0, _brief(exc)))
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self.pushes.append(Push(lane.index, began, self.clock(), report.acked))
            if pace is not None:
                await asyncio.sleep(max(0.0, pace - (self.clock() - began)))


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]
