"""``backup``, ``backup verify`` and ``restore``.

A backup is a directory: the database copy (PostgreSQL: ``pg_dump -Fc``; SQLite: the online
backup API) and ``manifest.json`` with the dialect, the time, the SHA-256 of every file and
the *contents*: per-stream heads and commitment roots, and row counts of the critical
tables. The contents are read from exactly the state that was copied (PostgreSQL: inside
the snapshot ``pg_dump`` is handed; SQLite: from the copy itself), so a restore can be
compared with the manifest exactly, even when the source kept taking writes.

Passwords never appear on a command line (where ``ps`` shows them): a DSN's password is
taken out and passed in ``PGPASSWORD``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from ..store.base import StreamSummary
from ..store.factory import describe
from ..store.postgres import maintenance as pg_maintenance
from ..store.sqlite import maintenance as sqlite_maintenance
from ..ves.codec import format_rfc3339
from .export import atomic_file
from .manifest import load_manifest

BACKUP_FORMAT = "stateset-sequencer-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "sequencer.db"
PG_FILE = "database.dump"
CRITICAL_TABLES = (
    "ves_events",
    "ves_sequencer_receipts",
    "sequence_counters",
    "agent_signing_keys",
    "ves_commitments",
    "api_keys",
    "ves_command_dedupe",
    "entity_versions",
    "event_schemas",
    "audit_log",
)
_PG_TIMEOUT_S = 30.0


class BackupError(Exception):
    """A backup cannot be made, is not sound, or cannot be restored."""


# --- PostgreSQL plumbing ----------------------------------------------------------------------


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
        raise BackupError(f"{name} not found on PATH or under /usr/lib/postgresql/*/bin")
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
        raise BackupError(f"{Path(args[0]).name} failed (exit {proc.returncode}): {text}")
    return out.decode("utf-8", "replace")


async def _tool_version(tool: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        tool, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode("utf-8", "replace").strip()


async def _pg_connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(dsn, timeout=_PG_TIMEOUT_S)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BackupError(f"cannot connect to PostgreSQL: {exc}") from None


async def pg_contents(conn: asyncpg.Connection[asyncpg.Record]) -> dict[str, Any]:
    summaries = await pg_maintenance.stream_summaries(conn)
    counts = await pg_maintenance.row_counts(conn, CRITICAL_TABLES)
    return contents_json(summaries, counts)


async def pg_database_contents(dsn: str) -> dict[str, Any]:
    conn = await _pg_connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await pg_contents(conn)
    finally:
        await conn.close()


# --- SQLite plumbing --------------------------------------------------------------------------


def sqlite_contents(path: Path) -> dict[str, Any]:
    conn = sqlite_maintenance.open_read_only(path)
    try:
        problem = sqlite_maintenance.integrity_problem(conn)
        if problem is not None:
            raise BackupError(f"{path}: SQLite integrity check failed: {problem}")
        summaries = sqlite_maintenance.stream_summaries(conn)
        counts = sqlite_maintenance.row_counts(conn, CRITICAL_TABLES)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database ({exc})") from None
    finally:
        conn.close()
    return contents_json(summaries, counts)


# --- manifests --------------------------------------------------------------------------------


def contents_json(summaries: Sequence[StreamSummary], counts: dict[str, int]) -> dict[str, Any]:
    return {
        "streams": [
            {
                "tenant_id": str(s.stream.tenant_id),
                "store_id": str(s.stream.store_id),
                "counter": s.counter,
                "max_sequence": s.max_sequence,
                "event_count": s.event_count,
                "commitment_count": s.commitment_count,
                "last_committed_sequence": s.last_committed_sequence,
                "last_state_root": None if s.last_state_root is None else s.last_state_root.hex(),
                "commitments_sha256": s.commitments_sha256.hex(),
            }
            for s in summaries
        ],
        "tables": dict(sorted(counts.items())),
    }


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Human-readable differences between two contents objects (empty when equal)."""
    found = []
    for table in sorted(set(expected["tables"]) | set(actual["tables"])):
        a, b = expected["tables"].get(table), actual["tables"].get(table)
        if a != b:
            found.append(f"table {table}: manifest {a} rows, restored {b}")
    streams_a = {(s["tenant_id"], s["store_id"]): s for s in expected["streams"]}
    streams_b = {(s["tenant_id"], s["store_id"]): s for s in actual["streams"]}
    for key in sorted(set(streams_a) | set(streams_b)):
        a_s, b_s = streams_a.get(key), streams_b.get(key)
        if a_s != b_s:
            if a_s is None or b_s is None:
                found.append(
                    f"stream {key[0]}/{key[1]}: only in {'restore' if a_s is None else 'manifest'}"
                )
                continue
            fields = [f"{k} {a_s[k]} != {b_s.get(k)}" for k in a_s if a_s[k] != b_s.get(k)]
            found.append(f"stream {key[0]}/{key[1]}: {', '.join(fields)}")
    return found


