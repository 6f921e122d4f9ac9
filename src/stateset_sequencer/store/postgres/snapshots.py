"""Snapshots of a PostgreSQL database: ``pg_dump -Fc`` inside an exported snapshot, and
``pg_restore`` into the database or into a scratch database on the same server.

Passwords never appear on a command line (where ``ps`` shows them): a DSN's password is
taken out and passed in ``PGPASSWORD``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import SnapshotError
from ..ports import Progress, Snapshots
from ..records import SnapshotContents, TakenSnapshot
from . import maintenance

SNAPSHOT_FILE = "database.dump"
_CONNECT_TIMEOUT_S = 30.0


class PostgresSnapshots(Snapshots):
    """Snapshots of the database ``dsn`` names; its server also hosts test restores."""

    snapshot_format = "postgres"
    snapshot_file = SNAPSHOT_FILE

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def take_snapshot(
        self, file: Path, tables: Sequence[str], progress: Progress | None = None
    ) -> TakenSnapshot:
        tool = pg_tool("pg_dump")
        conn = await _connect(self._dsn)
        try:
            # pg_dump reads the snapshot this transaction exports, so the contents (read
            # here) and the dump describe the same instant.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                contents = await _contents(conn, tables)
                await _run_tool(
                    [tool, "--format=custom", f"--snapshot={snapshot}", f"--file={file}"],
                    self._dsn,
                )
        finally:
            await conn.close()
        return TakenSnapshot(await _tool_version(tool), contents)

    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        async with _restore_list(file) as listing:
            await _run_tool(
                [
                    pg_tool("pg_restore"),
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                    "--exit-on-error",
                    f"--use-list={listing}",
                    str(file),
                ],
                self._dsn,
            )
        return await database_contents(self._dsn, tables)

    async def test_restore(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        name = f"sequencer_verify_{uuid.uuid4().hex[:16]}"
        admin = await _connect(self._dsn)
        try:
            # The name is generated above (hex only), never taken from input.
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
            try:
                scratch = with_database(self._dsn, name)
                async with _restore_list(file) as listing:
                    await _run_tool(
                        [
                            pg_tool("pg_restore"),
                            "--no-owner",
                            "--exit-on-error",
                            f"--use-list={listing}",
                            str(file),
                        ],
                        scratch,
                    )
                return await database_contents(scratch, tables)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except asyncpg.PostgresError as exc:
            raise SnapshotError(f"scratch database on the server: {exc}") from None
        finally:
            await admin.close()

    async def holds_data(self) -> bool:
        conn = await _connect(self._dsn)
        try:
            return not await maintenance.is_empty(conn)
        finally:
            await conn.close()


async def database_contents(dsn: str, tables: Sequence[str]) -> SnapshotContents:
    """Summaries and row counts of the database ``dsn`` names, from one snapshot."""
    conn = await _connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _contents(conn, tables)
    finally:
        await conn.close()


async def _contents(
    conn: asyncpg.Connection[asyncpg.Record], tables: Sequence[str]
) -> SnapshotContents:
    summaries = await maintenance.stream_summaries(conn)
    counts = await maintenance.row_counts(conn, tables)
    return SnapshotContents(tuple(summaries), counts)


async def _connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SnapshotError(f"cannot connect to PostgreSQL: {exc}") from None


# --- the client tools -------------------------------------------------------------------------

# A dump taken on a Citus coordinator holds every row of the distributed tables, read
# through the coordinator, as plain tables, and CREATE EXTENSION for Citus itself. The
# extensions are left out of every restore: a plain server cannot load them, and with
# --clean a Citus target would drop its own (its nodes and shards with it). A restore
# into Citus is distributed again by ``migrate`` (docs/SCALING.md).
_LEFT_OUT_EXTENSIONS = ("citus", "citus_columnar")
# "2; 3079 19496 EXTENSION - citus" and "4587; 0 0 COMMENT - EXTENSION citus"
_EXTENSION_ENTRY = re.compile(r"^\d+; \d+ \d+ (?:COMMENT - )?EXTENSION (?:- )?(\S+)")


@asynccontextmanager
async def _restore_list(file: Path) -> AsyncIterator[Path]:
    """``file``'s table of contents without the entries of the extensions left out, as a
    file for ``pg_restore --use-list``."""
    proc = await asyncio.create_subprocess_exec(
        pg_tool("pg_restore"),
        "--list",
        str(file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await proc.communicate()
    if proc.returncode != 0:
        text = " ".join(errors.decode("utf-8", "replace").split())[-500:]
        raise SnapshotError(f"pg_restore could not read {file.name}: {text}")
    kept = []
    for line in out.decode("utf-8", "replace").splitlines():
        match = _EXTENSION_ENTRY.match(line)
        if match is not None and match.group(1) in _LEFT_OUT_EXTENSIONS:
            continue
        kept.append(line)
    with tempfile.TemporaryDirectory(prefix="sequencer-restore-") as folder:
        listing = Path(folder) / "restore.list"
        listing.write_text("\n".join(kept) + "\n", encoding="utf-8")
        yield listing


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.parent.parent.name)),
    )
    if not candidates:
        raise SnapshotError(f"{name} not found on PATH or under /usr/lib/postgresql/*/bin")
    return str(candidates[-1])


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password (in the user info or a ``password=`` parameter), and
    the password."""
    parts = urlsplit(dsn)
    password: str | None = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, secret = userinfo.split(":", 1)
            password = unquote(secret)
            netloc = f"{user}@{hosts}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    if len(kept) != len(query):
        password = next(v for k, v in query if k == "password")
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept))), password


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _run_tool(args: Sequence[str], dsn: str) -> str:
    """Run a PostgreSQL client with ``--dbname`` from ``dsn`` (password via env)."""
    bare, password = split_password(dsn)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    proc = await asyncio.create_subprocess_exec(
        *args,
        f"--dbname={bare}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, errors = await proc.communicate()
    if proc.returncode != 0:
        text = " ".join(errors.decode("utf-8", "replace").split())[-500:]
        raise SnapshotError(f"{Path(args[0]).name} failed (exit {proc.returncode}): {text}")
    return out.decode("utf-8", "replace")


async def _tool_version(tool: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        tool, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode("utf-8", "replace").strip()
