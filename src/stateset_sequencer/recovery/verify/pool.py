"""The worker processes that verify Ed25519 signatures for the runner.

Two Ed25519 verifications per event (agent and receipt) cost more than everything else
together, so on a large verification they are done by a pool of worker processes, a page
at a time and several pages in flight, while the event loop reads, decodes and examines
pages. The work sent is three byte strings per page (keys, hashes, signatures: 128 bytes
an event) and the answer one byte per signature: pickling the decoded events instead cost
about as much as verifying them.

Threads did not scale: libsodium releases the GIL, but a thread coming back from it waits
for the GIL behind the thread running Python (up to the 5 ms switch interval), so a thread
pool ran no faster than one core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

from ...ves.signing import is_valid
from .check import SignatureItem

# Below this many events in all, signatures are verified inline: starting the worker
# processes (each imports the package) takes about a second on a busy 2-core machine,
# roughly what verifying 10,000 events' signatures inline costs.
PROCESS_THRESHOLD = 20_000


def use_processes(processes: bool | None, workers: int, events: int) -> bool:
    """Whether to start the pool: as asked (``processes`` True or False), else when more
    than one worker is available and the run is large enough to repay starting them."""
    if processes is not None:
        return processes
    return workers > 1 and events >= PROCESS_THRESHOLD


def packable(items: Iterable[SignatureItem]) -> list[SignatureItem]:
    """The items that fit the packed form. Any other is left to ``Chunk.verify``, which
    verifies it on the spot and so reports it as ``ves.signing.verify`` does."""
    return [item for item in items if (len(item[0]), len(item[1]), len(item[2])) == (32, 32, 64)]


class SignaturePool:
    """``workers`` spawned processes running :func:`verify_packed`; a context manager."""

    def __init__(self, workers: int) -> None:
        # spawn, not fork: the parent has an event loop, a connection pool and maybe
        # SQLite threads, none of which a forked child could safely inherit.
        self._executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        )

    def __enter__(self) -> SignaturePool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True, cancel_futures=exc is not None)

    def submit(self, items: list[SignatureItem]) -> asyncio.Future[bytes]:
        """Verify ``items`` (all :func:`packable`) in a worker: one byte per item, 1 when
        its signature verifies."""
        keys, hashes, signatures = (b"".join(part) for part in zip(*items, strict=True))
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, verify_packed, keys, hashes, signatures)


def verify_packed(keys: bytes, hashes: bytes, signatures: bytes) -> bytes:
    """Run in a worker process: ``ves.signing.is_valid`` on each (32-byte key, 32-byte
    hash, 64-byte signature) packed end to end; one byte (1 valid, 0 not) per item."""
    count = len(keys) // 32
    return bytes(
        is_valid(
            keys[i * 32 : i * 32 + 32],
            hashes[i * 32 : i * 32 + 32],
            signatures[i * 64 : i * 64 + 64],
        )
        for i in range(count)
    )
