"""The anchor worker: one across every process on the database (leader-elected, like the
commit worker), started only when anchoring is configured. It puts commitments on chain
each stream in order and turns sent anchors final (``anchoring/anchorer.py``).

Every ``ANCHOR_INTERVAL_SECS`` it sends up to ``ANCHOR_BATCH_THRESHOLD`` unanchored
commitments; every ``ANCHOR_FINALITY_POLL_SECS`` it confirms those deep enough and clears
those a reorg dropped, which the next anchoring pass sends again. A chain that is away
fails a pass (logged; the breaker opens after five); the API goes on answering.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..anchoring.anchorer import Anchorer, AnchorError
from ..anchoring.chain import ChainError
from ..config import Settings
from ..store.errors import StoreError
from ..store.ports import LeaderLock
from .leader import PollingWorker

LEADER_LOCK_NAME = "anchors"


class AnchorWorker(PollingWorker):
    def __init__(
        self,
        lock: LeaderLock,
        anchorer: Anchorer,
        *,
        interval_seconds: float,
        finality_seconds: float,
        batch: int,
        retry_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._anchorer = anchorer
        self._interval = interval_seconds
        self._finality = finality_seconds
        self._batch = batch
        self._clock = clock
        self._next_anchor = 0.0
        self._next_finality = 0.0
        self.sent = 0  # anchors this process sent or found on chain
        self.confirmed = 0
        self.reanchored = 0
        super().__init__(
            lock,
            LEADER_LOCK_NAME,
            self._pass,
            poll_interval=min(interval_seconds, finality_seconds),
            retry_interval=retry_interval,
            faults=(StoreError, ChainError, AnchorError),
        )

    @classmethod
    def from_settings(
        cls, lock: LeaderLock, anchorer: Anchorer, settings: Settings
    ) -> AnchorWorker:
        return cls(
            lock,
            anchorer,
            interval_seconds=settings.ANCHOR_INTERVAL_SECS,
            finality_seconds=settings.ANCHOR_FINALITY_POLL_SECS,
            batch=settings.ANCHOR_BATCH_THRESHOLD,
            retry_interval=settings.LEADER_LOCK_RETRY_SECS,
        )

    async def _pass(self) -> bool:
        now = self._clock()
        more = False
        if now >= self._next_finality:
            self._next_finality = now + self._finality
            done = await self._anchorer.confirm_pending(self._batch * 10)
            self.confirmed += len(done.confirmed)
            self.reanchored += len(done.reanchor)
            if done.reanchor:
                self._next_anchor = 0.0  # send the dropped ones again at once
        if self._clock() >= self._next_anchor:
            self._next_anchor = self._clock() + self._interval
            sent = await self._anchorer.anchor_pending(self._batch)
            self.sent += len(sent.anchored)
            # A full batch sent cleanly: more may be waiting behind it.
            more = len(sent.anchored) == self._batch and not sent.failed
            if more:
                self._next_anchor = 0.0
        return more
