"""Export a stream's events, exactly as signed, with their receipts, and check an export.

A record is the envelope in its wire form (what the agent sent and signed: snake_case,
``0x`` hex, ``created_at`` as the signed string, ``payload`` or ``payload_encrypted``)
plus ``sequence_number``, ``sequenced_at`` and ``receipt`` (the camelCase REST form, or
null). Encrypted events stay encrypted: the sequencer never holds their keys.

``FILE.manifest.json`` sits beside the export and pins it: counts, first and last
sequence per stream, the SHA-256 of the file, and a SHA-256 over the ordered event signing
hashes (per stream and overall), so that a re-ingest can prove it replayed the same
events in the same order. Both files are written to temporary names and renamed into
place, so a crash never leaves a half export under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from ..store.ports import EventLog
from ..store.records import StoredEvent, StreamKey
from ..ves import envelope as ves_envelope
from ..ves.codec import format_rfc3339
from ..ves.errors import EnvelopeInvalid, VesError
from ..ves.jsontext import dump_json, load_json
from ..ves.signing import Receipt
from .manifest import load_manifest

EXPORT_FORMAT = "stateset-sequencer-export"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
Format = Literal["ndjson", "json"]


class ExportError(Exception):
    """An export cannot be written, or a file is not a sound export."""


@dataclass(frozen=True, slots=True)
class StreamRange:
    stream: StreamKey
    start: int
    end: int  # inclusive; below start means "nothing"


@dataclass(slots=True)
class _StreamTally:
    stream: StreamKey
    count: int = 0
    first: int | None = None
    last: int | None = None
    hashes: Any = field(default_factory=hashlib.sha256)

    def add(self, sequence: int, signing_hash: bytes) -> None:
        self.count += 1
        if self.first is None:
            self.first = sequence
        self.last = sequence
        self.hashes.update(signing_hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": str(self.stream.tenant_id),
            "store_id": str(self.stream.store_id),
            "event_count": self.count,
            "first_sequence": self.first,
            "last_sequence": self.last,
            "signing_hashes_sha256": self.hashes.hexdigest(),
        }


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + MANIFEST_SUFFIX)


def export_record(event: StoredEvent, receipt: Receipt | None) -> dict[str, Any]:
    record = event.envelope.to_wire()
    record["sequence_number"] = event.sequence_number
    record["sequenced_at"] = format_rfc3339(event.sequenced_at)
    record["receipt"] = None if receipt is None else receipt.to_wire()
    return record


@contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """A file that appears under ``target`` only once it is complete and on disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _HashingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self.sha256.update(data)
        self.size += len(data)


async def export_events(
    store: EventLog,
    ranges: list[StreamRange],
    output: Path,
    fmt: Format = "ndjson",
    advance: Callable[[int], None] = lambda _n: None,
) -> dict[str, Any]:
    """Write the events of ``ranges`` (in that order) to ``output`` and its manifest;
    returns the manifest. Memory stays bounded: events are read and written in pages."""
    if not output.parent.is_dir():
        raise ExportError(f"{output.parent}: no such directory")
    tallies = [_StreamTally(r.stream) for r in ranges]
    overall = hashlib.sha256()
    first_record = True
    with atomic_file(output) as handle:
        out = _HashingWriter(handle)
        if fmt == "json":
            out.write(b"[")
        for rng, tally in zip(ranges, tallies, strict=True):
            if rng.end < rng.start:
                continue
            async for event, receipt in store.iter_events_with_receipts(
                rng.stream, rng.start, rng.end
            ):
                line = dump_json(export_record(event, receipt)).encode("utf-8")
                if fmt == "json":
                    out.write(b"\n" if first_record else b",\n")
                    out.write(line)
                else:
                    out.write(line + b"\n")
                first_record = False
                tally.add(event.sequence_number, event.event_signing_hash)
                overall.update(event.event_signing_hash)
                advance(1)
        if fmt == "json":
            out.write(b"\n]\n")
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": format_rfc3339(datetime.now(UTC)),
            "file": output.name,
            "file_format": fmt,
            "file_bytes": out.size,
            "file_sha256": out.sha256.hexdigest(),
            "event_count": sum(t.count for t in tallies),
            "signing_hashes_sha256": overall.hexdigest(),
            "streams": [t.to_json() for t in tallies],
        }
    with atomic_file(manifest_path(output)) as handle:
        handle.write(json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
    return manifest


# --- reading and checking an export ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedEvent:
    envelope: ves_envelope.VesEventEnvelope
    sequence_number: int
    sequenced_at: str
    receipt: Receipt | None
    signing_hash: bytes


def read_manifest(path: Path) -> dict[str, Any]:
    return load_manifest(
        manifest_path(path),
        EXPORT_FORMAT,
        FORMAT_VERSION,
        ExportError,
        "no manifest beside the export",
    )


def file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True, slots=True)
class FileCheck:
    """An export file measured against the manifest beside it."""

    manifest: dict[str, Any]
    sha256: str
    size: int

    @property
    def matches(self) -> bool:
        expected = (self.manifest.get("file_sha256"), self.manifest.get("file_bytes"))
        return (self.sha256, self.size) == expected


