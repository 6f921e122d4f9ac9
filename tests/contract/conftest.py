"""Fixtures of the contract suites: every test runs once on SQLite and once on PostgreSQL.

``opened`` is the store and the backend's name; each port has a fixture of its own name
(``event_log``, ``keys``, ``access``, ``schemas``, ``policies``, ``commitments``,
``maintenance``, ``snapshots``, ``database``) typed as that port, so a suite states which
contract it holds the adapters to. ``store`` is the whole store, for tests that cross ports.

PostgreSQL is a real server (``stateset_sequencer.testing.pg`` says how one is found or
started); each test gets a database of its own, dropped afterwards. Stores are opened by
the factory, as the service opens them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import (
    AccessStore,
    AgentCursors,
    AgentPolicies,
    AuditChain,
    Commitments,
    Database,
    EventLog,
    KeyRegistry,
    LeaderLock,
    Maintenance,
    Projections,
    RateBudgets,
    SchemaStore,
    Snapshots,
    Store,
)
from stateset_sequencer.testing import pg


@dataclass(frozen=True)
class Opened:
    store: Store
    backend: str  # "sqlite" or "postgres": the migrations folder and the URL scheme
    url: str


@pytest.fixture(params=["sqlite", "postgres"])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opened]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        store = await open_store(parse_database_url(url, tmp_path))
        await store.migrate()
        try:
            yield Opened(store, "sqlite", url)
        finally:
            await store.close()
    else:
        async with pg.scratch_database() as dsn:
            store = await open_store(parse_database_url(dsn, tmp_path), max_connections=8)
            await store.migrate()
            try:
                yield Opened(store, "postgres", dsn)
            finally:
                await store.close()


@pytest.fixture
def store(opened: Opened) -> Store:
    return opened.store


@pytest.fixture
def event_log(opened: Opened) -> EventLog:
    return opened.store


@pytest.fixture
def keys(opened: Opened) -> KeyRegistry:
    return opened.store


@pytest.fixture
def access(opened: Opened) -> AccessStore:
    return opened.store


@pytest.fixture
def schemas(opened: Opened) -> SchemaStore:
    return opened.store


@pytest.fixture
def policies(opened: Opened) -> AgentPolicies:
    return opened.store


@pytest.fixture
def commitments(opened: Opened) -> Commitments:
    return opened.store


@pytest.fixture
def cursors(opened: Opened) -> AgentCursors:
    return opened.store


@pytest.fixture
def rate_budgets(opened: Opened) -> RateBudgets:
    return opened.store


@pytest.fixture
def maintenance(opened: Opened) -> Maintenance:
    return opened.store


@pytest.fixture
def snapshots(opened: Opened) -> Snapshots:
    return opened.store


@pytest.fixture
def database(opened: Opened) -> Database:
    return opened.store


@pytest.fixture
def audit_chain(opened: Opened) -> AuditChain:
    return opened.store


@pytest.fixture
def projections(opened: Opened) -> Projections:
    return opened.store


@pytest.fixture
def leader_lock(opened: Opened) -> LeaderLock:
    return opened.store