def file_digest(path: Path) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    manifest = load_manifest(
        path, BACKUP_FORMAT, FORMAT_VERSION, BackupError, "no manifest (not a backup directory?)"
    )
    if manifest.get("dialect") not in ("sqlite", "postgres"):
        raise BackupError(f"{path}: unknown dialect {manifest.get('dialect')!r}")
    return manifest


def check_files(directory: Path, manifest: dict[str, Any]) -> Path:
    """Re-check every file's checksum; returns the database file."""
    files: dict[str, Any] = manifest.get("files") or {}
    for name, expected in files.items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise BackupError(f"{path}: listed in the manifest but missing")
        if file_digest(path) != expected:
            raise BackupError(f"{path}: checksum differs from the manifest (damaged or altered)")
    wanted = SQLITE_FILE if manifest["dialect"] == "sqlite" else PG_FILE
    if wanted not in files:
        raise BackupError(f"{directory / MANIFEST}: does not list {wanted}")
    return directory / wanted


# --- backup -----------------------------------------------------------------------------------


async def create_backup(
    database_url: str | None,
    data_dir: Path,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    dialect, target = describe(database_url, data_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BackupError(f"{out_dir} exists and is not an empty directory")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if created:
            # The whole database is in here, key hashes and audit trail included.
            out_dir.chmod(0o700)
        if dialect == "sqlite":
            tool, contents = await _backup_sqlite(Path(target), out_dir / SQLITE_FILE, progress)
            files = {SQLITE_FILE: file_digest(out_dir / SQLITE_FILE)}
        else:
            tool, contents = await _backup_postgres(target, out_dir / PG_FILE)
            files = {PG_FILE: file_digest(out_dir / PG_FILE)}
        manifest = {
            "format": BACKUP_FORMAT,
            "format_version": FORMAT_VERSION,
            "dialect": dialect,
            "created_at": format_rfc3339(datetime.now(UTC)),
            "tool": tool,
            "files": files,
            "contents": contents,
        }
        with atomic_file(out_dir / MANIFEST) as handle:
            handle.write(json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
    except BaseException:
        # Never leave something that looks like a backup but is not one.
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for child in out_dir.iterdir():
                child.unlink(missing_ok=True)
        raise
    return manifest


async def _backup_sqlite(
    source: Path, copy: Path, progress: Callable[[int, int], None] | None
) -> tuple[str, dict[str, Any]]:
    if not source.is_file():
        raise BackupError(f"{source}: no such SQLite database")
    try:
        await asyncio.to_thread(sqlite_maintenance.online_backup, source, copy, progress)
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from None
    contents = await asyncio.to_thread(sqlite_contents, copy)
    return f"sqlite3 online backup API (SQLite {sqlite3.sqlite_version})", contents


async def _backup_postgres(dsn: str, dump: Path) -> tuple[str, dict[str, Any]]:
    tool = pg_tool("pg_dump")
    conn = await _pg_connect(dsn)
    try:
        # pg_dump reads the snapshot this transaction exports, so the manifest's contents
        # (read here) and the dump describe the same instant.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            contents = await pg_contents(conn)
            await _run_tool(
                [tool, "--format=custom", f"--snapshot={snapshot}", f"--file={dump}"], dsn
            )
    finally:
        await conn.close()
    return await _tool_version(tool), contents


# --- verify and restore -----------------------------------------------------------------------


async def verify_backup(directory: Path, server_dsn: str | None) -> dict[str, Any]:
    """Checksums, then a test restore into a scratch database compared with the
    manifest. PostgreSQL backups need ``server_dsn`` (a server on which a temporary
    database may be created). Returns the restored contents."""
    manifest = read_manifest(directory)
    db_file = check_files(directory, manifest)
    if manifest["dialect"] == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sequencer-verify-") as scratch:
            copy = Path(scratch) / SQLITE_FILE
            shutil.copyfile(db_file, copy)
            restored = await asyncio.to_thread(sqlite_contents, copy)
    else:
        if server_dsn is None or describe(server_dsn, Path())[0] != "postgres":
            raise BackupError(
                "a PostgreSQL backup is test-restored on a server: pass --database-url postgres://…"
            )
        restored = await _scratch_restore(db_file, server_dsn)
    problems = differences(manifest["contents"], restored)
    if problems:
        raise BackupError("test restore differs from the manifest: " + "; ".join(problems))
    return restored


async def _scratch_restore(dump: Path, server_dsn: str) -> dict[str, Any]:
    name = f"sequencer_verify_{uuid.uuid4().hex[:16]}"
    admin = await _pg_connect(server_dsn)
    try:
        # The name is generated above (hex only), never taken from input.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            scratch = with_database(server_dsn, name)
            await _run_tool(
                [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", str(dump)], scratch
            )
            return await pg_database_contents(scratch)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except asyncpg.PostgresError as exc:
        raise BackupError(f"scratch database on the server: {exc}") from None
    finally:
        await admin.close()


async def target_is_empty(database_url: str, data_dir: Path) -> bool:
    dialect, target = describe(database_url, data_dir)
    if dialect == "sqlite":
        path = Path(target)
        if not path.exists():
            return True
        conn = sqlite_maintenance.open_read_only(path)
        try:
            return sqlite_maintenance.is_empty(conn)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path}: not a readable SQLite database ({exc})") from None
        finally:
            conn.close()
    conn_pg = await _pg_connect(target)
    try:
        return await pg_maintenance.is_empty(conn_pg)
    finally:
        await conn_pg.close()


async def restore(
    directory: Path, database_url: str, data_dir: Path, *, force: bool
) -> dict[str, Any]:
    """Restore a checked backup into ``database_url`` (refusing a database in use unless
    ``force``) and compare the result with the manifest. Returns the restored contents."""
    manifest = read_manifest(directory)
    db_file = check_files(directory, manifest)
    dialect, target = describe(database_url, data_dir)
    if dialect != manifest["dialect"]:
        raise BackupError(f"the backup is {manifest['dialect']}; the target is {dialect}")
    if not force and not await target_is_empty(database_url, data_dir):
        raise BackupError(
            "the target holds events or keys; refusing to overwrite it (pass --force)"
        )
    if dialect == "sqlite":
        await asyncio.to_thread(_replace_sqlite, db_file, Path(target))
        restored = await asyncio.to_thread(sqlite_contents, Path(target))
    else:
        await _run_tool(
            [
                pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                str(db_file),
            ],
            target,
        )
        restored = await pg_database_contents(target)
    problems = differences(manifest["contents"], restored)
    if problems:
        raise BackupError("restored database differs from the manifest: " + "; ".join(problems))
    return restored


def _replace_sqlite(source: Path, target: Path) -> None:
    """Swap the file in atomically. A -wal or -shm left from the old database would be
    replayed into the new one, so they go first (the sequencer must be stopped)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restore", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
