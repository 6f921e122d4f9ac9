"""The runner: one streaming pass over each range, every check fed each page.

Memory stays bounded whatever the stream's size: the range is read in pages of
``chunk_size`` events and at most ``workers * 2`` pages are in flight (one without the
pool). For each page, on the event loop: read it, ``prepare`` every check, ``digest`` it,
collect the signatures the checks name and send them to the pool; then, once the oldest
page in flight has its verdicts, ``examine`` and ``absorb`` it with every check. Pages are
settled in the order they were read, which is sequence order. ``check`` says the same
per hook.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...store.ports import EventLog
from ...store.records import CounterState
from ..streams import stream_top
from .check import Check, Chunk, Record, SignatureItem, StreamRun
from .pool import SignaturePool, packable, use_processes
from .report import DEFAULT_FINDINGS_CAP, Report, StreamResult

DEFAULT_CHUNK = 2000

Advance = Callable[[int], None]
"""``advance(n)``: n more events verified (a progress bar's hook)."""


def plan_run(state: CounterState, start: int | None, end: int | None) -> StreamRun:
    """The range to verify: from ``start`` (1) to ``end`` (the stream's top, so that events
    above a lagging counter are seen too). ``whole`` when neither bound narrows it."""
    first = 1 if start is None else start
    last = stream_top(state) if end is None else end
    return StreamRun(state.stream, first, last, state, whole=start in (None, 1) and end is None)


@dataclass(slots=True)
class _InFlight:
    chunk: Chunk
    items: list[SignatureItem]
    verdicts: asyncio.Future[bytes] | None


class Verifier:
    """Runs the checks over some ranges. ``processes``: verify signatures in ``workers``
    worker processes (True), inline (False), or decide by the total size (None)."""

    def __init__(
        self,
        store: EventLog,
        checks: list[Check],
        *,
        workers: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        findings_cap: int = DEFAULT_FINDINGS_CAP,
        processes: bool | None = None,
    ) -> None:
        self.store = store
        self.checks = checks
        self.workers = workers or os.cpu_count() or 1
        self.chunk_size = chunk_size
        self.processes = processes
        self.report = Report(cap=findings_cap)

    async def run(self, runs: Sequence[StreamRun], advance: Advance | None = None) -> Report:
        started = time.perf_counter()
        if use_processes(self.processes, self.workers, sum(r.size for r in runs)):
            with SignaturePool(self.workers) as pool:
                for run in runs:
                    await self._verify(run, advance, pool)
        else:
            for run in runs:
                await self._verify(run, advance, None)
        self.report.elapsed = time.perf_counter() - started
        self.report.checks = {c.name: c.status() for c in self.checks}
        return self.report

    async def _verify(
        self, run: StreamRun, advance: Advance | None, pool: SignaturePool | None
    ) -> None:
        result = StreamResult(run)
        self.report.streams.append(result)
        for check in self.checks:
            self.report.add(result, await check.begin(run))
        # A few pages in flight keep every worker busy while the next page is read, and
        # bound memory to (workers * 2) pages.
        depth = self.workers * 2 if pool is not None else 1
        pending: deque[_InFlight] = deque()

        async def settle_oldest() -> None:
            page = pending.popleft()
            chunk = page.chunk
            if page.verdicts is not None:
                answers = await page.verdicts
                chunk.verdicts = {
                    item: bool(ok) for item, ok in zip(page.items, answers, strict=True)
                }
            for check in self.checks:
                self.report.add(result, check.absorb(chunk, check.examine(chunk)))
            result.events += len(chunk.records)
            if advance is not None:
                advance(len(chunk.records))

        async def submit(records: list[Record]) -> None:
            chunk = Chunk(run, records)
            for check in self.checks:
                await check.prepare(chunk)
            chunk.digest()
            items: list[SignatureItem] = []
            verdicts: asyncio.Future[bytes] | None = None
            if pool is not None:
                items = packable(item for check in self.checks for item in check.signatures(chunk))
                if items:
                    verdicts = pool.submit(items)
            pending.append(_InFlight(chunk, items, verdicts))
            while len(pending) >= depth:
                await settle_oldest()

        page: list[Record] = []
        if run.end >= run.start:
            async for record in self.store.iter_events_with_receipts(
                run.stream, run.start, run.end, batch_size=self.chunk_size
            ):
                page.append(record)
                if len(page) >= self.chunk_size:
                    await submit(page)
                    page = []
        if page:
            await submit(page)
        while pending:
            await settle_oldest()
        for check in self.checks:
            self.report.add(result, await check.end(run))
