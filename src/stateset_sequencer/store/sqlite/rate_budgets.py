"""Rate budgets on SQLite: the :class:`RateBudgets` port, for a database one process
serves. The take is one ``BEGIN IMMEDIATE`` transaction on the writer thread, so takes
are serialised as PostgreSQL's row and advisory locks serialise them there; the time is
this process's clock, the only one that counts here."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from ..errors import IntegrityError
from ..ports import RateBudgets
from ..records import BudgetTake
from ..rows import check_budget_take, time_from_text, time_to_text
from .worker import Connections, immediate

_SELECT = (
    "SELECT used, limit_count, window_seconds, expires_at FROM rate_limit_budgets "
    "WHERE key_hash = ?"
)


def _seconds(until: datetime, now: datetime) -> float:
    return max(0.0, (until - now).total_seconds())


def take(
    conn: sqlite3.Connection,
    key_hash: str,
    limit: int,
    window_seconds: int,
    capacity: int,
    now: datetime,
) -> BudgetTake:
    ends = time_to_text(now + timedelta(seconds=window_seconds))
    with immediate(conn):
        row = conn.execute(_SELECT, (key_hash,)).fetchone()
        if row is not None:
            expires = time_from_text(row["expires_at"])
            if expires <= now:
                conn.execute(
                    "UPDATE rate_limit_budgets SET used = 1, limit_count = ?, "
                    "window_seconds = ?, expires_at = ? WHERE key_hash = ?",
                    (limit, window_seconds, ends, key_hash),
                )
                return BudgetTake(True, float(window_seconds))
            stored = row["limit_count"]
            if row["window_seconds"] != window_seconds or (stored is not None and stored != limit):
                raise IntegrityError(
                    "inconsistent rate limit across server processes: stored "
                    f"{stored} per {row['window_seconds']} s, asked {limit} per "
                    f"{window_seconds} s"
                )
            reset = _seconds(expires, now)
            if row["used"] >= limit:
                return BudgetTake(False, reset)
            conn.execute(
                "UPDATE rate_limit_budgets SET used = used + 1, limit_count = ? WHERE key_hash = ?",
                (limit, key_hash),
            )
            return BudgetTake(True, reset)
        if _count(conn) >= capacity:
            conn.execute(
                "DELETE FROM rate_limit_budgets WHERE expires_at <= ?", (time_to_text(now),)
            )
            if _count(conn) >= capacity:
                first = conn.execute("SELECT min(expires_at) FROM rate_limit_budgets").fetchone()
                return BudgetTake(False, _seconds(time_from_text(first[0]), now))
        conn.execute(
            "INSERT INTO rate_limit_budgets (key_hash, used, limit_count, window_seconds, "
            "expires_at) VALUES (?, 1, ?, ?, ?)",
            (key_hash, limit, window_seconds, ends),
        )
        return BudgetTake(True, float(window_seconds))


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM rate_limit_budgets").fetchone()[0])


def count(conn: sqlite3.Connection) -> int:
    return _count(conn)


class SqliteRateBudgets(Connections, RateBudgets):
    rate_budgets_shared = False

    async def take_rate_budget(
        self, key_hash: str, limit: int, window_seconds: int, capacity: int
    ) -> BudgetTake:
        check_budget_take(key_hash, limit, window_seconds, capacity)
        return await self._write(take, key_hash, limit, window_seconds, capacity, datetime.now(UTC))

    async def rate_budget_count(self) -> int:
        return await self._read(count)
