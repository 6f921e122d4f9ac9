"""Counter states, gaps, repairs, summaries, and whole-database snapshots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from ..records import (
    AuditEntry,
    CounterState,
    SequenceGap,
    SnapshotContents,
    StreamKey,
    StreamSummary,
    TakenSnapshot,
)

Progress = Callable[[int, int], None]
"""``progress(done, total)`` of a long copy, in units the adapter chooses (SQLite: pages)."""


class Maintenance(ABC):
    """What recovery tools inspect and repair: counters beside the events, gaps, and the
    per-stream digests and row counts a backup manifest records."""

    @abstractmethod
    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        """Counter, highest stored sequence and event count of every stream that has a
        counter row or events (or of one stream), ordered by tenant then store."""

    @abstractmethod
    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        """Missing sequence numbers below each stream's highest stored event (from 1), as
        ranges ordered by stream then number. Numbers above the highest event are not
        gaps here; compare :meth:`counter_states` for those."""

    @abstractmethod
    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        """Set the stream's counter to its highest stored sequence and append ``audit``,
        in one transaction holding the counter lock. Refused with
        :class:`ConcurrentWriteError` (nothing written) when the counter or the events
        no longer match ``expected``. Returns the state after the change."""

    @abstractmethod
    async def stream_summaries(self) -> list[StreamSummary]:
        """:class:`StreamSummary` of every stream, ordered by tenant then store, counters
        and commitments read from one consistent state."""

    @abstractmethod
    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        """Row count of each named table that exists (absent tables are left out), from
        one consistent state. Names must be plain lowercase identifiers; anything else is
        ``ValueError``."""

    @abstractmethod
    async def is_empty(self) -> bool:
        """True when no events, API keys or agent keys are stored (or no schema yet)."""


class Snapshots(ABC):
    """Whole-database copies, the mechanics under ``sequencer-cli backup`` and ``restore``.

    A snapshot is one file in the backend's own format (``snapshot_format``: SQLite's
    online backup copy, or ``pg_dump -Fc``). What each operation reports is read from
    exactly the state it copied or restored, so a manifest written at backup time can be
    compared with a restore exactly, even while the source kept taking writes. These
    operations open connections of their own; they work whether or not the database has
    been migrated, and on a restore target that does not exist yet."""

    snapshot_format: str
    """The kind of copy this backend writes and reads: "sqlite" or "postgres" (backup
    manifests record it under their ``dialect`` key)."""

    snapshot_file: str
    """The copy's file name inside a backup directory."""

    @abstractmethod
    async def take_snapshot(
        self, file: Path, tables: Sequence[str], progress: Progress | None = None
    ) -> TakenSnapshot:
        """Copy the whole database into ``file`` (which must not exist), consistently
        while writers go on, and describe the copy: stream summaries and the row counts
        of ``tables``. :class:`SnapshotError` when the database or the tool is missing."""

    @abstractmethod
    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        """Replace this database's whole contents with the snapshot in ``file`` and
        describe the result. Whether the database may be overwritten is the caller's
        decision (:meth:`holds_data`); the service must be stopped."""

    @abstractmethod
    async def test_restore(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        """Restore ``file`` into a scratch database (SQLite: a temporary file; PostgreSQL:
        a temporary database on this store's server, dropped afterwards), describe it, and
        leave this database untouched. :class:`SnapshotError` when the copy is unreadable."""

    @abstractmethod
    async def holds_data(self) -> bool:
        """The negation of :meth:`Maintenance.is_empty`, for a restore target: False also
        when the database does not exist yet."""
