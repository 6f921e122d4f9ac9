"""The one key-validity rule (``sequencer.keys.judge_key``): each boundary pinned, and the
rule as the reference states it (REFERENCE_MAP §4.3 step 7) for the present."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.sequencer.keys import (
    KeyCache,
    KeyVerdict,
    judge_key,
    key_problem,
)
from stateset_sequencer.store.records import AgentKey

AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
KEY = AgentKey(uuid.UUID(int=1), uuid.UUID(int=2), 1, bytes(32))


def revoked(at: datetime | None) -> AgentKey:
    return replace(KEY, status="revoked", revoked_at=at)


def test_no_key_is_not_found() -> None:
    assert judge_key(None, AT) is KeyVerdict.NOT_FOUND
    assert key_problem(None, AT) == "Agent key not found"


def test_an_unbounded_active_key_is_valid() -> None:
    verdict = judge_key(KEY, AT)
    assert verdict is KeyVerdict.VALID and verdict.ok
    assert verdict.problem is None and verdict.reason is None


@pytest.mark.parametrize(
    ("valid_from", "expected"),
    [(AT - TICK, KeyVerdict.VALID), (AT, KeyVerdict.VALID), (AT + TICK, KeyVerdict.NOT_YET_VALID)],
)
def test_valid_from_is_inclusive(valid_from: datetime, expected: KeyVerdict) -> None:
    assert judge_key(replace(KEY, valid_from=valid_from), AT) is expected


@pytest.mark.parametrize(
    ("valid_to", "expected"),
    # Inclusive, as ingest and the reference have it ("valid_to < now ⇒ expired"); doctor
    # used to count a key as inactive at exactly valid_to.
    [(AT + TICK, KeyVerdict.VALID), (AT, KeyVerdict.VALID), (AT - TICK, KeyVerdict.EXPIRED)],
)
def test_valid_to_is_inclusive(valid_to: datetime, expected: KeyVerdict) -> None:
    assert judge_key(replace(KEY, valid_to=valid_to), AT) is expected


@pytest.mark.parametrize(
    ("revoked_at", "expected"),
    [(AT - TICK, KeyVerdict.REVOKED), (AT, KeyVerdict.REVOKED), (AT + TICK, KeyVerdict.VALID)],
)
def test_revoked_at_dates_the_revocation_in_the_past(
    revoked_at: datetime, expected: KeyVerdict
) -> None:
    """Judging an event sequenced at AT with the key read later (verify-events): a
    revocation at or before AT fails it, a later one does not."""
    assert judge_key(revoked(revoked_at), AT, seen_at=AT + timedelta(days=1)) is expected


def test_revoked_status_counts_at_once_when_judging_the_present() -> None:
    """Ingest and doctor judge at the instant they read the key: a revoked status counts
    even when revoked_at (another node's clock) is a little ahead, as the reference does."""
    key = revoked(AT + timedelta(seconds=2))
    assert judge_key(key, AT) is KeyVerdict.REVOKED
    assert key_problem(key, AT) == "Agent key has been revoked"
    # ... and for an event sequenced after the key was seen revoked.
    assert judge_key(key, AT + TICK, seen_at=AT) is KeyVerdict.REVOKED


def test_revoked_status_without_a_time_counts_at_every_instant() -> None:
    key = revoked(None)
    assert judge_key(key, AT) is KeyVerdict.REVOKED
    assert judge_key(key, AT - timedelta(days=365), seen_at=AT) is KeyVerdict.REVOKED


def test_a_revoked_at_counts_even_with_an_active_status() -> None:
    assert judge_key(replace(KEY, revoked_at=AT), AT) is KeyVerdict.REVOKED


def test_a_stored_expired_status_is_not_enforced() -> None:
    # As in the reference: the dates decide, not the status text.
    assert judge_key(replace(KEY, status="expired"), AT) is KeyVerdict.VALID


def test_order_of_verdicts_is_revoked_expired_not_yet_valid() -> None:
    everything = replace(revoked(AT - TICK), valid_to=AT - TICK, valid_from=AT + TICK)
    assert judge_key(everything, AT) is KeyVerdict.REVOKED
    assert judge_key(replace(everything, status="active", revoked_at=None), AT) is (
        KeyVerdict.EXPIRED
    )


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [
        (KeyVerdict.NOT_FOUND, "agent_key_invalid: Agent key not found"),
        (KeyVerdict.REVOKED, "agent_key_invalid: Agent key has been revoked"),
        (KeyVerdict.EXPIRED, "agent_key_invalid: Agent key has expired"),
        (KeyVerdict.NOT_YET_VALID, "agent_key_invalid: Agent key is not yet valid"),
    ],
)
def test_reasons_are_ingests(verdict: KeyVerdict, reason: str) -> None:
    assert verdict.reason == reason and not verdict.ok


def _instant(offset: int) -> datetime:
    return AT + timedelta(seconds=offset)


@given(
    st.sampled_from(["active", "revoked", "expired"]),
    st.none() | st.integers(-3, 3),
    st.none() | st.integers(-3, 3),
    st.none() | st.integers(-3, 3),
)
def test_judging_the_present_is_the_references_rule(
    status: str, valid_from: int | None, valid_to: int | None, revoked_at: int | None
) -> None:
    key = replace(
        KEY,
        status=status,
        valid_from=None if valid_from is None else _instant(valid_from),
        valid_to=None if valid_to is None else _instant(valid_to),
        revoked_at=None if revoked_at is None else _instant(revoked_at),
    )
    # REFERENCE_MAP §4.3 step 7, word for word, at now = AT.
    if status == "revoked" or (key.revoked_at is not None and key.revoked_at <= AT):
        expected = KeyVerdict.REVOKED
    elif key.valid_to is not None and key.valid_to < AT:
        expected = KeyVerdict.EXPIRED
    elif key.valid_from is not None and key.valid_from > AT:
        expected = KeyVerdict.NOT_YET_VALID
    else:
        expected = KeyVerdict.VALID
    assert judge_key(key, AT) is expected


class _Registry:
    """A KeyRegistry's one read, counting calls."""

    def __init__(self, key: AgentKey | None) -> None:
        self.key, self.calls = key, 0

    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None:
        self.calls += 1
        return self.key


async def test_key_cache_reads_through_the_registry_within_its_ttl() -> None:
    registry = _Registry(KEY)
    clock = [0.0]
    cache = KeyCache(registry, ttl_seconds=10, monotonic=lambda: clock[0])  # type: ignore[arg-type]
    ident = (KEY.tenant_id, KEY.agent_id, KEY.key_id)
    assert await cache.get(*ident) == KEY and await cache.get(*ident) == KEY
    assert registry.calls == 1
    clock[0] = 11.0
    await cache.get(*ident)
    assert registry.calls == 2
    cache.invalidate(*ident)
    await cache.get(*ident)
    assert registry.calls == 3
