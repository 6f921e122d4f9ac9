"""A writer process for the crash tests: ingests batches forever (bounded) and prints each
receipt the moment it is returned, so the parent knows what was acknowledged before the kill.

Usage: python -m tests.crash_child DATABASE_URL DATA_DIR
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.testing import kit

MAX_BATCHES = 2000
MAX_SECONDS = 120


async def main(database_url: str, data_dir: Path) -> None:
    store = await open_store(parse_database_url(database_url, data_dir), max_connections=4)
    seq = kit.sequencer(store)
    deadline = time.monotonic() + MAX_SECONDS
    out = sys.stdout
    for b in range(MAX_BATCHES):
        if time.monotonic() > deadline:
            break
        batch = [kit.event(b * 10 + i) for i in range(10)]
        result = await seq.ingest(kit.AGENT_ID, batch)
        for receipt in result.receipts:
            out.write(
                f"{receipt.sequence_number} {receipt.event_id} {receipt.receipt_hash.hex()}\n"
            )
        out.flush()
    seq.close()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
