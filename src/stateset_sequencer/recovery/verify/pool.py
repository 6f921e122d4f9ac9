"""The worker processes that compute pages for the runner (``compute``).

A page's computation (envelope validation, signing hash, two Ed25519 verifications,
receipt hash, leaf) is about four fifths of a verification's CPU, so on a large one it is
done by a pool of worker processes, several pages in flight, while the event loop reads,
decodes and examines pages. What crosses is ``compute.pack``'s plain tuples and the
compact answer: pickling the decoded events instead cost about as much as verifying them.

Threads did not scale: libsodium releases the GIL, but a thread coming back from it waits
for the GIL behind the thread running Python (up to the 5 ms switch interval), and
validation is Python, so a thread pool ran no faster than one core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

from .compute import AnswerPacked, Packed, compute_packed

# Below this many events in all, pages are computed inline: starting the worker processes
# (each imports the package) takes about a second on a busy 2-core machine, roughly what
# verifying 10,000 events inline costs.
PROCESS_THRESHOLD = 20_000


def use_processes(processes: bool | None, workers: int, events: int) -> bool:
    """Whether to start the pool: as asked (``processes`` True or False), else when more
    than one worker is available and the run is large enough to repay starting them."""
    if processes is not None:
        return processes
    return workers > 1 and events >= PROCESS_THRESHOLD


def _ready() -> None:
    """Nothing: submitted once per worker at start, so that every worker process is
    spawned and has imported this package while the first pages are read."""


class WorkerPool:
    """``workers`` spawned processes running :func:`compute.compute_packed`; a context
    manager."""

    def __init__(self, workers: int) -> None:
        # spawn, not fork: the parent has an event loop, a connection pool and maybe
        # SQLite threads, none of which a forked child could safely inherit.
        self._executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        )
        for _ in range(workers):
            self._executor.submit(_ready)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True, cancel_futures=exc is not None)

    def submit(self, packed: Packed) -> asyncio.Future[AnswerPacked]:
        """Compute one packed page in a worker."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, compute_packed, packed)
