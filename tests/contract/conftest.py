"""The ``store`` fixture: every contract test runs once on SQLite and once on PostgreSQL.

PostgreSQL is a real server (see ``tests/pg.py`` for how one is found or started); each
test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stateset_sequencer.store.base import Store
from tests import pg


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        from stateset_sequencer.store.sqlite import SqliteStore

        opened: Store = await SqliteStore.open(tmp_path / "contract.db")
        await opened.migrate()
        try:
            yield opened
        finally:
            await opened.close()
    else:
        from stateset_sequencer.store.postgres import PostgresStore

        async with pg.scratch_database() as dsn:
            opened = await PostgresStore.open(dsn, max_connections=8)
            await opened.migrate()
            try:
                yield opened
            finally:
                await opened.close()
