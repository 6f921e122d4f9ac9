"""The projection worker: one across every process on the database (leader-elected),
folding each stream's new events into its documents (``sequencer/projections.py``).

It polls: every ``PROJECTION_POLL_INTERVAL_MS`` while there is nothing to fold, at once
again while a pass found work. Each pass folds at most ``PROJECTION_BATCH_SIZE`` events
per stream, so one busy stream cannot starve the others and no transaction grows with
the backlog. It never takes the stream locks ingest takes, and resumes from the stored
checkpoints after a restart or a change of leader. A failed pass (the database away) is
logged and retried after the poll interval; the leader keeps its lock meanwhile.
"""

from __future__ import annotations

import asyncio

import structlog

from ..config import Settings
from ..sequencer.projections import DEFAULT_REGISTRY, LEADER_LOCK_NAME, Projector
from ..store.errors import StoreError
from ..store.ports import Store
from .leader import LeaderElected

log = structlog.get_logger("stateset_sequencer.projections")


class ProjectionWorker:
    def __init__(
        self,
        store: Store,
        *,
        batch_size: int,
        poll_interval: float,
        retry_interval: float,
    ) -> None:
        self.projector = Projector(store, store, batch_size, DEFAULT_REGISTRY)
        self._poll = poll_interval
        self.passes = 0  # completed passes, for tests and metrics
        self.leader = LeaderElected(
            store, LEADER_LOCK_NAME, self._work, retry_interval=retry_interval
        )

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> ProjectionWorker:
        return cls(
            store,
            batch_size=settings.PROJECTION_BATCH_SIZE,
            poll_interval=settings.PROJECTION_POLL_INTERVAL_MS / 1000,
            retry_interval=settings.LEADER_LOCK_RETRY_SECS,
        )

    def start(self) -> None:
        self.leader.start()

    async def close(self) -> None:
        await self.leader.close()

    async def _work(self) -> None:
        while True:
            try:
                folded = await self.projector.step()
            except StoreError as exc:
                log.warning("projection pass failed", error=str(exc)[:300])
                folded = 0
            self.passes += 1
            await asyncio.sleep(0 if folded else self._poll)
