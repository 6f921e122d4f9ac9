"""The limiters behind ``RateLimits``, without a database: budget identities and their
hashes (the preimages docs/RATE_LIMITS.md states), and the shared limiter failing closed
on a store fault and on a wait past its bound."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest

from stateset_sequencer.sequencer.auth import (
    NIL,
    AuthContext,
    AuthError,
    AuthReason,
    FixedWindowLimiter,
    RateLimiterUnavailable,
    RateLimits,
    SharedWindowLimiter,
    budget_key,
    credential_budget_identity,
    tenant_budget_identity,
)
from stateset_sequencer.store.errors import OperationalError
from stateset_sequencer.store.ports import RateBudgets
from stateset_sequencer.store.records import BudgetTake

TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000a1")


class FakeBudgets(RateBudgets):
    rate_budgets_shared = True

    def __init__(self, answer: BudgetTake | BaseException | None) -> None:
        self.answer = answer  # None: never answers
        self.calls: list[tuple[str, int, int, int]] = []

    async def take_rate_budget(
        self, key_hash: str, limit: int, window_seconds: int, capacity: int
    ) -> BudgetTake:
        self.calls.append((key_hash, limit, window_seconds, capacity))
        if self.answer is None:
            await asyncio.Event().wait()
        if isinstance(self.answer, BaseException):
            raise self.answer
        assert isinstance(self.answer, BudgetTake)
        return self.answer

    async def rate_budget_count(self) -> int:
        return len(self.calls)


def test_budget_identities_and_their_hashes() -> None:
    tenant = AuthContext(TENANT, can_read=True)
    assert tenant_budget_identity(tenant) == f"tenant:{TENANT}"
    assert tenant_budget_identity(AuthContext(NIL, can_admin=True)) == "bootstrap"
    keyed = AuthContext(TENANT, limiter_key="ab" * 32)
    assert credential_budget_identity(keyed) == "credential:" + "ab" * 32
    expected = hashlib.sha256(b"tenant:00000000-0000-0000-0000-0000000000a1").hexdigest()
    assert budget_key(f"tenant:{TENANT}") == expected


async def test_the_shared_limiter_asks_for_whole_second_windows() -> None:
    budgets = FakeBudgets(BudgetTake(False, 12.2))
    limiter = SharedWindowLimiter(budgets, window_seconds=0.5, max_entries=9)
    assert await limiter.take("tenant:x", 4) == 13
    assert budgets.calls == [(budget_key("tenant:x"), 4, 1, 9)]
    budgets.answer = BudgetTake(True, 3.0)
    assert await limiter.take("tenant:x", 4) is None


@pytest.mark.parametrize(
    "answer", [OperationalError("gone"), None], ids=["store fault", "no answer"]
)
async def test_the_shared_limiter_fails_closed(answer: BaseException | None) -> None:
    limiter = SharedWindowLimiter(FakeBudgets(answer), wait_seconds=0.05)
    limits = RateLimits(per_tenant_per_minute=5, tenant=limiter, credential=limiter)
    with pytest.raises(RateLimiterUnavailable):
        await limits.check(AuthContext(TENANT, can_read=True))


async def test_the_memory_limiter_behind_the_same_interface() -> None:
    now = [0.0]
    limits = RateLimits(
        per_tenant_per_minute=2, tenant=FixedWindowLimiter(60.0, 10, lambda: now[0])
    )
    ctx = AuthContext(TENANT, can_read=True)
    await limits.check(ctx)
    await limits.check(ctx)
    with pytest.raises(AuthError) as refused:
        await limits.check(ctx)
    assert refused.value.reason is AuthReason.RATE_LIMITED
    now[0] = 60.0
    await limits.check(ctx)
