"""The SQLite adapter: every port on one file (WAL, one writer thread, one reader thread).

One module per port (``event_log``, ``keys``, ``access``, ``schemas``, ``commitments``,
``maintenance``, ``snapshots``, ``migrate``), ``convert`` for column values, ``store``
assembling them; ``worker`` is the only infrastructure module (the threads and their
connections). The PostgreSQL adapter has the same modules; neither imports the other.
"""

from .append import SqliteStreamTransaction
from .snapshots import SqliteSnapshots
from .store import SqliteStore

__all__ = ["SqliteSnapshots", "SqliteStore", "SqliteStreamTransaction"]
