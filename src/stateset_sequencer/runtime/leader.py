"""Running a singleton worker on whichever process holds its leader lock.

:class:`LeaderElected` tries the lock (store ``LeaderLock``) every ``retry_interval``
seconds; once it holds it, it runs ``work()`` until the work ends, the lock is lost
(``Leadership.lost``: on PostgreSQL, the session that held it ended) or the service
shuts down, and then stops the work at once by cancelling it. Leadership is released on
every way out, so a successor can take over on its next try. Every process may run one
of these for the same lock: at most one of them works at a time.

:class:`PollingWorker` is the loop the singleton workers share (projections, commits): a
pass, then the next at once or after the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from ..store.errors import StoreError
from ..store.ports import LeaderLock, Leadership

log = structlog.get_logger("stateset_sequencer.leader")

CANCEL_RECHECK_S = 0.05


class LeaderElected:
    def __init__(
        self,
        lock: LeaderLock,
        name: str,
        work: Callable[[], Awaitable[None]],
        *,
        retry_interval: float,
    ) -> None:
        self._lock = lock
        self._name = name
        self._work = work
        self._retry = retry_interval
        self._task: asyncio.Task[None] | None = None
        self._leading = asyncio.Event()
        self.terms = 0  # how many times this process has become the leader

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"leader-{self._name}"
            )

    async def close(self) -> None:
        """Stop working and give the lock up; idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        # Cancel until it is done: a cancellation that lands while the task is itself
        # awaiting a cancelled helper (the work, the lock's watch) is absorbed by that
        # await's suppression, and the task would go on trying the lock for ever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_RECHECK_S)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            leadership = await self._try()
            if leadership is None:
                await asyncio.sleep(self._retry)
                continue
            try:
                await self._lead(leadership)
            finally:
                self._leading.clear()
                await leadership.release()
            await asyncio.sleep(self._retry)

    async def _try(self) -> Leadership | None:
        try:
            return await self._lock.try_lead(self._name, check_interval=self._retry)
        except StoreError as exc:
            log.warning("leader lock unavailable", lock=self._name, error=str(exc)[:300])
            return None

    async def _lead(self, leadership: Leadership) -> None:
        self.terms += 1
        self._leading.set()
        log.info("leading", lock=self._name)
        work = asyncio.ensure_future(self._work())
        lost = asyncio.ensure_future(leadership.lost())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, lost):
                task.cancel()
            for task in (work, lost):
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                    except Exception as exc:  # the work's own fault: logged, then retried
                        log.error("leader work failed", lock=self._name, error=repr(exc)[:300])
        if lost.done() and not lost.cancelled():
            log.warning("leadership lost", lock=self._name)


class PollingWorker:
    """A singleton worker that polls: ``step()`` once per pass on the process holding the
    leader lock ``name``, again at once while a pass says more work is waiting (``step``
    returns True), otherwise after ``poll_interval`` seconds. A pass failing with one of
    ``faults`` (the database away) is logged and retried after the interval; the leader
    keeps its lock meanwhile. Any other fault ends the term (``LeaderElected`` logs it
    and tries the lock again)."""

    def __init__(
        self,
        lock: LeaderLock,
        name: str,
        step: Callable[[], Awaitable[bool]],
        *,
        poll_interval: float,
        retry_interval: float,
        faults: tuple[type[Exception], ...] = (StoreError,),
    ) -> None:
        self._step = step
        self._poll = poll_interval
        self._faults = faults
        self._name = name
        self.passes = 0  # completed passes, for tests and metrics
        self.leader = LeaderElected(lock, name, self._loop, retry_interval=retry_interval)

    def start(self) -> None:
        self.leader.start()

    async def close(self) -> None:
        await self.leader.close()

    async def _loop(self) -> None:
        while True:
            try:
                more = await self._step()
            except self._faults as exc:
                log.warning("worker pass failed", lock=self._name, error=str(exc)[:300])
                more = False
            self.passes += 1
            await asyncio.sleep(0 if more else self._poll)
