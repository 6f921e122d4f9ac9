"""Re-submit exported (or outbox) events to a sequencer over HTTP, checking every receipt.

Safe to repeat: an exact replay answers with the stored receipt, so a second run, or one
that died halfway, changes nothing it already did. ``resume`` saves the round trips for
what the server already holds: when a stream's head event on the server is the export's
event at that sequence number, everything up to it is skipped.

The file is read twice — once to check every record (a truncated or altered export is
refused before anything is sent), once to send — so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from ..agent import files as agent_files
from ..client import ReceiptMismatch, SequencerClient, SequencerError
from ..ves import envelope as ves_envelope
from ..ves.errors import EnvelopeInvalid
from ..ves.jsontext import load_json
from ..ves.signing import Receipt
from .export import (
    ExportedEvent,
    ExportError,
    check_file,
    manifest_path,
    read_export,
)

DEFAULT_BATCH = 500
RETRIES = 3
RETRY_DELAY_S = 1.0


class BulkIngestError(Exception):
    """The run stopped: the message says where and why; counts so far are in ``report``."""

    def __init__(self, message: str, report: BulkReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(slots=True)
class BulkReport:
    total: int = 0
    accepted: int = 0
    replayed: int = 0
    rejected: int = 0
    skipped: int = 0
    renumbered: int = 0  # acknowledged under another sequence number than exported
    reasons: Counter[str] = field(default_factory=Counter)
    first_rejections: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "accepted": self.accepted,
            "replayed": self.replayed,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "renumbered": self.renumbered,
            "reasons": dict(self.reasons),
            "first_rejections": self.first_rejections,
        }


Progress = Callable[[int], None]


def records(path: Path) -> Iterator[ExportedEvent]:
    """The file's records in order: an ``export-events`` file (checked against its
    manifest), or plain signed envelopes — an agent outbox dump — as NDJSON or a JSON
    array (no sequence numbers or receipts to compare, so nothing is ever skipped)."""
    if agent_files.is_agent_export(path):
        _check_agent_export(path)
        return _plain_records(path)
    if manifest_path(path).exists():
        return read_export(path)
    return _plain_records(path)


def _check_agent_export(path: Path) -> dict[str, Any]:
    """An agent outbox export: plain envelopes, pinned by a checksum manifest."""
    try:
        manifest = agent_files.read_manifest(path, agent_files.EXPORT_FORMAT)
        agent_files.check_against_manifest(path, manifest)
    except agent_files.AgentFileError as exc:
        raise ExportError(str(exc)) from None
    return manifest


def _plain_records(path: Path) -> Iterator[ExportedEvent]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot read ({exc})") from None
    try:
        whole = load_json(text)
        items: list[tuple[int, Any]] = list(
            enumerate(whole if isinstance(whole, list) else [whole], start=1)
        )
    except ValueError:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((number, load_json(line)))
                except ValueError as exc:
                    raise ExportError(f"{path}:{number}: not JSON ({exc})") from None
    for number, obj in items:
        if not isinstance(obj, dict):
            raise ExportError(f"{path}: item {number} is not a JSON object")
        try:
            env = ves_envelope.parse_envelope(obj)
            signing_hash = ves_envelope.validate(env)
        except ValidationError as exc:
            raise ExportError(
                f"{path}: item {number} is not a VES envelope: {' '.join(str(exc).split())[:200]}"
            ) from None
        except EnvelopeInvalid as exc:
            raise ExportError(f"{path}: item {number}: {exc.reason}: {exc.message}") from None
        yield ExportedEvent(env, 0, "", None, signing_hash)


def count_records(path: Path) -> int:
    """Pass one, before anything is sent. An export need only match its manifest's
    checksum (then every record is exactly as exported; pass two still checks each one);
    a plain file has no checksum, so every record is parsed and checked now."""
    if agent_files.is_agent_export(path):
        manifest = _check_agent_export(path)
        counted = sum(1 for _ in _plain_records(path))
        if counted != manifest.get("event_count"):
            raise ExportError(
                f"{path}: {counted} records, its manifest says {manifest.get('event_count')}"
            )
        return counted
    if manifest_path(path).exists():
        check = check_file(path)
        if not check.matches:
            raise ExportError(
                f"{path}: does not match its manifest ({check.size} bytes, sha256 "
                f"{check.sha256[:16]}…): truncated or altered"
            )
        return int(check.manifest.get("event_count", 0))
    return sum(1 for _ in records(path))


async def _resume_points(
    client: SequencerClient, path: Path
) -> dict[tuple[uuid.UUID, uuid.UUID], int]:
    """Per stream, the sequence number up to which the server provably holds the export."""
    heads: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
    for record in records(path):
        key = (record.envelope.tenant_id, record.envelope.store_id)
        if key not in heads:
            heads[key] = await client.head(*key)
    points: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
    wanted = {key: head for key, head in heads.items() if head > 0}
    server_ids: dict[tuple[uuid.UUID, uuid.UUID], str | None] = {}
    for key, head in wanted.items():
        page = await client.events(key[0], key[1], head, 1)
        server_ids[key] = page[0]["event_id"] if page else None
    for record in records(path):
        key = (record.envelope.tenant_id, record.envelope.store_id)
        at_head = key in wanted and record.sequence_number == wanted[key]
        if at_head and server_ids.get(key) == str(record.envelope.event_id):
            points[key] = wanted[key]
    return points


async def bulk_ingest(
    path: Path,
    url: str,
    api_key: str | None,
    *,
    batch_size: int = DEFAULT_BATCH,
    resume: bool = False,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> BulkReport:
    report = BulkReport(total=count_records(path))
    async with SequencerClient(url, api_key, timeout=timeout) as client:
        try:
            await client.use_sequencer_key()
            skip_to = await _resume_points(client, path) if resume else {}
            batches = _batches(records(path), batch_size, skip_to, report, progress)
            # The next batch is read and checked in a thread while the previous one is on
            # the wire: the server's work and ours overlap, and batches still go one at a
            # time, in file order, so every stream keeps its order.
            sending: asyncio.Task[None] | None = None
            try:
                while True:
                    batch = await asyncio.to_thread(next, batches, None)
                    if sending is not None:
                        await sending
                        sending = None
                    if batch is None:
                        break
                    sending = asyncio.create_task(_send(client, batch, report, progress))
            finally:
                if sending is not None and not sending.done():
                    sending.cancel()
        except SequencerError as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            raise BulkIngestError(
                f"the sequencer refused a batch: {exc.status} {exc.code}{reason}: {exc.message}",
                report,
            ) from None
        except ReceiptMismatch as exc:
            raise BulkIngestError(f"a receipt does not match its event: {exc}", report) from None
        except ExportError as exc:
            raise BulkIngestError(f"bad record, stopped there: {exc}", report) from None
        except httpx.HTTPError as exc:
            raise BulkIngestError(f"cannot reach {url}: {type(exc).__name__}", report) from None
    return report


def _batches(
    items: Iterator[ExportedEvent],
    batch_size: int,
    skip_to: dict[tuple[uuid.UUID, uuid.UUID], int],
    report: BulkReport,
    progress: Progress | None,
) -> Iterator[list[ExportedEvent]]:
    """Consecutive records of one stream and agent, at most ``batch_size`` at a time."""
    batch: list[ExportedEvent] = []
    for record in items:
        key = (record.envelope.tenant_id, record.envelope.store_id)
        # Outbox records carry no sequence number (0): never skipped.
        if 0 < record.sequence_number <= skip_to.get(key, 0):
            report.skipped += 1
            if progress:
                progress(1)
            continue
        if batch and (len(batch) >= batch_size or _batch_key(batch[0]) != _batch_key(record)):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def _batch_key(record: ExportedEvent) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    env = record.envelope
    return env.tenant_id, env.store_id, env.source_agent_id


async def _send(
    client: SequencerClient,
    batch: list[ExportedEvent],
    report: BulkReport,
    progress: Progress | None,
) -> None:
    envelopes = [r.envelope for r in batch]
    agent = envelopes[0].source_agent_id
    for attempt in range(RETRIES + 1):
        try:
            outcome = await client.ingest(agent, envelopes)
            break
        except (httpx.TransportError, SequencerError) as exc:
            transient = isinstance(exc, httpx.TransportError) or exc.status in (502, 503, 504)
            if not transient or attempt == RETRIES:
                raise
            await asyncio.sleep(RETRY_DELAY_S * (attempt + 1))
    report.accepted += outcome.events_accepted
    report.replayed += outcome.replayed
    report.rejected += len(outcome.rejections)
    for rejection in outcome.rejections:
        report.reasons[rejection.reason.split(":", 1)[0]] += 1
        if len(report.first_rejections) < 20:
            report.first_rejections.append(
                {
                    "event_id": str(rejection.event_id),
                    "reason": rejection.reason,
                    "message": rejection.message,
                }
            )
    exported: dict[uuid.UUID, Receipt | None] = {r.envelope.event_id: r.receipt for r in batch}
    for receipt in outcome.receipts:
        original = exported.get(receipt.event_id)
        if original is not None and original.sequence_number != receipt.sequence_number:
            report.renumbered += 1
    if progress:
        progress(len(batch))
