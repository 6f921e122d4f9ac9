"""The PostgreSQL adapter: every port on asyncpg connection pools.

One module per port (``event_log`` with ``append`` for its stream transaction, ``keys``,
``access``, ``schemas``, ``commitments``, ``maintenance``, ``snapshots``, ``migrate``),
``convert`` for column values, ``store`` assembling them; ``pool`` and ``errors`` are the
only infrastructure modules. The SQLite adapter has the same modules; neither imports the
other.
"""

from __future__ import annotations

from .snapshots import PostgresSnapshots
from .store import PostgresStore

__all__ = ["PostgresSnapshots", "PostgresStore"]
