"""Re-submit exported (or outbox) events to a sequencer over HTTP, checking every receipt.

Safe to repeat: an exact replay answers with the stored receipt, so a second run, or one
that died halfway, changes nothing it already did. ``resume`` saves the round trips for
what the server already holds: when a stream's head event on the server is the export's
event at that sequence number, everything up to it is skipped.

Streams go side by side, ``concurrency`` requests in flight at most, each stream's
batches one after the other in file order (its numbering depends on it); streams are
started in the order the file first names them. An export lists its streams one after
the other, so reading it front to back would leave one stream at a time in flight: a
first light pass (:func:`segments`) notes where each stream's runs of lines start, and
each stream is read from there. So memory stays bounded, about one batch per stream in
flight, and the file is read twice more: once to check every record (a truncated or
altered export is refused before anything is sent) and once to send; its count and
signing-hash digest are checked against the manifest at the end, as reading it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
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
    parse_record,
    read_export,
    read_manifest,
    record_lines,
)

DEFAULT_BATCH = 500
# Requests in flight (streams side by side): enough to keep a server's cores and its
# group commit busy, few enough that one client does not crowd out live agents.
DEFAULT_CONCURRENCY = 4
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


StreamId = tuple[uuid.UUID, uuid.UUID]


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of consecutive records of one stream: where it starts (a byte offset and
    line number in an export; an index among a plain file's records) and its length."""

    stream: StreamId
    start: int
    line: int
    count: int


def segments(path: Path, plain: Sequence[ExportedEvent] | None = None) -> list[Segment]:
    """The runs of records of one stream, in file order. For an export, a light pass:
    each line is parsed as JSON for its two ids only (every record is checked when it is
    read to be sent); ``plain``: the records of a plain file, already parsed."""
    keys: Iterator[tuple[int, int, StreamId | tuple[str, str]]]
    if plain is not None:
        keys = ((i, i + 1, _stream(r)) for i, r in enumerate(plain))
    else:
        fmt = str(read_manifest(path).get("file_format"))
        keys = _line_keys(path, fmt)
    found: list[Segment] = []
    run_key: object = None
    ids: dict[object, StreamId] = {}
    for start, line, key in keys:
        if found and key == run_key:
            last = found[-1]
            found[-1] = Segment(last.stream, last.start, last.line, last.count + 1)
            continue
        stream = ids.get(key)
        if stream is None:
            stream = ids[key] = _as_stream(path, line, key)
        run_key = key
        found.append(Segment(stream, start, line, 1))
    return found


def _line_keys(path: Path, fmt: str) -> Iterator[tuple[int, int, tuple[str, str]]]:
    for at, number, line in record_lines(path, fmt):
        try:
            obj = orjson.loads(line)
            key = (str(obj["tenant_id"]), str(obj["store_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ExportError(f"{path}:{number}: not a record ({exc})") from None
        yield at, number, key


def _as_stream(path: Path, line: int, key: object) -> StreamId:
    if isinstance(key, tuple) and all(isinstance(k, uuid.UUID) for k in key):
        return key[0], key[1]
    assert isinstance(key, tuple)
    try:
        return uuid.UUID(key[0]), uuid.UUID(key[1])
    except ValueError as exc:
        raise ExportError(f"{path}:{line}: not a VES envelope ({exc})") from None


def _stream(record: ExportedEvent) -> StreamId:
    return record.envelope.tenant_id, record.envelope.store_id


class _Digest:
    """The export's count and signing-hash digest, fed segment by segment in file order
    whatever order the streams finish in (only the hashes of segments finished ahead of
    their turn are held). Streams are read in threads of their own, hence the lock."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.count = 0
        self._next = 0
        self._ahead: dict[int, list[bytes]] = {}
        self._lock = threading.Lock()

    def add(self, index: int, hashes: list[bytes]) -> None:
        with self._lock:
            self._ahead[index] = hashes
            while self._next in self._ahead:
                for digest in self._ahead.pop(self._next):
                    self.sha.update(digest)
                    self.count += 1
                self._next += 1


def _read_segment(path: Path, fmt: str, segment: Segment) -> Iterator[ExportedEvent]:
    """``segment``'s records, each checked as ``export.read_export`` checks it."""
    lines = record_lines(path, fmt, segment.start, segment.line)
    with contextlib.closing(lines):
        for _, number, line in itertools.islice(lines, segment.count):
            yield _checked(path, number, line, segment.stream)


def _checked(path: Path, number: int, line: bytes, stream: StreamId) -> ExportedEvent:
    try:
        record = parse_record(load_json(line.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}:{number}: not JSON ({exc})") from None
    except ExportError as exc:
        raise ExportError(f"{path}:{number}: {exc}") from None
    if _stream(record) != stream:
        raise ExportError(f"{path}:{number}: changed while being read")
    return record


async def bulk_ingest(
    path: Path,
    url: str,
    api_key: str | None,
    *,
    batch_size: int = DEFAULT_BATCH,
    resume: bool = False,
    progress: Progress | None = None,
    timeout: float = 60.0,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> BulkReport:
    """Send ``path`` to ``url``; ``concurrency`` requests in flight at most, over as
    many streams."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    report = BulkReport(total=count_records(path))
    async with SequencerClient(url, api_key, timeout=timeout) as client:
        try:
            await client.use_sequencer_key()
            skip_to = await _resume_points(client, path) if resume else {}
            await _send_streams(client, path, batch_size, skip_to, report, progress, concurrency)
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


async def _send_streams(
    client: SequencerClient,
    path: Path,
    batch_size: int,
    skip_to: dict[StreamId, int],
    report: BulkReport,
    progress: Progress | None,
    concurrency: int,
) -> None:
    exported = not agent_files.is_agent_export(path) and manifest_path(path).exists()
    plain = None if exported else await asyncio.to_thread(lambda: list(records(path)))
    found = await asyncio.to_thread(segments, path, plain)
    fmt = str(read_manifest(path).get("file_format")) if exported else ""
    # Each stream's segments in file order, streams in the order the file first names them.
    lanes: dict[StreamId, list[tuple[int, Segment]]] = {}
    for index, segment in enumerate(found):
        lanes.setdefault(segment.stream, []).append((index, segment))
    digest = _Digest()

    def stream_records(lane: list[tuple[int, Segment]]) -> Iterator[ExportedEvent]:
        for index, segment in lane:
            hashes: list[bytes] = []
            if plain is not None:
                chosen: Iterator[ExportedEvent] = iter(
                    plain[segment.start : segment.start + segment.count]
                )
            else:
                chosen = _read_segment(path, fmt, segment)
            for record in chosen:
                hashes.append(record.signing_hash)
                yield record
            digest.add(index, hashes)

    async def send_stream(lane: list[tuple[int, Segment]]) -> None:
        batches = _batches(stream_records(lane), batch_size, skip_to, report, progress)
        # The stream's next batch is read and checked in a thread while its previous one
        # is on the wire; its batches go one at a time, in file order.
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

    pending = iter(list(lanes.values()))

    async def worker() -> None:
        for lane in pending:  # shared: each stream is taken by one worker
            await send_stream(lane)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(lanes)))]
    try:
        for finished in asyncio.as_completed(workers):
            await finished  # the first failure stops the rest
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if exported:
        manifest = read_manifest(path)
        if digest.count != manifest.get("event_count"):
            raise ExportError(
                f"{path}: {digest.count} records, manifest says {manifest.get('event_count')}"
            )
        if digest.sha.hexdigest() != manifest.get("signing_hashes_sha256"):
            raise ExportError(f"{path}: signing hashes differ from the manifest's digest")


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
