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

from ..config import Settings
from ..sequencer.projections import DEFAULT_REGISTRY, LEADER_LOCK_NAME, Projector
from ..store.ports import Store
from .leader import PollingWorker


class ProjectionWorker(PollingWorker):
    def __init__(
        self,
        store: Store,
        *,
        batch_size: int,
        poll_interval: float,
        retry_interval: float,
    ) -> None:
        self.projector = Projector(store, store, batch_size, DEFAULT_REGISTRY)
        super().__init__(
            store,
            LEADER_LOCK_NAME,
            self._fold,
            poll_interval=poll_interval,
            retry_interval=retry_interval,
        )

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> ProjectionWorker:
        return cls(
            store,
            batch_size=settings.PROJECTION_BATCH_SIZE,
            poll_interval=settings.PROJECTION_POLL_INTERVAL_MS / 1000,
            retry_interval=settings.LEADER_LOCK_RETRY_SECS,
        )

    async def _fold(self) -> bool:
        return await self.projector.step() > 0
