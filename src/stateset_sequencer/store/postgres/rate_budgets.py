"""Rate budgets on PostgreSQL: the :class:`RateBudgets` port over the
``take_rate_budget`` function (migration 011), which every server process on the database
calls, so that they all count against one budget.

A take is on the path of every request, so it must never hold a request long: the
transaction gives up waiting for a lock after ``LOCK_TIMEOUT`` and the statement after
``STATEMENT_TIMEOUT`` (the caller bounds the whole wait, pool included, and fails closed).
"""

from __future__ import annotations

from ..ports import RateBudgets
from ..records import BudgetTake
from ..rows import check_budget_take
from .errors import mapped
from .pool import Pools, one

LOCK_TIMEOUT = "750ms"
STATEMENT_TIMEOUT = "900ms"
_TIMEOUTS_SQL = (
    "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
)
_TAKE_SQL = "SELECT admitted, reset_in_ms FROM take_rate_budget($1, $2, $3, $4)"
_COUNT_SQL = "SELECT count(*) FROM rate_limit_budgets"


class PostgresRateBudgets(Pools, RateBudgets):
    rate_budgets_shared = True

    async def take_rate_budget(
        self, key_hash: str, limit: int, window_seconds: int, capacity: int
    ) -> BudgetTake:
        check_budget_take(key_hash, limit, window_seconds, capacity)
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                # Local to this transaction: the pooled connection keeps its own settings.
                await conn.execute(_TIMEOUTS_SQL, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
                row = one(await conn.fetchrow(_TAKE_SQL, key_hash, limit, window_seconds, capacity))
        return BudgetTake(bool(row["admitted"]), max(0, int(row["reset_in_ms"] or 0)) / 1000)

    async def rate_budget_count(self) -> int:
        with mapped():
            value = await self._pool.fetchval(_COUNT_SQL)
        return int(value)
