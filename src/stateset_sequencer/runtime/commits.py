"""The commit worker: one across every process on the database (leader-elected), turning
each stream's new events into Merkle commitments (``sequencer/commitments.py``) without
anyone asking, which the reference does only on request.

A pass walks every stream with events past its last commitment and commits full batches
of ``COMMIT_MAX_EVENTS`` while that many are pending, then the remainder once its oldest
event is ``COMMIT_INTERVAL_SECS`` old; a quiet stream is therefore committed within about
one interval plus one poll. Commitments made by hand or by another process meanwhile are
simply the chain the next pass extends. A failed pass (the database away) is logged and
retried after the poll interval; the leader keeps its lock meanwhile.
"""

from __future__ import annotations

from ..config import Settings
from ..sequencer.commitments import CommitmentEngine, CommitmentError
from ..store.errors import StoreError
from ..store.ports import LeaderLock
from .leader import PollingWorker

LEADER_LOCK_NAME = "commitments"


class CommitWorker(PollingWorker):
    def __init__(
        self,
        lock: LeaderLock,
        engine: CommitmentEngine,
        *,
        max_events: int,
        interval_seconds: float,
        poll_interval: float,
        retry_interval: float,
    ) -> None:
        self._engine = engine
        self._max_events = max_events
        self._interval = interval_seconds
        self.committed = 0  # commitments made by this process
        super().__init__(
            lock,
            LEADER_LOCK_NAME,
            self._commit,
            poll_interval=poll_interval,
            retry_interval=retry_interval,
            faults=(StoreError, CommitmentError),
        )

    @classmethod
    def from_settings(
        cls, lock: LeaderLock, engine: CommitmentEngine, settings: Settings
    ) -> CommitWorker:
        return cls(
            lock,
            engine,
            max_events=settings.COMMIT_MAX_EVENTS,
            interval_seconds=settings.COMMIT_INTERVAL_SECS,
            poll_interval=settings.COMMIT_POLL_INTERVAL_MS / 1000,
            retry_interval=settings.LEADER_LOCK_RETRY_SECS,
        )

    async def _commit(self) -> bool:
        # One pass commits everything due, so the next waits for the poll interval.
        made = await self._engine.commit_due(
            max_events=self._max_events, interval_seconds=self._interval
        )
        self.committed += len(made)
        return False
