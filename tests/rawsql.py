"""Raw SQL behind the store's back, for the drills that damage or cut a database the way
a bad restore would (the store itself never offers such writes)."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import asyncpg


async def behind_the_store(url: str, dialect: str, statement: str, *args: Any) -> list[Any]:
    """Run ``statement`` (``$n`` placeholders) on the database at ``url``; UUIDs become
    text on SQLite, which stores them so."""
    if dialect == "sqlite":
        text = statement
        for n in range(len(args), 0, -1):
            text = text.replace(f"${n}", f"?{n}")
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute(
                text, [str(a) if isinstance(a, uuid.UUID) else a for a in args]
            ).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()
