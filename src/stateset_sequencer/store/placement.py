"""Where each table lives when the schema is spread over several machines (Citus), and the
key rules that make that possible. One list, read by the PostgreSQL adapter's
distribution step and by the schema guard every migration must pass.

Tenant tables are distributed by ``tenant_id`` and colocated with ``sequence_counters``, so
everything one stream touches sits on one shard and an append never leaves it. Tables with
no tenant, or keyed by something global, are reference tables (a copy on every node).
``ves_event_ids`` is the one table keyed by a global id that grows with the log: it is
distributed by that id, so that its primary key enforces event-id uniqueness across
tenants without a copy on every node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from .records import Distribution, TableDistribution


class Placement(Enum):
    TENANT = "distributed by tenant_id"
    OWN_KEY = "distributed by its own key"
    REFERENCE = "reference"


@dataclass(frozen=True, slots=True)
class TablePlacement:
    table: str
    placement: Placement
    # The distribution column; None for reference tables.
    column: str | None = None


TENANT_COLUMN = "tenant_id"
# The first tenant table distributed; the others are colocated with it.
COLOCATION_ANCHOR = "sequence_counters"

TABLES: tuple[TablePlacement, ...] = (
    TablePlacement("sequence_counters", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_events", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_sequencer_receipts", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_command_dedupe", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("entity_versions", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("agent_signing_keys", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_commitments", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("event_schemas", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_agent_cursors", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("agent_event_policies", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_projection_checkpoints", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_projection_documents", Placement.TENANT, TENANT_COLUMN),
    TablePlacement("ves_event_ids", Placement.OWN_KEY, "event_id"),
    # Rate budgets are written on every request, by a hash that names no tenant: as a
    # reference table each take would be replicated to every node (a two-phase commit per
    # request); by its own key each take is one row on one shard. Only creating a budget
    # counts the whole table, under the take's advisory lock on the coordinator.
    TablePlacement("rate_limit_budgets", Placement.OWN_KEY, "key_hash"),
    # API keys are found by their hash before any tenant is known; the audit log's tenant
    # is optional (operator actions have none).
    TablePlacement("api_keys", Placement.REFERENCE),
    TablePlacement("audit_log", Placement.REFERENCE),
    TablePlacement("sequencer_meta", Placement.REFERENCE),
    TablePlacement("schema_migrations", Placement.REFERENCE),
)

# Migrations before this one key events, receipts, commitments and schemas by id alone,
# which a distributed table cannot have; reverting below it needs undistributed tables.
DISTRIBUTABLE_FROM = 5


LOCAL = "local"
REFERENCE = "reference"


def distributed_by(column: str) -> str:
    return f"distributed by {column}"


def declared(entry: TablePlacement) -> str:
    """The placement ``entry`` declares, in the words a placement report uses."""
    if entry.column is None:
        return REFERENCE
    return distributed_by(entry.column)


def report(engine: str | None, present: Collection[str], placed: Mapping[str, str]) -> Distribution:
    """Each declared table that exists, where it is (``placed``; local when absent) and
    where it is declared to be, in declaration order."""
    return Distribution(
        engine,
        tuple(
            TableDistribution(entry.table, placed.get(entry.table, LOCAL), declared(entry))
            for entry in TABLES
            if entry.table in present
        ),
    )


def placement_of(table: str) -> TablePlacement | None:
    for entry in TABLES:
        if entry.table == table:
            return entry
    return None


def distribution_order() -> list[TablePlacement]:
    """Reference tables first (tenant tables may point at them), then the colocation
    anchor, then the other distributed tables in declaration order: a table is distributed
    after the tables its foreign keys reference, as the order of ``TABLES`` keeps."""
    reference = [t for t in TABLES if t.placement is Placement.REFERENCE]
    tenant = [t for t in TABLES if t.placement is Placement.TENANT]
    own = [t for t in TABLES if t.placement is Placement.OWN_KEY]
    return reference + tenant + own
