"""Projections: each entity's current document, folded from its events in sequence order.

The rules, all here and all pure but :class:`Projector`'s two loops:

* **Projectors** are chosen by ``entity_type`` from a :class:`ProjectorRegistry`; an
  entity type without one of its own gets :func:`merge_projector`, which applies each
  plaintext payload to the document as an RFC 7386 JSON merge patch (:func:`merge_patch`).
  An encrypted event cannot be read here: it advances the version and leaves the document
  as it was. A new entity's document starts as ``{}``.
* **The fold** (:func:`fold`) takes a stream's events from just after its checkpoint, in
  sequence order, and stops at the first hole (a sequence number missing from the
  events read: a lagging read replica, or a gap a repair must fill), so a checkpoint never
  passes an event it did not fold. An entity's ``version`` is the number of its events
  folded, which is its entity version in the log; ``updated_at`` is the ``sequenced_at``
  of the last of them, so a rebuild gives the very same documents.
* **Catching up** (:class:`Projector`) folds a batch per stream and hands the documents
  and the new checkpoint to the store in one transaction, which refuses it if the
  checkpoint moved meanwhile (another worker or a rebuild): nothing is folded twice.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from ..store.errors import ConcurrentWriteError
from ..store.ports import EventLog, Projections
from ..store.records import ProjectionDocument, ProjectionLag, StoredEvent, StreamKey
from ..ves.envelope import PAYLOAD_KIND_PLAINTEXT

log = structlog.get_logger("stateset_sequencer.projections")

SOURCE_VES = "ves"
SOURCE_LEGACY = "legacy"
SOURCES = (SOURCE_VES, SOURCE_LEGACY)
# The leader lock every projection worker contends for (store LeaderLock).
LEADER_LOCK_NAME = "projections"
# Streams asked for per discovery query; the walk goes on from the last one seen.
DISCOVERY_PAGE = 1000


class ProjectionReason(enum.StrEnum):
    INVALID_SOURCE = "invalid_source"
    NOT_FOUND = "projection_not_found"
    LEGACY_NOT_KEPT = "legacy_projections_not_kept"


class ProjectionError(Exception):
    def __init__(self, reason: ProjectionReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_source(source: str) -> str:
    """The read's ``source`` when it is one the reference accepts."""
    if source not in SOURCES:
        raise ProjectionError(ProjectionReason.INVALID_SOURCE, "source must be `ves` or `legacy`")
    return source


def ensure_kept(source: str) -> None:
    """This service has one event log, projected under ``ves``: it keeps no legacy
    projections (the reference's, folded from its legacy event path), so a ``legacy``
    read is answered as not found, with a reason that says why."""
    if source == SOURCE_LEGACY:
        raise ProjectionError(
            ProjectionReason.LEGACY_NOT_KEPT,
            "Projection not found: this service keeps no legacy projections; "
            "its event log is projected under source=ves",
        )


