"""Rate-limit budgets shared by every process on the database."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..records import (
    BudgetTake,
)


class RateBudgets(ABC):
    """Fixed-window rate budgets kept in the database (``rate_limit_budgets``), so that
    every server process on it counts against the same budget. A budget is named by the
    SHA-256 hex of its identity (``sequencer.auth``); the store never sees the identity."""

    rate_budgets_shared: bool
    """True when a budget taken here is seen by every server process that can serve this
    database (PostgreSQL); False where only one process serves it (SQLite)."""

    @abstractmethod
    async def take_rate_budget(
        self, key_hash: str, limit: int, window_seconds: int, capacity: int
    ) -> BudgetTake:
        """Take one unit of the budget ``key_hash`` (64 lowercase hex digits), atomically
        with every concurrent take. A budget whose window has ended starts a new one of
        ``window_seconds`` with this unit. A budget already at ``limit`` is refused. A new
        budget is created only while fewer than ``capacity`` exist once ended windows are
        purged; otherwise refused (live budgets are never evicted). A live window stored
        with another ``limit`` or length is :class:`IntegrityError` (the processes are
        configured differently), nothing changed. ``ValueError`` on a malformed key or a
        non-positive number. Takes waiting on a lock give up within a second or so with
        :class:`OperationalError`."""

    @abstractmethod
    async def rate_budget_count(self) -> int:
        """How many budgets are stored, live or ended (for tests and metrics)."""
