"""The storage ports: small role contracts, one per thing the sequencer keeps.

In the style of the ``eventsourcing`` library's recorders, each port is an abstract class
that says what it promises and nothing about how; a consumer asks only for the port it
uses (the key cache needs a :class:`KeyRegistry`, not the whole store). Two adapters,
``store.sqlite`` (one writer thread) and ``store.postgres`` (asyncpg), implement every
port, laid out alike (one module per port), and one contract test suite per port runs
against both: a behaviour that exists on one backend only is a bug.

:class:`Store` is the composite the factory opens. A new port (an agent outbox, the
commitment engine's queue) is one more ABC in a module of this package (grouped by role),
one more module of the same name in each adapter, one more base of :class:`Store`, and one
more contract suite. Consumers import ports from ``store.ports`` itself.

The append path is split so that the order of checks stays visible in
``sequencer/ingest.py``: the event log opens an :class:`AppendTransaction` that has already
locked the counter row of each stream it covers (one, or several merged into one commit);
each stream's :class:`StreamTransaction` offers the few bulk reads the checks need, and
writes the accepted events, their receipts, command reservations, entity versions and the new head
in one commit. Nothing slow happens inside it; signatures are checked before it opens.

Every method is safe to call concurrently. Faults are the classes of ``store.errors``.
"""

from __future__ import annotations

from .access import AccessStore, AuditChain
from .agents import AgentCursors, AgentPolicies
from .changes import ChangeFeed, ChangeListener, HeadFeed
from .commitments import Commitments
from .database import Database
from .events import AppendTransaction, EventLog, StreamTransaction
from .keys import KeyRegistry
from .maintenance import Maintenance, Progress, Snapshots
from .projections import LeaderLock, Leadership, Projections
from .rate_budgets import RateBudgets
from .schemas import SchemaStore

__all__ = [
    "AccessStore",
    "AgentCursors",
    "AgentPolicies",
    "AppendTransaction",
    "AuditChain",
    "ChangeFeed",
    "ChangeListener",
    "Commitments",
    "Database",
    "EventLog",
    "HeadFeed",
    "KeyRegistry",
    "LeaderLock",
    "Leadership",
    "Maintenance",
    "Progress",
    "Projections",
    "RateBudgets",
    "SchemaStore",
    "Snapshots",
    "Store",
    "StreamTransaction",
]


class Store(
    EventLog,
    KeyRegistry,
    AccessStore,
    AuditChain,
    SchemaStore,
    AgentCursors,
    AgentPolicies,
    Commitments,
    Projections,
    LeaderLock,
    Maintenance,
    RateBudgets,
    Snapshots,
    ChangeFeed,
    HeadFeed,
    Database,
):
    """Every port at once: what ``store.factory.open_store`` returns. Pass a consumer the
    narrowest port it needs rather than this."""
