"""Refused credentials, counted per source and minute instead of written one by one.

A client sending bad keys in a loop would otherwise cost one store lookup and one audit
row per request. Here each refusal is counted in memory under (source address, reason,
minute); one ``auth.failure`` row per such bucket is written when its minute closes (or
when the service shuts down), with the count in ``details``. And a source that has failed
``limit_per_minute`` times in the current minute is answered 429 before its credential
reaches the store, until the minute ends.

Memory is bounded: at most ``max_sources`` buckets and tracked sources; past that, new
sources are counted together under the source ``"*"`` (the total stays right, the
address is lost) and are not throttled.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ...store.errors import StoreError
from ...store.ports import AccessStore
from ...store.records import AuditEntry
from ...ves.storable import make_storable

log = structlog.get_logger("stateset_sequencer.http")

WINDOW_SECONDS = 60
AUDIT_TEXT_BYTES = 200
OVERFLOW_SOURCE = "*"
# A closed minute is written a moment after it closes, so that requests still in flight
# at the boundary land in their own bucket rather than a second row.
FLUSH_DELAY_SECONDS = 1.0


@dataclass(slots=True)
class _Bucket:
    count: int
    path: str
    request_id: str | None
    user_agent: str | None
    message: str


class FailureAudit:
    def __init__(
        self,
        store: AccessStore,
        *,
        limit_per_minute: int | None,
        max_sources: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._limit = limit_per_minute
        self._max = max_sources
        self._clock = clock
        self._buckets: dict[tuple[str, str, int], _Bucket] = {}
        self._failures: dict[str, tuple[int, int]] = {}  # source -> (minute, failures)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def _minute(self) -> int:
        return int(self._clock() // WINDOW_SECONDS)

    def retry_after(self, source: str) -> int | None:
        """Seconds until ``source`` may try again, or None if it is not throttled."""
        if self._limit is None:
            return None
        minute = self._minute()
        seen = self._failures.get(source)
        if seen is None or seen[0] != minute or seen[1] < self._limit:
            return None
        return max(1, math.ceil((minute + 1) * WINDOW_SECONDS - self._clock()))

    def record(
        self,
        source: str,
        reason: str,
        message: str,
        *,
        path: str,
        request_id: str | None,
        user_agent: str | None,
        throttled: bool = False,
    ) -> None:
        """Count one refusal (``throttled``: one answered 429 by :meth:`retry_after`,
        which does not count towards the budget again)."""
        minute = self._minute()
        if not throttled:
            self._count_failure(source, minute)
        key = (source, reason, minute)
        bucket = self._buckets.get(key)
        if bucket is None and len(self._buckets) >= self._max:
            key = (OVERFLOW_SOURCE, reason, minute)
            bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = _Bucket(
                1,
                make_storable(path, max_bytes=AUDIT_TEXT_BYTES),
                request_id,
                make_storable(user_agent or "", max_bytes=AUDIT_TEXT_BYTES) or None,
                message,
            )
        else:
            bucket.count += 1
        self._arm()

    def _count_failure(self, source: str, minute: int) -> None:
        seen = self._failures.get(source)
        if seen is None and len(self._failures) >= self._max:
            for stale in [s for s, (m, _) in self._failures.items() if m != minute]:
                del self._failures[stale]
            if len(self._failures) >= self._max:
                return  # every slot is a source failing this very minute
        count = seen[1] + 1 if seen is not None and seen[0] == minute else 1
        self._failures[source] = (minute, count)

    def pending(self) -> int:
        """Refusals counted and not yet written."""
        return sum(b.count for b in self._buckets.values())

    def _arm(self) -> None:
        if self._timer is not None or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: flushed on close
        delay = (self._minute() + 1) * WINDOW_SECONDS - self._clock() + FLUSH_DELAY_SECONDS
        # A timer rather than a sleeping task: a loop that ends without close() drops it
        # quietly.
        self._timer = loop.call_later(max(0.0, delay), self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._task = loop.create_task(self._flush_then_rearm())

    async def _flush_then_rearm(self) -> None:
        try:
            await self.flush(closed_only=True)
        except Exception:  # a background write must not end as an unretrieved error
            log.exception("auth failure audit flush failed")
        self._task = None
        if self._buckets:
            self._arm()

    async def flush(self, *, closed_only: bool = False) -> int:
        """Write the buckets (of closed minutes only, or all); returns the rows written."""
        current = self._minute()
        keys = [k for k in self._buckets if not closed_only or k[2] < current]
        written = 0
        for key in keys:
            bucket = self._buckets.pop(key)
            source, reason, minute = key
            entry = AuditEntry(
                action="auth.failure",
                actor=source or "unknown",
                actor_type="anonymous",
                success=False,
                resource_type="route",
                resource_id=bucket.path,
                request_id=bucket.request_id,
                ip_address=source if source and source != OVERFLOW_SOURCE else None,
                user_agent=bucket.user_agent,
                details={
                    "code": reason,
                    "count": bucket.count,
                    "window_start": datetime.fromtimestamp(
                        minute * WINDOW_SECONDS, UTC
                    ).isoformat(),
                    "window_seconds": WINDOW_SECONDS,
                },
                error_message=bucket.message,
            )
            try:
                await self._store.append_audit(entry)
                written += 1
            except StoreError as exc:
                # Refusing the credential mattered more than recording the refusal.
                log.warning("auth failure audit lost", error=type(exc).__name__, count=bucket.count)
        return written

    async def close(self) -> None:
        """Write everything still counted (at shutdown, before the store closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            await task  # a flush under way finishes the rows it took
        await self.flush()
