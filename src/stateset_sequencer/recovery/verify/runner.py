"""The runner: one streaming pass over each range, every check fed each page.

Memory stays bounded whatever the stream's size: a range is read in pages of
``chunk_size`` events and at most ``workers * 2`` pages are in flight (one without the
pool). For each page, on the event loop: read it, ``prepare`` every check, let each
``ask`` for what it needs, and send the page to the pool (``compute``); then, once the
oldest page in flight has its answers, ``examine`` and ``absorb`` it with every check.

The ranges share one pipeline: the next range is read while the last pages of the one
before are computed, so the workers do not wait at every range's end (with many small
streams they waited more than they worked). What depends on order is settled in order
(``begin``, the pages, ``end``, range after range), so the report is the one a serial
pass gives. ``check`` says the same per hook.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from ...store.ports import EventLog
from ...store.records import CounterState
from ..streams import stream_top
from .check import Check, Chunk, StreamRun
from .compute import AnswerPacked, Record, answers, compute, pack
from .pool import WorkerPool, use_processes
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
class _Begin:
    result: StreamResult


@dataclass(slots=True)
class _Page:
    chunk: Chunk
    result: StreamResult
    answers: asyncio.Future[AnswerPacked] | None


@dataclass(slots=True)
class _End:
    result: StreamResult


_Step = _Begin | _Page | _End


class Verifier:
    """Runs the checks over some ranges. ``processes``: compute pages in ``workers``
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
            with WorkerPool(self.workers) as pool:
                await self._pipeline(runs, advance, pool)
        else:
            await self._pipeline(runs, advance, None)
        self.report.elapsed = time.perf_counter() - started
        self.report.checks = {c.name: c.status() for c in self.checks}
        return self.report

    async def _pipeline(
        self, runs: Sequence[StreamRun], advance: Advance | None, pool: WorkerPool | None
    ) -> None:
        # A few pages in flight keep every worker busy while the next page is read, and
        # bound memory to (workers * 2) pages.
        depth = self.workers * 2 if pool is not None else 1
        steps: deque[_Step] = deque()
        in_flight = 0
        try:
            for run in runs:
                result = StreamResult(run)
                steps.append(_Begin(result))
                async for records in self._pages(run):
                    steps.append(await self._submit(Chunk(run, records), result, pool))
                    in_flight += 1
                    while in_flight >= depth:
                        in_flight -= await self._settle(steps.popleft(), advance)
                steps.append(_End(result))
            while steps:
                await self._settle(steps.popleft(), advance)
        finally:
            for step in steps:  # stopped by an error: no answer is left to be awaited
                if isinstance(step, _Page) and step.answers is not None:
                    step.answers.cancel()

    async def _pages(self, run: StreamRun) -> AsyncIterator[list[Record]]:
        if run.end < run.start:
            return
        page: list[Record] = []
        async for record in self.store.iter_events_with_receipts(
            run.stream, run.start, run.end, batch_size=self.chunk_size
        ):
            page.append(record)
            if len(page) >= self.chunk_size:
                yield page
                page = []
        if page:
            yield page

    async def _submit(self, chunk: Chunk, result: StreamResult, pool: WorkerPool | None) -> _Page:
        for check in self.checks:
            await check.prepare(chunk)
        for check in self.checks:
            check.ask(chunk)
        if pool is None:
            chunk.computed = compute(chunk.records, chunk.work)
            return _Page(chunk, result, None)
        return _Page(chunk, result, pool.submit(pack(chunk.records, chunk.work)))

    async def _settle(self, step: _Step, advance: Advance | None) -> int:
        """Settle the oldest step; 1 when it was a page."""
        result = step.result
        if isinstance(step, _Begin):
            self.report.streams.append(result)
            for check in self.checks:
                self.report.add(result, await check.begin(result.run))
            return 0
        if isinstance(step, _End):
            for check in self.checks:
                self.report.add(result, await check.end(result.run))
            return 0
        chunk = step.chunk
        if step.answers is not None:
            chunk.computed = answers(await step.answers, len(chunk.records), chunk.work.leaves)
        for check in self.checks:
            self.report.add(result, check.absorb(chunk, check.examine(chunk)))
        result.events += len(chunk.records)
        if advance is not None:
            advance(len(chunk.records))
        return 1
