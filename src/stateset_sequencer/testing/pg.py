"""A real PostgreSQL server for the tests (never a mock), found or started once per process.

In order:

1. ``SEQUENCER_TEST_DATABASE_URL``, a server DSN on which tests create and drop their own
   databases (the role needs CREATEDB). Set but unusable is a failure, not a skip: whoever
   set it expects those tests to run.
2. The local server on 127.0.0.1:5432, as user ``postgres`` (trust auth on our machines).
3. A throwaway cluster from the newest ``/usr/lib/postgresql/*/bin``: initdb in a temp
   dir, listening on a free loopback port only, stopped and removed at interpreter exit.
   Its DSN is exported as ``SEQUENCER_TEST_DATABASE_URL`` so child processes reuse it.

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
import pwd
import re
import shutil
import socket
import subprocess
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

ENV_VAR = "SEQUENCER_TEST_DATABASE_URL"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0
INITDB_TIMEOUT_S = 120.0
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
    found: list[tuple[tuple[int, ...], Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if not ((candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file()):
            continue
        try:
            version = tuple(int(part) for part in candidate.parent.name.split("."))
        except ValueError:
            continue
        found.append((version, candidate))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_cluster() -> tuple[str | None, str]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        return None, "no initdb under /usr/lib/postgresql/*/bin or on PATH"
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        # initdb refuses to run as root; the cluster belongs to the postgres OS user.
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' OS user"
        if runuser is None:
            return None, "running as root and runuser is missing"
        as_user = [runuser, "-u", "postgres", "--"]
    workdir = Path(tempfile.mkdtemp(prefix="seqtest-pg-"))
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    data = workdir / "data"
    log = workdir / "server.log"
    try:
        subprocess.run(
            [
                *as_user,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INITDB_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        return None, f"initdb failed: {_process_error(exc)}"
    problem = "not attempted"
    for _attempt in range(3):  # the free port may be taken before the server binds it
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            # The server's own output goes to the log file; pg_ctl's to DEVNULL so that no
            # pipe is left open by the daemonised server.
            subprocess.run(
                [
                    *as_user,
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "start",
                ],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=START_TIMEOUT_S + 15,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"pg_ctl start failed: {_process_error(exc)}; {_tail(log)}"
            _stop_cluster(as_user, bin_dir, data, workdir, os.getpid(), remove=False)
            continue
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        atexit.register(_stop_cluster, as_user, bin_dir, data, workdir, os.getpid())
        problem_now = _probe(dsn)
        if problem_now is None:
            return dsn, ""
        return None, f"started but unusable: {problem_now}"
    shutil.rmtree(workdir, ignore_errors=True)
    return None, problem


def _stop_cluster(
    as_user: list[str],
    bin_dir: Path,
    data: Path,
    workdir: Path,
    owner_pid: int,
    *,
    remove: bool = True,
) -> None:
    # A forked child inherits atexit handlers; only the process that started it stops it.
    if os.getpid() != owner_pid:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [
                *as_user,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "immediate",
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
                "stop",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=STOP_TIMEOUT_S + 10,
        )
    if remove:
        shutil.rmtree(workdir, ignore_errors=True)


def _process_error(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        output = exc.stderr or exc.stdout or b""
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return f"exit {exc.returncode}: {text.strip()[-500:]}"
    return str(exc)


def _tail(log: Path) -> str:
    try:
        return "log: " + log.read_text(encoding="utf-8", errors="replace").strip()[-500:]
    except OSError:
        return "no log"


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
