"""The agent's two kinds of file for the recovery guide: an export of outbox events that
``sequencer-cli bulk-ingest`` reads, and an online backup of the outbox itself.

**Export** (``export-events --status …`` on the agent): one signed envelope per record,
exactly as signed (NDJSON, or a JSON array), which is the "plain signed envelopes" input
``bulk-ingest`` takes, and ``FILE.manifest.json`` beside it (format
``stateset-agent-export``): the file's SHA-256 and size, the count by state, and a SHA-256
over the ordered signing hashes, so that a truncated or altered export is refused before
anything is sent.

**Backup** (``agent backup``): SQLite's online backup API copies the outbox page by page,
consistent even while ``agent emit`` writes; ``FILE.manifest.json`` (format
``stateset-agent-backup``) pins its SHA-256 and counts. ``agent restore`` checks both, and
that the copy opens as an outbox, before it replaces anything; the outbox it replaces is
moved aside, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from .outbox import STATUS_FILTERS, Outbox, OutboxError

EXPORT_FORMAT = "stateset-agent-export"
BACKUP_FORMAT = "stateset-agent-backup"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
Format = Literal["ndjson", "json"]


class AgentFileError(Exception):
    """A file that cannot be written, or is not what it claims to be."""


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


@contextmanager
def _atomic(target: Path) -> Iterator[IO[bytes]]:
    if not target.parent.is_dir():
        raise AgentFileError(f"{target.parent}: no such directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # events may carry business data
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# --- export ---------------------------------------------------------------------------------


def export_outbox(
    outbox: Outbox, status: str, output: Path, fmt: Format = "ndjson"
) -> dict[str, Any]:
    """Write the outbox events of ``status`` (``unsynced``, ``pushed``, ``acked``,
    ``rejected`` or ``all``) in local order; returns the manifest."""
    states = STATUS_FILTERS.get(status)
    if states is None:
        raise AgentFileError(f"--status must be one of {', '.join(STATUS_FILTERS)}, not {status!r}")
    by_state: Counter[str] = Counter()
    hashes = hashlib.sha256()
    streams: dict[tuple[str, str], int] = {}
    digest, size, first = hashlib.sha256(), 0, True

    def write(handle: IO[bytes], data: bytes) -> None:
        nonlocal size
        handle.write(data)
        digest.update(data)
        size += len(data)

    try:
        with _atomic(output) as handle:
            if fmt == "json":
                write(handle, b"[")
            for event in outbox.iter_events(states):
                # The stored text is what was signed and sent: written as it stands.
                line = event.envelope_json.encode("utf-8")
                if fmt == "json":
                    write(handle, (b"\n" if first else b",\n") + line)
                else:
                    write(handle, line + b"\n")
                first = False
                by_state[event.state.value] += 1
                hashes.update(event.signing_hash)
                env = event.envelope
                key = (str(env.tenant_id), str(env.store_id))
                streams[key] = streams.get(key, 0) + 1
            if fmt == "json":
                write(handle, b"\n]\n")
    except OSError as exc:
        raise AgentFileError(f"{output}: cannot write the export: {exc}") from None
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _now(),
        "source": str(outbox.path),
        "status": status,
        "file": output.name,
        "file_format": fmt,
        "file_bytes": size,
        "file_sha256": digest.hexdigest(),
        "event_count": sum(by_state.values()),
        "by_state": dict(by_state),
        "signing_hashes_sha256": hashes.hexdigest(),
        "streams": [
            {"tenant_id": t, "store_id": s, "event_count": n}
            for (t, s), n in sorted(streams.items())
        ],
    }
    _write_manifest(output, manifest)
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    try:
        with _atomic(manifest_path(path)) as handle:
            handle.write(json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
    except OSError as exc:
        raise AgentFileError(f"{manifest_path(path)}: cannot write: {exc}") from None


def read_manifest(path: Path, expected: str) -> dict[str, Any]:
    where = manifest_path(path)
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentFileError(f"{where}: no manifest beside {path.name}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AgentFileError(f"{where}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != expected:
        raise AgentFileError(f"{where}: not a {expected} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise AgentFileError(
            f"{where}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    return manifest


def check_against_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Raise unless the file is byte for byte the one the manifest describes."""
    try:
        digest, size = sha256_file(path)
    except OSError as exc:
        raise AgentFileError(f"{path}: cannot read ({exc})") from None
    if digest != manifest.get("file_sha256") or size != manifest.get("file_bytes"):
        raise AgentFileError(
            f"{path}: does not match its manifest ({size} bytes, sha256 {digest[:16]}…, "
            f"expected {manifest.get('file_bytes')} bytes, "
            f"{str(manifest.get('file_sha256'))[:16]}…): truncated or altered"
        )


def is_agent_export(path: Path) -> bool:
    """Whether ``path`` has an agent-export manifest beside it (``bulk-ingest`` asks)."""
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == EXPORT_FORMAT


# --- backup and restore ---------------------------------------------------------------------


def backup_outbox(outbox: Outbox, output: Path) -> dict[str, Any]:
    if output.exists():
        raise AgentFileError(
            f"{output} already exists; choose a new name (backups are never overwritten)"
        )
    if not output.parent.is_dir():
        raise AgentFileError(f"{output.parent}: no such directory")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o600)
        outbox.backup_to(tmp)
        with Outbox(tmp) as copy:
            problem = copy.check()
            counts = copy.counts()
        if problem != "ok":
            raise AgentFileError(f"the backup copy does not pass SQLite's check: {problem}")
        for suffix in ("-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        digest, size = sha256_file(tmp)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest = {
        "format": BACKUP_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _now(),
        "source": str(outbox.path),
        "file": output.name,
        "file_bytes": size,
        "file_sha256": digest,
        "counts": counts,
        "event_count": sum(counts.values()),
    }
    _write_manifest(output, manifest)
    return manifest


def restore_outbox(backup: Path, target: Path, *, force: bool) -> dict[str, Any]:
    """Put a checked backup in place of ``target``. An existing outbox is kept beside it
    as ``TARGET.replaced-STAMP`` (with its WAL); without ``force`` it is not touched."""
    manifest = read_manifest(backup, BACKUP_FORMAT)
    check_against_manifest(backup, manifest)
    try:
        with Outbox(backup) as probe:
            problem = probe.check()
            counts = probe.counts()
    except OutboxError as exc:
        raise AgentFileError(f"{backup}: {exc.message}") from None
    if problem != "ok":
        raise AgentFileError(f"{backup}: SQLite's check fails: {problem}")
    if counts != manifest.get("counts"):
        raise AgentFileError(
            f"{backup}: holds {counts}, its manifest says {manifest.get('counts')}"
        )
    moved: list[str] = []
    if target.exists():
        if not force:
            raise AgentFileError(
                f"{target} exists; pass --force to replace it (it is kept beside as "
                f"{target.name}.replaced-…)"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(target) + suffix)
            if old.exists():
                aside = Path(f"{target}.replaced-{stamp}{suffix}")
                os.replace(old, aside)
                moved.append(str(aside))
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(backup, tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"restored": str(target), "from": str(backup), "counts": counts, "moved_aside": moved}
