"""Translation of asyncpg's exceptions into the contract's, so none escapes the adapter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ..errors import ConcurrentWriteError, IntegrityError, OperationalError, StoreError

# Constraints whose violation inside an append means another stream's writer won the race
# for the same event id: the caller may retry and will then see the event as existing.
_RACE_CONSTRAINTS = frozenset(
    {"ves_event_ids_pkey", "ves_events_pkey", "ves_sequencer_receipts_pkey"}
)
# Citus reports the shard's copy of a constraint ("ves_events_pkey_102042"), in the
# constraint field or, from some code paths, only in the message. No constraint of ours
# ends in digits (tests/unit/test_schema_guard.py checks), so the suffix is always a shard's.
_CONSTRAINT_IN_MESSAGE = re.compile(r'constraint "([^"]+)"')
_SHARD_SUFFIX = re.compile(r"_\d+$")

# Client-side faults: the server is unreachable, the connection broke, or a timeout hit.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError and ConnectionError
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def describe(exc: BaseException) -> str:
    """One line naming the fault, with the constraint when the server reported one."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, asyncpg.PostgresError):
        # str() of a server error already appends its DETAIL; start from the bare message.
        text = exc.message or text
        constraint = constraint_of(exc)
        detail = exc.detail
        if constraint:
            text = f"{text} (constraint {constraint})"
        if detail:
            text = f"{text}: {detail}"
    return text


def constraint_of(exc: asyncpg.PostgresError) -> str | None:
    """The violated constraint's name as the schema declares it, whether the server
    reported it in its own field (PostgreSQL) or only in the message (a Citus shard)."""
    name = exc.constraint_name
    if not name:
        match = _CONSTRAINT_IN_MESSAGE.search(exc.message or str(exc))
        if match is None:
            return None
        name = match.group(1)
    return _SHARD_SUFFIX.sub("", name)


def translate(exc: BaseException, *, appending: bool = False) -> StoreError | None:
    """The contract exception for ``exc``; None when it is not a database fault."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.UniqueViolationError):
        if appending and constraint_of(exc) in _RACE_CONSTRAINTS:
            return ConcurrentWriteError(describe(exc))
        return IntegrityError(describe(exc))
    # Class 23 (integrity) and class 22 (data: a value the column cannot hold) both mean
    # the row breaks a rule of the schema, not that the database is unwell.
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
        return IntegrityError(describe(exc))
    if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
        return ConcurrentWriteError(describe(exc))
    if isinstance(exc, asyncpg.PostgresError):
        return OperationalError(describe(exc))
    if isinstance(exc, _CONNECTION_ERRORS):
        return OperationalError(f"database unavailable: {describe(exc)}")
    return None


@contextmanager
def mapped(*, appending: bool = False) -> Iterator[None]:
    """Re-raise asyncpg and socket faults as contract exceptions."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        translated = translate(exc, appending=appending)
        if translated is None:
            raise
        raise translated from exc