# --- RFC 7386 -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 ``MergePatch(Target, Patch)``: an object patch sets its members on the
    target (an object, or ``{}`` in place of anything else), removing those it sets to
    null, recursively; any other patch replaces the target whole. Neither argument is
    changed; the result shares no containers with the patch that a later patch could
    change in place."""
    if not isinstance(patch, dict):
        return _copy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --- projectors -----------------------------------------------------------------------------

Projector_ = Callable[[Any, StoredEvent], Any]
"""``projector(document, event) -> document``: pure, total over any event of its entity
type, and never changing ``document`` in place."""

INITIAL_DOCUMENT: dict[str, Any] = {}


def merge_projector(document: Any, event: StoredEvent) -> Any:
    """The default: a plaintext payload merged into the document (RFC 7386); an
    encrypted one leaves it unchanged."""
    env = event.envelope
    if env.payload_kind != PAYLOAD_KIND_PLAINTEXT:
        return document
    return merge_patch(document, env.payload)


@dataclass(frozen=True, slots=True)
class ProjectorRegistry:
    """Projectors by entity type, with a default for the rest."""

    projectors: Mapping[str, Projector_] = field(default_factory=dict)
    default: Projector_ = merge_projector

    def projector_for(self, entity_type: str) -> Projector_:
        return self.projectors.get(entity_type, self.default)

    def with_projector(self, entity_type: str, projector: Projector_) -> ProjectorRegistry:
        return ProjectorRegistry({**self.projectors, entity_type: projector}, self.default)


DEFAULT_REGISTRY = ProjectorRegistry()


# --- the fold -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Folded:
    """What folding one batch gives: the checkpoint to store and the documents it
    changed (one per entity, in order of first event)."""

    checkpoint: int
    documents: list[ProjectionDocument]
    events: int  # how many events were folded


def fold(
    stream: StreamKey,
    checkpoint: int,
    events: Sequence[StoredEvent],
    current: Mapping[tuple[str, str], ProjectionDocument],
    registry: ProjectorRegistry = DEFAULT_REGISTRY,
) -> Folded:
    """Fold ``events`` (in sequence order) onto ``current`` from ``checkpoint``: only the
    run ``checkpoint+1, checkpoint+2, …`` is folded, up to the first number missing."""
    documents: dict[tuple[str, str], ProjectionDocument] = {}
    position = checkpoint
    for event in events:
        if event.sequence_number <= position:
            continue  # already folded (a read that overlapped)
        if event.sequence_number != position + 1:
            break
        env = event.envelope
        key = (env.entity_type, env.entity_id)
        before = documents.get(key) or current.get(key)
        document = INITIAL_DOCUMENT if before is None else before.document
        version = 0 if before is None else before.version
        projector = registry.projector_for(env.entity_type)
        documents[key] = ProjectionDocument(
            tenant_id=stream.tenant_id,
            store_id=stream.store_id,
            entity_type=env.entity_type,
            entity_id=env.entity_id,
            version=version + 1,
            document=projector(document, event),
            updated_at=event.sequenced_at,
        )
        position = event.sequence_number
    return Folded(position, list(documents.values()), position - checkpoint)


# --- catching up ----------------------------------------------------------------------------


@dataclass(slots=True)
class Projector:
    """Folds the log into the projections, one bounded batch per stream at a time."""

    events: EventLog
    projections: Projections
    batch_size: int = 100
    registry: ProjectorRegistry = DEFAULT_REGISTRY
    _after: StreamKey | None = None
    _stalled: set[StreamKey] = field(default_factory=set)

    async def step(self) -> int:
        """One pass over a page of lagging streams, a batch each; returns the events
        folded (0: nothing to do, or nothing that could be done now)."""
        lagging = await self.projections.lagging_projections(self._after, DISCOVERY_PAGE)
        # A short page is the end of the walk: the next pass starts from the first stream.
        self._after = lagging[-1].stream if len(lagging) == DISCOVERY_PAGE else None
        folded = 0
        for lag in lagging:
            folded += await self.catch_up_once(lag)
        return folded

    async def catch_up_once(self, lag: ProjectionLag) -> int:
        stream = lag.stream
        end = min(lag.head, lag.checkpoint + self.batch_size)
        events = await self.events.read_range(stream, lag.checkpoint + 1, end)
        entities = list(
            dict.fromkeys((e.envelope.entity_type, e.envelope.entity_id) for e in events)
        )
        current = await self.projections.get_projections(stream, entities)
        # Off the event loop: a batch of large payloads is real work, and ingest shares it.
        result = await asyncio.to_thread(
            fold, stream, lag.checkpoint, events, current, self.registry
        )
        if result.events == 0:
            if stream not in self._stalled:
                self._stalled.add(stream)
                log.warning(
                    "projection stalled: the next event is not readable yet",
                    tenant_id=str(stream.tenant_id),
                    store_id=str(stream.store_id),
                    missing_sequence=lag.checkpoint + 1,
                    head=lag.head,
                )
            return 0
        self._stalled.discard(stream)
        try:
            await self.projections.apply_projection(
                stream, lag.checkpoint, result.checkpoint, result.documents, datetime.now(UTC)
            )
        except ConcurrentWriteError:
            return 0  # someone else folded this range; the next pass starts from theirs
        return result.events

    async def catch_up(self, stream: StreamKey, head: int | None = None) -> int:
        """Fold ``stream`` up to ``head`` (its counter when None); returns events folded.
        Stops early if the stream cannot advance (a hole in the log)."""
        target = await self.events.head(stream) if head is None else head
        total = 0
        while True:
            checkpoint = await self.projections.projection_checkpoint(stream)
            if checkpoint >= target:
                return total
            folded = await self.catch_up_once(ProjectionLag(stream, checkpoint, target))
            if folded == 0 and await self.projections.projection_checkpoint(stream) == checkpoint:
                return total
            total += folded


async def rebuild(
    events: EventLog,
    projections: Projections,
    streams: Sequence[StreamKey] | None = None,
    *,
    batch_size: int = 100,
    registry: ProjectorRegistry = DEFAULT_REGISTRY,
) -> dict[StreamKey, int]:
    """Clear and recompute the projections of ``streams`` (every stream when None, and
    then also those of streams the log no longer has) from the log through the same
    fold; returns each stream's checkpoint afterwards (its head, unless a hole in the
    log stopped the fold short of it). A worker running meanwhile only helps:
    whichever of them applies a batch, the checkpoint check keeps it applied once."""
    projector = Projector(events, projections, batch_size, registry)
    if streams is None:
        await projections.clear_projections(None)
        streams = [stream for stream, _ in await events.list_streams()]
    folded: dict[StreamKey, int] = {}
    for stream in streams:
        await projections.clear_projections(stream)
        await projector.catch_up(stream)
        folded[stream] = await projections.projection_checkpoint(stream)
    return folded
