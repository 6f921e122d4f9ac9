"""A real PostgreSQL server for the tests (never a mock), found or started once per process.

In order:

1. ``SEQUENCER_TEST_DATABASE_URL``, a server DSN on which tests create and drop their own
   databases (the role needs CREATEDB). Set but unusable is a failure, not a skip: whoever
   set it expects those tests to run.
2. The local server on 127.0.0.1:5432, as user ``postgres`` (trust auth on our machines).
3. A throwaway cluster from the newest ``/usr/lib/postgresql/*/bin`` (a
   :class:`.cluster.Cluster`, fsync off): initdb in a temp dir, listening on a free
   loopback port only, stopped and removed at interpreter exit. Its DSN is exported as
   ``SEQUENCER_TEST_DATABASE_URL`` so child processes reuse it.

If none works the tests fail under ``CI=true`` (a CI run must not pass by skipping) and
are skipped elsewhere, with the reason.

Each test gets a database of its own (``scratch_database``), dropped afterwards; the sync
``create_database``/``drop_database`` pair serves code outside an event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ..config import TestEnvironment
from . import cluster
from .ports import free_port

ENV_VAR = "SEQUENCER_TEST_DATABASE_URL"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
MIN_SERVER_VERSION = 130000  # DROP DATABASE ... WITH (FORCE)

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PREFIX_MAX = 63 - 33  # room for "_" and 32 hex digits within PostgreSQL's 63-byte names

T = TypeVar("T")


class ScratchDatabase(NamedTuple):
    name: str
    dsn: str


class _Resolution(NamedTuple):
    dsn: str | None
    reason: str
    fatal: bool  # fail even outside CI (an explicitly configured server is unusable)


_lock = threading.Lock()
_resolution: _Resolution | None = None
# The throwaway cluster this process started, if any (a test may stop it early).
_throwaway: cluster.Cluster | None = None


# --- finding a server -----------------------------------------------------------------------------


def server_dsn() -> str:
    """The server DSN for this process; skips or fails the calling test when there is none."""
    found = _resolve()
    if found.dsn is None:
        message = f"no PostgreSQL server for the tests: {found.reason}"
        if found.fatal or TestEnvironment().strict:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found.dsn


def server_description() -> str:
    """Where the server came from (for reports); resolves it if needed."""
    return _resolve().reason


def _resolve() -> _Resolution:
    global _resolution
    with _lock:
        if _resolution is None:
            _resolution = _find_server()
        return _resolution


def _find_server() -> _Resolution:
    configured = (TestEnvironment().SEQUENCER_TEST_DATABASE_URL or "").strip()
    if configured:
        problem = _probe(configured)
        if problem is None:
            return _Resolution(configured, f"{ENV_VAR}", fatal=False)
        return _Resolution(None, f"{ENV_VAR} is set but unusable: {problem}", fatal=True)
    local_problem = _probe(LOCAL_DSN)
    if local_problem is None:
        return _Resolution(LOCAL_DSN, "local server on 127.0.0.1:5432", fatal=False)
    dsn, problem = _start_cluster()
    if dsn is not None:
        # Exported so that the servers and CLI commands the tests start reuse it.
        os.environ.update({ENV_VAR: dsn})
        return _Resolution(dsn, f"throwaway cluster at {dsn}", fatal=False)
    return _Resolution(
        None,
        f"127.0.0.1:5432: {local_problem}; throwaway cluster: {problem}; "
        f"set {ENV_VAR} to a server DSN",
        fatal=False,
    )


def _probe(dsn: str) -> str | None:
    """None when the server answers and lets us create databases; otherwise why not."""

    async def check() -> str | None:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        try:
            version = int(await conn.fetchval("SHOW server_version_num", timeout=CONNECT_TIMEOUT_S))
            if version < MIN_SERVER_VERSION:
                return f"server version {version} is older than 13"
            may_create = await conn.fetchval(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
                timeout=CONNECT_TIMEOUT_S,
            )
            return None if may_create else "the role may not create databases"
        finally:
            await conn.close(timeout=CONNECT_TIMEOUT_S)

    try:
        return _run_sync(check)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when the caller is itself inside
    a running event loop (a fixture): it gets a loop of its own on a helper thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tests-pg") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# --- a throwaway cluster --------------------------------------------------------------------------


def _pg_bin_dir() -> Path | None:
    try:
        return cluster.pg_bin_dir()
    except cluster.ClusterError:
        return None


def _start_cluster() -> tuple[str | None, str]:
    """initdb and start the throwaway cluster (see :mod:`.cluster`); its DSN, or why not."""
    global _throwaway
    try:
        workdir = Path(tempfile.mkdtemp(prefix="seqtest-pg-"))
    except OSError as exc:
        return None, f"no temp dir: {exc}"
    server = cluster.Cluster(workdir, "cluster")
    try:
        # Speed over crash safety: the test cluster's data dies with the process anyway.
        server.init(durable=False)
    except (cluster.ClusterError, OSError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        return None, str(exc)
    problem = "not attempted"
    for attempt in range(3):  # the free port may be taken before the server binds it
        if attempt:
            server.port = free_port()
            server.configure({"port": str(server.port)})
        try:
            server.start(timeout=START_TIMEOUT_S)
        except cluster.ClusterError as exc:
            problem = str(exc)
            _stop_cluster(server, os.getpid(), remove=False)
            continue
        _throwaway = server
        atexit.register(_stop_cluster, server, os.getpid())
        dsn = server.dsn()
        problem_now = _probe(dsn)
        if problem_now is None:
            return dsn, ""
        return None, f"started but unusable: {problem_now}"
    shutil.rmtree(workdir, ignore_errors=True)
    return None, problem


def _stop_cluster(server: cluster.Cluster, owner_pid: int, *, remove: bool = True) -> None:
    # A forked child inherits atexit handlers; only the process that started it stops it.
    if os.getpid() != owner_pid:
        return
    with contextlib.suppress(cluster.ClusterError, OSError):
        server.stop(mode="immediate", timeout=STOP_TIMEOUT_S)
    if remove:
        with contextlib.suppress(cluster.ClusterError, OSError):
            server.remove()  # kills it if the stop did not
        shutil.rmtree(server.root, ignore_errors=True)


# --- scratch databases ----------------------------------------------------------------------------


def database_dsn(name: str) -> str:
    """The server DSN pointed at database ``name`` (host list and options kept)."""
    parts = urlsplit(server_dsn())
    return urlunsplit(parts._replace(path="/" + _checked_name(name)))


def _new_name(prefix: str) -> str:
    if len(prefix) > _PREFIX_MAX or _NAME_RE.fullmatch(prefix) is None:
        raise ValueError(f"database prefix must match [a-z_][a-z0-9_]* within {_PREFIX_MAX}")
    return f"{prefix}_{uuid.uuid4().hex}"


def _checked_name(name: str) -> str:
    # Names are spliced into CREATE/DROP DATABASE (no bind parameters there), so only
    # plain lowercase identifiers are accepted.
    if _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"not a scratch database name: {name!r}")
    return name


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(server_dsn(), timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(sql, timeout=COMMAND_TIMEOUT_S)
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


async def _create(name: str) -> None:
    # template0 with C collation: UTF-8 whatever the server's default locale, and text
    # ordered bytewise as in SQLite.
    await _admin(
        f'CREATE DATABASE "{_checked_name(name)}" TEMPLATE template0 '
        "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    if TestEnvironment().citus:
        await _make_citus(database_dsn(name))


async def _make_citus(dsn: str) -> None:
    """The citus extension in the new database, the server its one node, holding shards
    (otherwise distributing finds no worker to put them on). Four shards a table, not the
    default 32: still distributed, and a database a test makes is ready in a second."""
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute("CREATE EXTENSION citus", timeout=COMMAND_TIMEOUT_S)
        name = _checked_name(urlsplit(dsn).path.lstrip("/"))
        await conn.execute(f'ALTER DATABASE "{name}" SET citus.shard_count = 4')
        await conn.execute("SELECT citus_set_coordinator_host($1, $2)", host, port)
        await conn.execute(
            "SELECT citus_set_node_property($1, $2, 'shouldhaveshards', true)", host, port
        )
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


async def _drop(name: str) -> None:
    # FORCE ends sessions a test left open (a store not closed after a failure).
    await _admin(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')


@asynccontextmanager
async def scratch_database(prefix: str = "seqtest") -> AsyncIterator[str]:
    """Create a uniquely named database, yield its DSN, drop it afterwards."""
    dsn = server_dsn()  # resolve (and maybe skip) before naming anything
    name = _new_name(prefix)
    await _create(name)
    try:
        yield urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    finally:
        await _drop(name)


def create_database(prefix: str = "seqtest") -> ScratchDatabase:
    """Sync ``scratch_database`` without the automatic drop: ``name, dsn = create_database()``
    then ``drop_database(name)`` (e.g. around a test that starts child processes)."""
    server_dsn()
    name = _new_name(prefix)
    _run_sync(lambda: _create(name))
    return ScratchDatabase(name, database_dsn(name))


def drop_database(name: str) -> None:
    """Drop a database made by :func:`create_database` (its name or its DSN)."""
    if "://" in name:
        name = urlsplit(name).path.lstrip("/")
    checked = _checked_name(name)
    _run_sync(lambda: _drop(checked))
