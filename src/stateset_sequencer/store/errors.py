"""The storage faults every port may raise. Names follow PEP 249's spirit, as the
``eventsourcing`` recorders' do, so a caller can tell "retry", "your data breaks a rule"
and "the database is unwell" apart without knowing which backend answered."""

from __future__ import annotations


class StoreError(Exception):
    """Base of storage faults."""


class IntegrityError(StoreError):
    """A uniqueness or consistency rule would be broken (e.g. a duplicate agent key)."""


class AheadOfHeadError(StoreError):
    """A position past the stream's head was refused (an agent acknowledging a sequence
    not sequenced yet); nothing was written. ``head`` is the head it was checked against."""

    def __init__(self, sequence: int, head: int) -> None:
        super().__init__(f"sequence {sequence} is past the stream head {head}")
        self.sequence = sequence
        self.head = head


class ConcurrentWriteError(StoreError):
    """Another writer inserted a conflicting row first; the transaction can be retried."""


class MigrationError(StoreError):
    """A migration is missing, was edited after it was applied, or failed."""


class OperationalError(StoreError):
    """The database is unreachable or refused the operation."""


class SnapshotError(StoreError):
    """A snapshot (a whole-database copy) cannot be taken, read or restored: a missing
    tool, an unreadable copy, a scratch database the server refused."""