def check_file(path: Path) -> FileCheck:
    """Read the manifest and measure the file; what the caller does with a mismatch is
    its own (reading an export refuses it, as does re-ingest, each in its own words)."""
    manifest = read_manifest(path)
    try:
        digest, size = file_sha256(path)
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc})") from None
    return FileCheck(manifest, digest, size)


def record_lines(
    path: Path, fmt: str, start: int = 0, first: int = 1
) -> Generator[tuple[int, int, bytes], None, None]:
    """The records' JSON texts from byte ``start`` (line ``first``) on, each with its byte
    offset and line number (both formats put one per line; a JSON array's brackets and
    commas are dropped)."""
    with path.open("rb") as handle:
        handle.seek(start)
        offset = start
        for number, raw in enumerate(handle, start=first):
            at, offset = offset, offset + len(raw)
            line = raw.strip()
            if fmt == "json":
                if line in (b"[", b"]", b""):
                    continue
                line = line.removesuffix(b",")
            if line:
                yield at, number, line


def parse_record(obj: Any) -> ExportedEvent:
    """One export record back into an envelope; its signing hash is recomputed (which
    also checks the payload or cipher hash)."""
    if not isinstance(obj, dict):
        raise ExportError("a record is not a JSON object")
    try:
        env = ves_envelope.parse_envelope(obj)
        signing_hash = ves_envelope.validate(env)
        receipt_obj = obj.get("receipt")
        receipt = None if receipt_obj is None else Receipt.from_wire(receipt_obj)
    except ValidationError as exc:
        raise ExportError(f"not a VES envelope: {' '.join(str(exc).split())[:200]}") from None
    except EnvelopeInvalid as exc:
        raise ExportError(f"{exc.reason}: {exc.message}") from None
    except (VesError, TypeError, AttributeError) as exc:
        raise ExportError(f"bad receipt: {exc}") from None
    seq, at = obj.get("sequence_number"), obj.get("sequenced_at")
    if type(seq) is not int or not isinstance(at, str):
        raise ExportError("sequence_number or sequenced_at missing or mistyped")
    return ExportedEvent(env, seq, at, receipt, signing_hash)


def read_export(path: Path) -> Iterator[ExportedEvent]:
    """Check the manifest's file checksum, then yield every record in order; raises
    :class:`ExportError` naming the line of the first bad record, and at the end if the
    counts or the signing-hash digest disagree with the manifest."""
    check = check_file(path)
    manifest = check.manifest
    if not check.matches:
        raise ExportError(
            f"{path}: file does not match its manifest ({check.size} bytes, sha256 "
            f"{check.sha256[:16]}…; manifest says {manifest.get('file_bytes')} bytes, "
            f"{str(manifest.get('file_sha256'))[:16]}…): truncated or altered"
        )
    overall = hashlib.sha256()
    count = 0
    for _at, number, line in record_lines(path, str(manifest.get("file_format"))):
        try:
            record = parse_record(load_json(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}:{number}: not JSON ({exc})") from None
        except ExportError as exc:
            raise ExportError(f"{path}:{number}: {exc}") from None
        overall.update(record.signing_hash)
        count += 1
        yield record
    if count != manifest.get("event_count"):
        raise ExportError(f"{path}: {count} records, manifest says {manifest.get('event_count')}")
    if overall.hexdigest() != manifest.get("signing_hashes_sha256"):
        raise ExportError(f"{path}: signing hashes differ from the manifest's digest")
