"""``backup``, ``backup verify`` and ``restore``: backup directories and their manifests.

A backup is a directory (mode 0700: the whole database is in it, key hashes and audit
trail included) holding one snapshot file, written by the store's :class:`Snapshots`
port, and ``manifest.json`` with the snapshot format, the time, the tool, the SHA-256 of
every file and the *contents*: per-stream heads and commitment digests, and row counts of
the critical tables. The port reads the contents from exactly the state it copied, so a
restore can be compared with the manifest exactly, even when the source kept taking
writes. How a snapshot is taken, restored or test-restored is the adapter's business;
this module only keeps the directory, the manifest and the comparisons.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..store.errors import SnapshotError
from ..store.factory import (
    DatabaseConfig,
    snapshot_file,
    snapshots_for,
)
from ..store.ports import AccessStore, Maintenance, Progress, Snapshots
from ..store.records import AuditEntry, SnapshotContents, StreamSummary
from ..ves.codec import format_rfc3339
from .export import atomic_file, file_sha256
from .manifest import load_manifest

BACKUP_FORMAT = "stateset-sequencer-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
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
    "ves_agent_cursors",
    "agent_event_policies",
    "audit_log",
)


class BackupError(Exception):
    """A backup cannot be made, is not sound, or cannot be restored."""


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


def _json(contents: SnapshotContents) -> dict[str, Any]:
    return contents_json(contents.streams, dict(contents.tables))


async def database_contents(store: Maintenance) -> dict[str, Any]:
    """The contents object of a live database, as a manifest records it (for comparing a
    database with a backup; a quiescent database gives the same answer as its snapshot)."""
    summaries = await store.stream_summaries()
    counts = await store.row_counts(CRITICAL_TABLES)
    return contents_json(summaries, counts)


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
    """A manifest's entry for one file."""
    sha256, size = file_sha256(path)
    return {"sha256": sha256, "bytes": size}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    manifest = load_manifest(
        path, BACKUP_FORMAT, FORMAT_VERSION, BackupError, "no manifest (not a backup directory?)"
    )
    # "dialect" is the manifest's historical name for the snapshot format.
    if snapshot_file(manifest.get("dialect")) is None:
        raise BackupError(f"{path}: unknown dialect {manifest.get('dialect')!r}")
    return manifest


def check_files(directory: Path, manifest: dict[str, Any]) -> Path:
    """Re-check every file's checksum; returns the snapshot file."""
    files: dict[str, Any] = manifest.get("files") or {}
    for name, expected in files.items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise BackupError(f"{path}: listed in the manifest but missing")
        if file_digest(path) != expected:
            raise BackupError(f"{path}: checksum differs from the manifest (damaged or altered)")
    wanted = snapshot_file(manifest["dialect"])
    if wanted is None or wanted not in files:
        raise BackupError(f"{directory / MANIFEST}: does not list {wanted}")
    return directory / wanted


def _compare(manifest: dict[str, Any], restored: dict[str, Any], what: str) -> None:
    problems = differences(manifest["contents"], restored)
    if problems:
        raise BackupError(f"{what} differs from the manifest: " + "; ".join(problems))


# --- backup -----------------------------------------------------------------------------------


async def take_backup(
    source: Snapshots, out_dir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Snapshot ``source`` into the new (or empty) directory ``out_dir`` and write its
    manifest; returns the manifest. Nothing that looks like a backup is left on failure."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BackupError(f"{out_dir} exists and is not an empty directory")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if created:
            # The whole database is in here, key hashes and audit trail included.
            out_dir.chmod(0o700)
        name = source.snapshot_file
        try:
            taken = await source.take_snapshot(out_dir / name, CRITICAL_TABLES, progress)
        except SnapshotError as exc:
            raise BackupError(str(exc)) from None
        manifest = {
            "format": BACKUP_FORMAT,
            "format_version": FORMAT_VERSION,
            "dialect": source.snapshot_format,
            "created_at": format_rfc3339(datetime.now(UTC)),
            "tool": taken.tool,
            "files": {name: file_digest(out_dir / name)},
            "contents": _json(taken.contents),
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


# --- verify and restore -----------------------------------------------------------------------


async def verify_backup(directory: Path, server: DatabaseConfig | None) -> dict[str, Any]:
    """Checksums, then a test restore into a scratch database compared with the
    manifest. A backup of a server database needs ``server`` (one on which a temporary
    database may be created); an embedded one needs nothing. Returns the restored
    contents."""
    manifest = read_manifest(directory)
    db_file = check_files(directory, manifest)
    try:
        scratch = snapshots_for(manifest["dialect"], server)
        restored = _json(await scratch.test_restore(db_file, CRITICAL_TABLES))
    except SnapshotError as exc:
        raise BackupError(str(exc)) from None
    _compare(manifest, restored, "test restore")
    return restored


async def restore_backup(directory: Path, target: Snapshots, *, force: bool) -> dict[str, Any]:
    """Restore a checked backup into ``target`` (refusing a database in use unless
    ``force``) and compare the result with the manifest. Returns the restored contents."""
    manifest = read_manifest(directory)
    db_file = check_files(directory, manifest)
    if target.snapshot_format != manifest["dialect"]:
        raise BackupError(
            f"the backup is {manifest['dialect']}; the target is {target.snapshot_format}"
        )
    try:
        if not force and await target.holds_data():
            raise BackupError(
                "the target holds events or keys; refusing to overwrite it (pass --force)"
            )
        restored = _json(await target.restore_snapshot(db_file, CRITICAL_TABLES))
    except SnapshotError as exc:
        raise BackupError(str(exc)) from None
    _compare(manifest, restored, "restored database")
    return restored


RESTORE_ACTION = "backup.restore"


async def record_restore(
    audit: AccessStore, directory: Path, restored: dict[str, Any], *, force: bool, actor: str
) -> AuditEntry:
    """Append the restore to the restored database's own audit chain. It comes after the
    comparison with the manifest (whose row counts include the audit log as backed up),
    so the chain shows the backup's entries, then this one: who replaced the data, from
    which backup, and whether a database holding data was overwritten."""
    manifest = read_manifest(directory)
    return await audit.append_audit(
        AuditEntry(
            action=RESTORE_ACTION,
            actor=actor,
            actor_type="cli",
            resource_type="database",
            resource_id=str(directory),
            details={
                "backup_created_at": manifest.get("created_at"),
                "dialect": manifest.get("dialect"),
                "forced": force,
                "streams": len(restored.get("streams", [])),
                "events": restored.get("tables", {}).get("ves_events", 0),
            },
        )
    )
