"""The RateBudgets contract, on both backends: a budget admits exactly its limit per
window however many takes race for it, a window that has ended starts afresh, the table
never grows past its capacity and never evicts a live budget, and a take with another
limit or window than the live one stored is refused with nothing changed.

Windows are short where a test must see one end, and the test waits for that condition
(polling), never asserting on how long anything took."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import RateBudgets
from stateset_sequencer.store.records import BudgetTake

HOUR = 3600
CAPACITY = 10_000
POLL_SECONDS = 0.05
POLL_LIMIT = 400  # polls before giving up on a one-second window ending


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def takes(budgets: RateBudgets, name: str, n: int, limit: int) -> list[bool]:
    return [
        (await budgets.take_rate_budget(key(name), limit, HOUR, CAPACITY)).admitted
        for _ in range(n)
    ]


async def until_admitted(
    budgets: RateBudgets, name: str, limit: int, window: int, capacity: int = CAPACITY
) -> BudgetTake:
    for _ in range(POLL_LIMIT):
        taken = await budgets.take_rate_budget(key(name), limit, window, capacity)
        if taken.admitted:
            return taken
        await asyncio.sleep(POLL_SECONDS)
    pytest.fail(f"budget {name} never admitted again")


async def test_takes_until_exhausted(rate_budgets: RateBudgets) -> None:
    assert await takes(rate_budgets, "a", 5, limit=3) == [True, True, True, False, False]
    refused = await rate_budgets.take_rate_budget(key("a"), 3, HOUR, CAPACITY)
    assert not refused.admitted
    assert 0 < refused.reset_in_seconds <= HOUR
    # Budgets are independent.
    assert await takes(rate_budgets, "b", 1, limit=3) == [True]
    assert await rate_budgets.rate_budget_count() == 2


async def test_a_window_that_ended_starts_afresh(rate_budgets: RateBudgets) -> None:
    first = await rate_budgets.take_rate_budget(key("w"), 2, 1, CAPACITY)
    second = await rate_budgets.take_rate_budget(key("w"), 2, 1, CAPACITY)
    assert first.admitted and second.admitted
    # Exhausted until the one-second window ends; then the whole limit again.
    await until_admitted(rate_budgets, "w", 2, 1)
    again = await rate_budgets.take_rate_budget(key("w"), 2, 1, CAPACITY)
    # The reset counted the admitting take: one more fits in a limit of 2, unless that
    # window too has ended meanwhile (then it starts afresh and admits as well).
    assert again.admitted


async def test_an_ended_window_may_change_its_limit(rate_budgets: RateBudgets) -> None:
    assert (await rate_budgets.take_rate_budget(key("c"), 1, 1, CAPACITY)).admitted
    # Refused while the old window lives; taken up once it has ended (a rolling change
    # of configuration settles within one window).
    for _ in range(POLL_LIMIT):
        try:
            taken = await rate_budgets.take_rate_budget(key("c"), 5, HOUR, CAPACITY)
        except IntegrityError:
            await asyncio.sleep(POLL_SECONDS)
            continue
        break
    else:
        pytest.fail("the old window never ended")
    assert taken.admitted
    assert await takes(rate_budgets, "c", 5, limit=5) == [True, True, True, True, False]


async def test_an_inconsistent_limit_or_window_is_refused_unchanged(
    rate_budgets: RateBudgets,
) -> None:
    assert await takes(rate_budgets, "i", 2, limit=3) == [True, True]
    with pytest.raises(IntegrityError):
        await rate_budgets.take_rate_budget(key("i"), 4, HOUR, CAPACITY)
    with pytest.raises(IntegrityError):
        await rate_budgets.take_rate_budget(key("i"), 3, HOUR + 1, CAPACITY)
    # Nothing was counted by the refused takes: one unit is left, as before them.
    assert await takes(rate_budgets, "i", 2, limit=3) == [True, False]


async def test_capacity_refuses_new_budgets_and_never_evicts_live_ones(
    rate_budgets: RateBudgets,
) -> None:
    assert (await rate_budgets.take_rate_budget(key("x"), 2, HOUR, 2)).admitted
    assert (await rate_budgets.take_rate_budget(key("y"), 2, HOUR, 2)).admitted
    full = await rate_budgets.take_rate_budget(key("z"), 2, HOUR, 2)
    assert not full.admitted and 0 < full.reset_in_seconds <= HOUR
    assert await rate_budgets.rate_budget_count() == 2
    # x and y kept what they had used: one more each, then refused.
    for name in ("x", "y"):
        assert (await rate_budgets.take_rate_budget(key(name), 2, HOUR, 2)).admitted
        assert not (await rate_budgets.take_rate_budget(key(name), 2, HOUR, 2)).admitted


async def test_a_full_table_purges_ended_windows(rate_budgets: RateBudgets) -> None:
    for name in ("p", "q"):
        assert (await rate_budgets.take_rate_budget(key(name), 1, 1, 2)).admitted
    # Once their windows have ended, a new budget fits, and the table stays within bounds.
    await until_admitted(rate_budgets, "r", 1, HOUR, capacity=2)
    assert await rate_budgets.rate_budget_count() <= 2


async def test_concurrent_takes_admit_exactly_the_limit(rate_budgets: RateBudgets) -> None:
    results = await asyncio.gather(
        *(rate_budgets.take_rate_budget(key("race"), 7, HOUR, CAPACITY) for _ in range(50))
    )
    assert sum(r.admitted for r in results) == 7
    assert await rate_budgets.rate_budget_count() == 1


async def test_concurrent_new_budgets_respect_the_capacity(rate_budgets: RateBudgets) -> None:
    results = await asyncio.gather(
        *(rate_budgets.take_rate_budget(key(f"n{i}"), 5, HOUR, 5) for i in range(20))
    )
    assert sum(r.admitted for r in results) == 5
    assert await rate_budgets.rate_budget_count() == 5


@pytest.mark.parametrize(
    ("key_hash", "limit", "window", "capacity"),
    [
        ("ab" * 31, 1, 1, 1),  # 62 digits
        ("AB" * 32, 1, 1, 1),  # upper case
        ("zz" * 32, 1, 1, 1),
        (key("v"), 0, 1, 1),
        (key("v"), 1, 0, 1),
        (key("v"), 1, 1, 0),
        (key("v"), -5, 1, 1),
    ],
)
async def test_malformed_takes_are_refused(
    rate_budgets: RateBudgets, key_hash: str, limit: int, window: int, capacity: int
) -> None:
    with pytest.raises(ValueError, match="rate budget"):
        await rate_budgets.take_rate_budget(key_hash, limit, window, capacity)
    assert await rate_budgets.rate_budget_count() == 0
