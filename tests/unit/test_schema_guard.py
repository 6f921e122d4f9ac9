"""The schema guard: the tenant-first rules that let the schema distribute by ``tenant_id``
on Citus, checked over every migration and every SQL text the adapters hold.

On Citus each tenant table is distributed by ``tenant_id`` and colocated with the others
(``store/placement.py`` declares where every table lives), so that everything one stream
touches sits on one shard. That holds only while the schema and the queries keep to what
Citus can run on one shard:

1. **Keys.** A distributed table can enforce a primary key, unique constraint or unique
   index only if it contains the distribution column (each shard checks its own rows), and
   a foreign key between distributed tables only if it maps the distribution column to the
   distribution column (both rows then sit on the same shard). So, read from the real
   catalog after each migration on both backends: every table is declared in
   ``placement.TABLES`` and has a primary key; a tenant table's keys all contain
   ``tenant_id`` and its foreign keys map ``tenant_id`` to ``tenant_id`` of another tenant
   table (or point at a reference table, which has a copy on every node); the one table
   distributed by its own key (``ves_event_ids``) has keys on that column and no foreign
   keys; a reference table points at no distributed table. No constraint or index name ends
   in ``_<digits>``: a Citus shard reports its copy of a constraint as
   ``ves_events_pkey_102042``, and the PostgreSQL adapter strips that suffix to find the
   constraint's own name. Migrations before ``placement.DISTRIBUTABLE_FROM`` predate the
   rule: there the only tables breaking the key rules must be the four that migration
   rekeys.
2. **Upserts.** Citus allows only IMMUTABLE functions in the ``DO UPDATE SET`` clause of an
   upsert on a distributed table (the shard evaluates it, and a volatile value would differ
   between replicas), so no function there but a short list of immutable ones, and no
   ``CURRENT_TIMESTAMP`` and kin; the new row's values come from ``EXCLUDED``.
3. **Joins.** A join between two tenant tables stays on one shard only if it equates their
   ``tenant_id``; a lateral subquery reading a tenant table must name its tenant in its
   WHERE. ``ves_event_ids`` is distributed by ``event_id``, so a statement reading it can
   never also read a tenant table (Citus cannot join tables distributed by different
   columns): it is read on its own, to learn an id's tenant, and the tenant's rows next.
4. **INSERT … SELECT.** Citus runs an INSERT whose SELECT reads a colocated table on the
   shards with explicit casts to the column types, which cut an over-long text to fit a
   VARCHAR(n) instead of refusing it; the adapters' inserts take their rows from VALUES or
   unnest(), never from a tenant table.

The SQL texts are collected twice over, from each adapter module's constants as imported
(SQL assembled at import time) and from every string literal in its source (SQL written
inline in functions), plus every migration; the collectors are checked to find plenty, so
the guard cannot pass by checking nothing. Each rule's checker is also fed a deliberately
bad input, to show it reports what it is meant to.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from stateset_sequencer.store import placement
from stateset_sequencer.store.migrations import Migration, load
from stateset_sequencer.store.placement import Placement
from stateset_sequencer.store.sqlite.migrate import statements
from stateset_sequencer.testing import pg

DIALECTS = ("postgres", "sqlite")
TENANT_TABLES = frozenset(t.table for t in placement.TABLES if t.placement is Placement.TENANT)
OWN_KEY_TABLES = frozenset(t.table for t in placement.TABLES if t.placement is Placement.OWN_KEY)
# Created by the migration runners' bookkeeping, not by a migration.
BOOKKEEPING_TABLES = frozenset({"schema_migrations"})
# Keyed by their id alone until migration DISTRIBUTABLE_FROM rekeys them tenant-first.
LEGACY_TABLES = frozenset(
    {"ves_events", "ves_sequencer_receipts", "ves_commitments", "event_schemas"}
)
# The suffix the PostgreSQL adapter strips from a constraint name a Citus shard reports.
SHARD_SUFFIX = re.compile(r"_\d+$")


# --- the catalog, as either backend describes it ----------------------------------------------


@dataclass(frozen=True, slots=True)
class UniqueKey:
    kind: str  # "primary key", "unique constraint", "unique index", "exclusion constraint"
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    referenced: str
    referenced_columns: tuple[str, ...]


@dataclass(slots=True)
class TableShape:
    columns: frozenset[str]
    primary_key: UniqueKey | None = None
    unique: list[UniqueKey] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NamedObject:
    kind: str  # "constraint" or "index"
    name: str
    table: str


@dataclass(slots=True)
class Catalog:
    tables: dict[str, TableShape] = field(default_factory=dict)
    names: list[NamedObject] = field(default_factory=list)


def _cols(columns: Sequence[str]) -> str:
    return f"({', '.join(columns)})"


_PG_TABLES_SQL = """
SELECT c.relname::text AS name,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
"""
_PG_CONSTRAINTS_SQL = """
SELECT con.conname::text AS name, con.contype::text AS kind, rel.relname::text AS table_name,
       ARRAY(SELECT a.attname::text
             FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.n) AS columns,
       ref.relname::text AS referenced,
       ARRAY(SELECT a.attname::text
             FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.n) AS referenced_columns
FROM pg_constraint con
JOIN pg_class rel ON rel.oid = con.conrelid
LEFT JOIN pg_class ref ON ref.oid = con.confrelid
WHERE rel.relnamespace = current_schema()::regnamespace
"""
_PG_INDEXES_SQL = """
SELECT i.relname::text AS name, t.relname::text AS table_name, ix.indisunique AS is_unique,
       ix.indnkeyatts AS key_count,
       ARRAY(SELECT COALESCE(a.attname::text, '(expression)')
             FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
             LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
             ORDER BY k.n) AS columns,
       EXISTS (SELECT 1 FROM pg_constraint c
               WHERE c.conindid = ix.indexrelid AND c.conrelid = ix.indrelid
                 AND c.contype IN ('p', 'u', 'x')) AS backs_constraint
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
WHERE t.relnamespace = current_schema()::regnamespace
"""
_PG_KEY_KINDS = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}


async def postgres_catalog(conn: asyncpg.Connection[asyncpg.Record]) -> Catalog:
    catalog = Catalog()
    for row in await conn.fetch(_PG_TABLES_SQL):
        catalog.tables[str(row["name"])] = TableShape(frozenset(row["columns"]))
    for row in await conn.fetch(_PG_CONSTRAINTS_SQL):
        name, kind, table = str(row["name"]), str(row["kind"]), str(row["table_name"])
        catalog.names.append(NamedObject("constraint", name, table))
        shape = catalog.tables.get(table)
        if shape is None:
            continue
        columns = tuple(str(c) for c in row["columns"])
        if kind == "p":
            shape.primary_key = UniqueKey("primary key", name, columns)
        elif kind in _PG_KEY_KINDS:
            shape.unique.append(UniqueKey(_PG_KEY_KINDS[kind], name, columns))
        elif kind == "f":
            referenced_columns = tuple(str(c) for c in row["referenced_columns"])
            shape.foreign_keys.append(
                ForeignKey(name, columns, str(row["referenced"]), referenced_columns)
            )
    for row in await conn.fetch(_PG_INDEXES_SQL):
        name, table = str(row["name"]), str(row["table_name"])
        catalog.names.append(NamedObject("index", name, table))
        shape = catalog.tables.get(table)
        # An index made for a key or unique constraint is checked as that constraint.
        if shape is None or not row["is_unique"] or row["backs_constraint"]:
            continue
        # Only key columns make an index unique; INCLUDE columns do not.
        columns = tuple(str(c) for c in row["columns"])[: int(row["key_count"])]
        shape.unique.append(UniqueKey("unique index", name, columns))
    return catalog


# SQLite keeps constraint names only in the table's DDL.
_SQLITE_CONSTRAINT_NAME = re.compile(r'\bCONSTRAINT\s+"?(\w+)"?', re.IGNORECASE)


def sqlite_catalog(conn: sqlite3.Connection) -> Catalog:
    catalog = Catalog()
    master = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    for kind, name, table, sql in master:
        # SQLite's own objects (sqlite_sequence, sqlite_autoindex_<table>_1) are not ours
        # to name, and PostgreSQL names the same keys differently.
        if str(name).startswith("sqlite_"):
            continue
        if kind == "table":
            catalog.tables[str(name)] = _sqlite_table(conn, str(name))
            for constraint in _SQLITE_CONSTRAINT_NAME.findall(str(sql or "")):
                catalog.names.append(NamedObject("constraint", constraint, str(name)))
        elif kind == "index":
            catalog.names.append(NamedObject("index", str(name), str(table)))
    return catalog


def _sqlite_primary_key(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    info = conn.execute("SELECT name, pk FROM pragma_table_info(?)", (table,)).fetchall()
    return tuple(str(name) for name, pk in sorted(info, key=lambda r: int(r[1])) if int(pk) > 0)


def _sqlite_table(conn: sqlite3.Connection, table: str) -> TableShape:
    columns = conn.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()
    shape = TableShape(frozenset(str(r[0]) for r in columns))
    primary_key = _sqlite_primary_key(conn, table)
    if primary_key:
        shape.primary_key = UniqueKey("primary key", f"{table} primary key", primary_key)
    indexes = conn.execute(
        'SELECT name, "unique", origin FROM pragma_index_list(?)', (table,)
    ).fetchall()
    for index, unique, origin in indexes:
        # The primary key's own index is the primary key, read above.
        if not unique or origin == "pk":
            continue
        info = conn.execute(
            "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
        ).fetchall()
        key = tuple("(expression)" if r[0] is None else str(r[0]) for r in info)
        kind = "unique constraint" if origin == "u" else "unique index"
        shape.unique.append(UniqueKey(kind, str(index), key))
    references: dict[int, list[tuple[str, str, str | None]]] = {}
    for fk_id, referenced, source, target in conn.execute(
        'SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY id, seq',
        (table,),
    ).fetchall():
        references.setdefault(int(fk_id), []).append(
            (str(referenced), str(source), None if target is None else str(target))
        )
    for fk_id, parts in sorted(references.items()):
        referenced = parts[0][0]
        if any(target is None for _, _, target in parts):
            # "REFERENCES parent" alone names the parent's primary key.
            target_columns = _sqlite_primary_key(conn, referenced)
        else:
            target_columns = tuple(str(target) for _, _, target in parts)
        shape.foreign_keys.append(
            ForeignKey(
                f"foreign key #{fk_id}",
                tuple(source for _, source, _ in parts),
                referenced,
                target_columns,
            )
        )
    return shape


# --- rule 1: keys, names, declared placement ----------------------------------------------------


def check_declared(catalog: Catalog) -> list[str]:
    return [
        f"table {table} is not declared in store/placement.py: declare its placement "
        "(Placement.TENANT, OWN_KEY or REFERENCE) in TABLES there"
        for table in sorted(catalog.tables)
        if table not in BOOKKEEPING_TABLES and placement.placement_of(table) is None
    ]


def check_names(catalog: Catalog) -> list[str]:
    # A key's index shares its constraint's name: one report for both.
    named = {(obj.table, obj.name): obj for obj in reversed(catalog.names)}
    return [
        f"{obj.kind} {obj.name} on {obj.table} ends in _<digits>: the PostgreSQL adapter "
        "strips such a suffix from the names Citus shards report (ves_events_pkey_102042), "
        "so this name would be misread; rename it"
        for _, obj in sorted(named.items())
        if SHARD_SUFFIX.search(obj.name)
    ]


def check_table_keys(catalog: Catalog, table: str) -> list[str]:
    """The key rules for one table, by its declared placement."""
    shape = catalog.tables[table]
    problems: list[str] = []
    if shape.primary_key is None:
        problems.append(f"{table} has no primary key")
    entry = placement.placement_of(table)
    if entry is None:
        return problems  # reported by check_declared
    keys = ([shape.primary_key] if shape.primary_key else []) + shape.unique
    if entry.placement is Placement.REFERENCE:
        for fk in shape.foreign_keys:
            target = placement.placement_of(fk.referenced)
            if target is not None and target.placement is not Placement.REFERENCE:
                problems.append(
                    f"reference table {table}: {fk.name} {_cols(fk.columns)} references "
                    f"{fk.referenced}, which is {target.placement.value}; a reference table "
                    "may only reference reference tables"
                )
        return problems
    column = entry.column
    assert column is not None, f"{table} is distributed but declares no column"
    what = f"{entry.placement.value} table {table}"
    if column not in shape.columns:
        problems.append(f"{what} has no {column} column")
    for key in keys:
        if column not in key.columns:
            problems.append(
                f"{what}: {key.kind} {key.name} {_cols(key.columns)} does not contain "
                f"{column}; a table distributed by {column} can only enforce keys that do"
            )
    if entry.placement is Placement.OWN_KEY:
        problems += [
            f"{what}: {fk.name} {_cols(fk.columns)} references {fk.referenced}; a table "
            "distributed by its own key shares no shard with any other and may have no "
            "foreign keys"
            for fk in shape.foreign_keys
        ]
        return problems
    for fk in shape.foreign_keys:
        target = placement.placement_of(fk.referenced)
        describe = f"{what}: {fk.name} {_cols(fk.columns)} -> {fk.referenced}"
        if target is None:
            problems.append(f"{describe}: references an undeclared table")
        elif target.placement is Placement.REFERENCE:
            continue  # a reference table has a copy on every node, next to every shard
        elif target.placement is not Placement.TENANT:
            problems.append(
                f"{describe}: references a table {target.placement.value}, which never "
                "shares a shard with a tenant row"
            )
        elif column not in fk.columns:
            problems.append(f"{describe} {_cols(fk.referenced_columns)}: lacks {column}")
        elif fk.referenced_columns[fk.columns.index(column)] != column:
            mapped_to = fk.referenced_columns[fk.columns.index(column)]
            problems.append(
                f"{describe} {_cols(fk.referenced_columns)}: maps {column} to {mapped_to}, "
                f"not to {fk.referenced}.{column}"
            )
    return problems


def check_keys(catalog: Catalog) -> list[str]:
    return [p for table in sorted(catalog.tables) for p in check_table_keys(catalog, table)]


def check_schema(catalog: Catalog) -> list[str]:
    """Every rule on a schema that should be tenant-first."""
    return check_declared(catalog) + check_names(catalog) + check_keys(catalog)


def schema_problems(version: int, catalog: Catalog) -> list[str]:
    """The rules the schema after migration ``version`` must keep."""
    if version >= placement.DISTRIBUTABLE_FROM:
        return check_schema(catalog)
    problems = check_declared(catalog) + check_names(catalog)
    flawed = {table for table in catalog.tables if check_table_keys(catalog, table)}
    expected = LEGACY_TABLES & catalog.tables.keys()
    if flawed != expected:
        problems.append(
            f"before migration {placement.DISTRIBUTABLE_FROM:03d} the tables breaking the "
            f"key rules should be exactly the legacy ones it rekeys, {sorted(expected)}; "
            f"found {sorted(flawed)}"
        )
        problems += [
            p for table in sorted(flawed - expected) for p in check_table_keys(catalog, table)
        ]
    return problems


def _apply_sqlite(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute("BEGIN")
    for statement in statements(migration.up):
        conn.execute(statement)
    conn.execute("COMMIT")


def sqlite_catalogs(path: Path) -> list[tuple[Migration, Catalog]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        found = []
        for migration in load("sqlite"):
            _apply_sqlite(conn, migration)
            found.append((migration, sqlite_catalog(conn)))
        return found
    finally:
        conn.close()


async def postgres_catalogs() -> list[tuple[Migration, Catalog]]:
    async with pg.scratch_database() as dsn:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            found = []
            for migration in load("postgres"):
                async with conn.transaction():
                    await conn.execute(migration.up)
                found.append((migration, await postgres_catalog(conn)))
            return found
        finally:
            await conn.close()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_schema_after_every_migration_is_tenant_first(dialect: str, tmp_path: Path) -> None:
    if dialect == "sqlite":
        catalogs = sqlite_catalogs(tmp_path / "guard.db")
    else:
        catalogs = await postgres_catalogs()
    assert [m.version for m, _ in catalogs] == [m.version for m in load(dialect)]
    failures = [
        f"{dialect}, after {migration.version:03d}_{migration.name}: {problem}"
        for migration, catalog in catalogs
        for problem in schema_problems(migration.version, catalog)
    ]
    # A declared table no migration creates would be skipped silently when distributing.
    final = catalogs[-1][1]
    failures += [
        f"{dialect}: {entry.table} is declared in store/placement.py but no migration creates it"
        for entry in placement.TABLES
        if entry.table not in BOOKKEEPING_TABLES and entry.table not in final.tables
    ]
    assert not failures, "\n".join(failures)


# --- rule 1, on schemas made bad on purpose ---------------------------------------------------

_GOOD_SCHEMA = """
CREATE TABLE sequence_counters (tenant_id TEXT, store_id TEXT, PRIMARY KEY (tenant_id, store_id));
CREATE TABLE ves_events (
    tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, store_id TEXT, sequence_number INTEGER,
    PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT ves_events_stream_sequence UNIQUE (tenant_id, store_id, sequence_number)
);
CREATE TABLE ves_sequencer_receipts (
    tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT receipts_event FOREIGN KEY (tenant_id, event_id)
        REFERENCES ves_events (tenant_id, event_id)
);
CREATE TABLE audit_log (id TEXT PRIMARY KEY, tenant_id TEXT);
CREATE TABLE agent_signing_keys (
    tenant_id TEXT, agent_id TEXT, key_id INTEGER, PRIMARY KEY (tenant_id, agent_id, key_id),
    FOREIGN KEY (tenant_id) REFERENCES audit_log (id)
);
CREATE TABLE ves_event_ids (event_id TEXT PRIMARY KEY, tenant_id TEXT, store_id TEXT);
CREATE UNIQUE INDEX ves_event_ids_owner ON ves_event_ids (event_id, tenant_id);
"""

_PARENT = (
    "CREATE TABLE ves_events (tenant_id TEXT, event_id TEXT, PRIMARY KEY (tenant_id, event_id));"
)
_COUNTERS = (
    "CREATE TABLE sequence_counters "
    "(tenant_id TEXT, store_id TEXT, PRIMARY KEY (tenant_id, store_id));"
)
_BAD_SCHEMAS = {
    "tenant primary key by id alone": (
        "CREATE TABLE ves_events (event_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL);",
        "primary key ves_events primary key (event_id) does not contain tenant_id",
    ),
    "tenant unique constraint without tenant_id": (
        "CREATE TABLE ves_commitments (tenant_id TEXT, batch_id TEXT, store_id TEXT, "
        "start INTEGER, PRIMARY KEY (tenant_id, batch_id), UNIQUE (store_id, start));",
        "unique constraint sqlite_autoindex_ves_commitments_2 (store_id, start)",
    ),
    "tenant unique index without tenant_id": (
        "CREATE TABLE event_schemas (tenant_id TEXT, id TEXT, PRIMARY KEY (tenant_id, id)); "
        "CREATE UNIQUE INDEX event_schemas_by_id ON event_schemas (id);",
        "unique index event_schemas_by_id (id) does not contain tenant_id",
    ),
    "tenant table without tenant_id": (
        "CREATE TABLE entity_versions (store_id TEXT PRIMARY KEY);",
        "entity_versions has no tenant_id column",
    ),
    "tenant foreign key without tenant_id": (
        _PARENT + "CREATE TABLE ves_sequencer_receipts (tenant_id TEXT, event_id TEXT "
        "REFERENCES ves_events (event_id), PRIMARY KEY (tenant_id, event_id));",
        "(event_id) -> ves_events (event_id): lacks tenant_id",
    ),
    "tenant foreign key mapping tenant_id elsewhere": (
        _PARENT + "CREATE TABLE ves_sequencer_receipts (tenant_id TEXT, event_id TEXT, "
        "PRIMARY KEY (tenant_id, event_id), "
        "FOREIGN KEY (tenant_id, event_id) REFERENCES ves_events (event_id, tenant_id));",
        "maps tenant_id to event_id, not to ves_events.tenant_id",
    ),
    "tenant foreign key to the own-key table": (
        "CREATE TABLE ves_event_ids (event_id TEXT PRIMARY KEY, tenant_id TEXT);"
        "CREATE TABLE ves_command_dedupe (tenant_id TEXT, event_id TEXT, "
        "PRIMARY KEY (tenant_id, event_id), FOREIGN KEY (event_id) REFERENCES ves_event_ids);",
        "-> ves_event_ids: references a table distributed by its own key",
    ),
    "own-key unique index without its column": (
        "CREATE TABLE ves_event_ids (event_id TEXT PRIMARY KEY, tenant_id TEXT, store_id TEXT);"
        "CREATE UNIQUE INDEX ves_event_ids_owner ON ves_event_ids (tenant_id, store_id);",
        "unique index ves_event_ids_owner (tenant_id, store_id) does not contain event_id",
    ),
    "own-key table with a foreign key": (
        _COUNTERS + "CREATE TABLE ves_event_ids (event_id TEXT PRIMARY KEY, tenant_id TEXT, "
        "store_id TEXT, FOREIGN KEY (tenant_id, store_id) REFERENCES sequence_counters);",
        "references sequence_counters; a table distributed by its own key",
    ),
    "reference table pointing at a tenant table": (
        _COUNTERS + "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, tenant_id TEXT, "
        "store_id TEXT, FOREIGN KEY (tenant_id, store_id) "
        "REFERENCES sequence_counters (tenant_id, store_id));",
        "reference table api_keys: foreign key #0 (tenant_id, store_id) references "
        "sequence_counters",
    ),
    "undeclared table": (
        "CREATE TABLE scratch_notes (id TEXT PRIMARY KEY);",
        "table scratch_notes is not declared in store/placement.py",
    ),
    "index name like a shard's": (
        "CREATE TABLE sequencer_meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE INDEX sequencer_meta_value_2 ON sequencer_meta (value);",
        "index sequencer_meta_value_2 on sequencer_meta ends in _<digits>",
    ),
    "constraint name like a shard's": (
        "CREATE TABLE sequencer_meta (key TEXT, value TEXT, "
        "CONSTRAINT sequencer_meta_pkey_1 PRIMARY KEY (key));",
        "constraint sequencer_meta_pkey_1 on sequencer_meta ends in _<digits>",
    ),
    "no primary key": (
        "CREATE TABLE audit_log (id TEXT, tenant_id TEXT);",
        "audit_log has no primary key",
    ),
}


def _sqlite_schema(path: Path, script: str) -> Catalog:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(script)
        return sqlite_catalog(conn)
    finally:
        conn.close()


def test_schema_check_passes_a_tenant_first_schema(tmp_path: Path) -> None:
    catalog = _sqlite_schema(tmp_path / "good.db", _GOOD_SCHEMA)
    assert len(catalog.tables) == 6
    assert check_schema(catalog) == []


@pytest.mark.parametrize(("script", "expected"), _BAD_SCHEMAS.values(), ids=list(_BAD_SCHEMAS))
def test_schema_check_reports_a_broken_rule(tmp_path: Path, script: str, expected: str) -> None:
    problems = check_schema(_sqlite_schema(tmp_path / "bad.db", script))
    assert any(expected in p for p in problems), "\n".join(problems) or "no problem reported"


async def test_postgres_catalog_shows_the_same_faults() -> None:
    """The PostgreSQL reader sees what the SQLite self-tests rely on: keys, unique
    constraints and indexes, foreign keys and names."""
    script = """
        CREATE TABLE ves_events (event_id UUID PRIMARY KEY, tenant_id UUID NOT NULL);
        CREATE TABLE ves_sequencer_receipts (
            tenant_id UUID, event_id UUID REFERENCES ves_events (event_id),
            PRIMARY KEY (tenant_id, event_id)
        );
        CREATE TABLE entity_versions (
            tenant_id UUID, entity_id TEXT, PRIMARY KEY (tenant_id, entity_id),
            CONSTRAINT entity_versions_entity_2 UNIQUE (entity_id)
        );
        CREATE UNIQUE INDEX entity_versions_by_entity ON entity_versions (entity_id)
            INCLUDE (tenant_id);
        CREATE TABLE scratch_notes (id INTEGER);
    """
    async with pg.scratch_database() as dsn:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(script)
            problems = check_schema(await postgres_catalog(conn))
        finally:
            await conn.close()
    expected = [
        "primary key ves_events_pkey (event_id) does not contain tenant_id",
        "ves_sequencer_receipts_event_id_fkey (event_id) -> ves_events (event_id): lacks",
        "unique constraint entity_versions_entity_2 (entity_id) does not contain",
        "unique index entity_versions_by_entity (entity_id) does not contain",
        "constraint entity_versions_entity_2 on entity_versions ends in _<digits>",
        "table scratch_notes is not declared",
        "scratch_notes has no primary key",
    ]
    missing = [e for e in expected if not any(e in p for p in problems)]
    assert not missing, f"missing {missing} in:\n" + "\n".join(problems)


# --- collecting the SQL texts -----------------------------------------------------------------

ADAPTER_PACKAGES = {
    "postgres": "stateset_sequencer.store.postgres",
    "sqlite": "stateset_sequencer.store.sqlite",
}
SHARED_MODULES = ("stateset_sequencer.store.rows", "stateset_sequencer.store.summaries")
_DO_UPDATE = re.compile(r"\bDO\s+UPDATE\s+SET\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SqlText:
    where: str  # a module, or a migration file
    detail: str  # the constant's name or the literal's line
    dialect: str  # "postgres", "sqlite", or "shared" (rows, summaries)
    how: str  # "import" (a constant's value), "source" (a literal) or "migration"
    text: str

    @property
    def origin(self) -> str:
        return f"{self.where} ({self.detail})" if self.detail else self.where


def adapter_modules() -> list[tuple[str, ModuleType]]:
    found = [("shared", importlib.import_module(name)) for name in SHARED_MODULES]
    for dialect, name in ADAPTER_PACKAGES.items():
        package = importlib.import_module(name)
        found.append((dialect, package))
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            found.append((dialect, importlib.import_module(info.name)))
    return found


def _strings_in(value: object, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif depth < 4 and isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            yield from _strings_in(item, depth + 1)
    elif depth < 4 and isinstance(value, tuple | list | set | frozenset):
        for item in value:
            yield from _strings_in(item, depth + 1)


def module_constants(dialect: str, module: ModuleType) -> list[SqlText]:
    """SQL as the module holds it once imported, including text assembled at import."""
    return [
        SqlText(module.__name__, name, dialect, "import", text)
        for name, value in vars(module).items()
        if not name.startswith("__")
        for text in _strings_in(value)
    ]


class _Literals(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []

    def visit_Expr(self, node: ast.Expr) -> None:
        # A bare string statement is a docstring: prose about SQL, never executed.
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.found.append((node.lineno, node.value))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        rendered = "".join(
            part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "{}"
            for part in node.values
        )
        self.found.append((node.lineno, rendered))
        # Strings nested in the replacement fields are literals of their own.
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                self.visit(part.value)


def module_literals(dialect: str, module: ModuleType) -> list[SqlText]:
    """SQL as written in the module's source, including text inline in functions."""
    visitor = _Literals()
    visitor.visit(ast.parse(inspect.getsource(module)))
    return [
        SqlText(module.__name__, f"line {line}", dialect, "source", text)
        for line, text in visitor.found
    ]


def migration_texts() -> list[SqlText]:
    return [
        SqlText(
            f"migrations/{dialect}/{m.version:03d}_{m.name}.{direction}.sql",
            "",
            dialect,
            "migration",
            text,
        )
        for dialect in DIALECTS
        for m in load(dialect)
        for direction, text in (("up", m.up), ("down", m.down))
    ]


@functools.cache
def sql_texts() -> tuple[SqlText, ...]:
    collected: list[SqlText] = []
    for dialect, module in adapter_modules():
        collected += module_constants(dialect, module) + module_literals(dialect, module)
    collected += migration_texts()
    seen: set[tuple[str, str, str]] = set()
    unique: list[SqlText] = []
    for text in collected:
        key = (text.where, text.how, text.text)
        if key not in seen:
            seen.add(key)
            unique.append(text)
    return tuple(unique)


def test_collectors_find_the_adapters_sql() -> None:
    texts = sql_texts()
    queries = {t.text for t in texts if re.search(r"\b(SELECT|INSERT)\b", t.text)}
    assert len(queries) >= 30, f"only {len(queries)} SQL texts found"
    upserts = {t.dialect for t in texts if t.how != "migration" and _DO_UPDATE.search(t.text)}
    assert {"postgres", "sqlite"} <= upserts, f"upserts found only in {upserts}"
    # Some SQL exists whole only once imported (joined from parts at import time): without
    # the import-time collector its update clause would go unseen.
    in_source = {t.text for t in texts if t.how == "source"}
    assembled = [
        t
        for t in texts
        if t.how == "import" and _DO_UPDATE.search(t.text) and t.text not in in_source
    ]
    assert assembled, "no upsert assembled at import time was collected"
    # And some is written only inline in a function, which only the source collector sees.
    constants = {t.text for t in texts if t.how == "import"}
    inline = [
        t for t in texts if t.how == "source" and "SELECT" in t.text and t.text not in constants
    ]
    assert inline, "no SQL written inline in a function was collected"
    assert len([t for t in texts if t.how == "migration"]) == 2 * sum(
        len(load(d)) for d in DIALECTS
    )


# --- a little SQL reading ---------------------------------------------------------------------

_TOKEN = re.compile(r'"[^"]*"|[A-Za-z_][A-Za-z0-9_$]*|\$\d+|::|\S')
Tokens = list[re.Match[str]]


def masked(sql: str) -> str:
    """``sql`` with comments and the insides of string literals blanked (same length), so
    that nothing in them reads as SQL."""
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        if sql[i] == "'":
            j = i + 1
            while j < n and not (sql[j] == "'" and sql[j + 1 : j + 2] != "'"):
                j += 2 if sql[j] == "'" else 1
            out[i + 1 : min(j, n)] = " " * (min(j, n) - i - 1)
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = " " * (j - i)
            i = j
        else:
            i += 1
    return "".join(out)


def sql_statements(sql: str) -> list[Tokens]:
    """The statements of ``sql``, each as its tokens (positions index ``sql``)."""
    found: list[Tokens] = [[]]
    for token in _TOKEN.finditer(masked(sql)):
        if token.group() == ";":
            found.append([])
        else:
            found[-1].append(token)
    return [s for s in found if s]


def _word(tokens: Tokens, i: int) -> str:
    return tokens[i].group().upper() if 0 <= i < len(tokens) else ""


def _is_name(tokens: Tokens, i: int) -> bool:
    return 0 <= i < len(tokens) and (tokens[i].group()[0].isalpha() or tokens[i].group()[0] in '_"')


def _name(tokens: Tokens, i: int) -> str:
    return tokens[i].group().strip('"').lower()


def _matching(tokens: Tokens, i: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].group() == "(":
            depth += 1
        elif tokens[j].group() == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(tokens)


def _until(tokens: Tokens, i: int, stops: frozenset[str]) -> int:
    """Where a clause starting at ``i`` ends: a stop word at its own depth, or a ``)``
    closing a parenthesis it did not open (the end of a CTE or subquery)."""
    depth = 0
    for j in range(i, len(tokens)):
        text = tokens[j].group()
        if text == "(":
            depth += 1
        elif text == ")":
            if depth == 0:
                return j
            depth -= 1
        elif depth == 0 and text.upper() in stops:
            return j
    return len(tokens)


def _snippet(sql: str, tokens: Tokens, start: int, end: int) -> str:
    if start >= end:
        return ""
    return " ".join(sql[tokens[start].start() : tokens[end - 1].end()].split())


def _mentions(tokens: Sequence[re.Match[str]], column: str) -> bool:
    return any(t.group().strip('"').lower() == column for t in tokens)


# --- rule 2: only immutable functions in an upsert's update clause ----------------------------

IMMUTABLE_FUNCTIONS = frozenset(
    {"COALESCE", "GREATEST", "LEAST", "NULLIF", "ABS", "LENGTH", "OCTET_LENGTH", "LOWER", "UPPER"}
)
# Read as a function call by the shape "word (", but syntax: casts and operators.
_NOT_CALLS = frozenset(
    {"CAST", "IN", "AND", "OR", "NOT", "EXISTS", "ANY", "ALL", "SOME", "ROW", "VALUES"}
    | {"THEN", "ELSE", "WHEN", "CASE", "IS", "ON", "SET", "SELECT", "DISTINCT", "ARRAY"}
)
VOLATILE_KEYWORDS = frozenset(
    {"CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME", "LOCALTIMESTAMP", "LOCALTIME"}
)
_UPDATE_CLAUSE_ENDS = frozenset({"RETURNING", "WHERE"})


def _non_immutable(clause: Tokens) -> list[str]:
    found: list[str] = []
    for j, token in enumerate(clause):
        word = token.group().upper()
        if word in VOLATILE_KEYWORDS:
            found.append(word)
        elif _is_name(clause, j) and _word(clause, j + 1) == "(":
            # "::numeric(20, 0)" and "CAST(x AS varchar(8))" are a type's modifiers.
            if _word(clause, j - 1) in ("::", "AS"):
                continue
            name = word.strip('"')
            if name not in IMMUTABLE_FUNCTIONS and name not in _NOT_CALLS:
                found.append(f"{token.group()}()")
    return found


def check_upserts(text: SqlText) -> list[str]:
    problems: list[str] = []
    for tokens in sql_statements(text.text):
        for i in range(len(tokens) - 2):
            if (_word(tokens, i), _word(tokens, i + 1), _word(tokens, i + 2)) != (
                "DO",
                "UPDATE",
                "SET",
            ):
                continue
            if not any(
                _word(tokens, k) == "ON" and _word(tokens, k + 1) == "CONFLICT" for k in range(i)
            ):
                continue
            end = _until(tokens, i + 3, _UPDATE_CLAUSE_ENDS)
            calls = _non_immutable(tokens[i + 3 : end])
            if calls:
                clause = _snippet(text.text, tokens, i + 3, end)
                problems.append(
                    f"{text.origin}: upsert clause `DO UPDATE SET {clause}` uses "
                    f"{', '.join(calls)}; Citus allows only IMMUTABLE functions there "
                    "(take the new value from EXCLUDED)"
                )
    return problems


def test_no_volatile_function_in_an_upsert_update_clause() -> None:
    problems = [p for text in sql_texts() for p in check_upserts(text)]
    assert not problems, "\n".join(problems)


def _text(sql: str) -> SqlText:
    return SqlText("self-test", "", "postgres", "source", sql)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "INSERT INTO api_keys (key_hash) VALUES ($1) "
            "ON CONFLICT (key_hash) DO UPDATE SET active = TRUE, updated_at = NOW()",
            "DO UPDATE SET active = TRUE, updated_at = NOW()` uses NOW();",
        ),
        (
            "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) DO UPDATE SET at = CURRENT_TIMESTAMP",
            "uses CURRENT_TIMESTAMP",
        ),
        (
            "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) "
            "DO UPDATE SET at = strftime('%Y-%m-%d', 'now') WHERE t.k = excluded.k",
            "DO UPDATE SET at = strftime('%Y-%m-%d', 'now')` uses strftime();",
        ),
        (
            "WITH v AS (INSERT INTO t (k) VALUES ($1) ON CONFLICT (k) DO UPDATE SET n = "
            "COALESCE(pg_catalog.random(), 0)) SELECT 1",
            "uses random()",
        ),
    ],
)
def test_upsert_check_reports_a_volatile_function(sql: str, expected: str) -> None:
    problems = check_upserts(_text(sql))
    assert len(problems) == 1 and expected in problems[0], problems


def test_upsert_check_passes_immutable_update_clauses() -> None:
    good = [
        # Functions after the clause (RETURNING, WHERE, the statement after the CTE) are
        # not part of it.
        "INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET "
        "v = GREATEST(t.v, EXCLUDED.v), n = COALESCE($3::numeric(20, 0), LENGTH(t.k)), "
        "at = EXCLUDED.at RETURNING now()",
        "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) DO UPDATE SET v = excluded.v "
        "WHERE t.at < strftime('%s', 'now')",
        "WITH a AS (INSERT INTO t (k) SELECT u FROM unnest($1::uuid[]) AS x(u) "
        "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v) UPDATE c SET at = NOW() WHERE k = $2",
        "INSERT INTO t (k) VALUES ($1) ON CONFLICT DO NOTHING; UPDATE t SET at = NOW()",
        # A literal or a comment is not code.
        "INSERT INTO t (k) VALUES ($1) ON CONFLICT (k) DO UPDATE SET s = 'now()' -- now()\n",
    ]
    for sql in good:
        assert check_upserts(_text(sql)) == [], sql


# --- rule 3: joins between tenant tables name the tenant --------------------------------------

_CLAUSE_WORDS = frozenset(
    {"ON", "USING", "WHERE", "GROUP", "ORDER", "LIMIT", "UNION", "HAVING", "WINDOW", "OFFSET"}
    | {"RETURNING", "FOR", "EXCEPT", "INTERSECT", "JOIN", "LEFT", "RIGHT", "INNER", "FULL"}
    | {"CROSS", "NATURAL", "OUTER", "LATERAL", "SET", "VALUES", "SELECT", "DO", "FETCH"}
)
_CONDITION_ENDS = frozenset(
    {"JOIN", "WHERE", "GROUP", "ORDER", "LIMIT", "UNION", "HAVING", "WINDOW", "OFFSET"}
    | {"RETURNING", "FETCH", "EXCEPT", "INTERSECT"}
)
_WHERE_ENDS = _CONDITION_ENDS - {"JOIN", "WHERE"} | {"FOR"}


def _qualified(tokens: Tokens, i: int) -> tuple[int, str]:
    """The table named at ``i`` (``schema.table`` read as ``table``), and what follows."""
    name, j = _name(tokens, i), i + 1
    while _word(tokens, j) == "." and _is_name(tokens, j + 1):
        name, j = _name(tokens, j + 1), j + 2
    return j, name


def _skip_alias(tokens: Tokens, j: int) -> int:
    if _word(tokens, j) == "AS":
        j += 1
    if _is_name(tokens, j) and _word(tokens, j) not in _CLAUSE_WORDS:
        j += 1
    if _word(tokens, j) == "(":  # a column list: unnest(...) AS q(id)
        j = _matching(tokens, j) + 1
    return j


def tables_read(tokens: Tokens) -> set[str]:
    """Every name after FROM or JOIN, at any depth, including comma-separated lists."""
    found: set[str] = set()
    for i in range(len(tokens)):
        if _word(tokens, i) not in ("FROM", "JOIN"):
            continue
        j = i + 1
        while j < len(tokens):
            while _word(tokens, j) in ("LATERAL", "ONLY"):
                j += 1
            if _word(tokens, j) == "(":
                j = _matching(tokens, j) + 1  # a subquery: its own FROMs are found in turn
            elif _is_name(tokens, j):
                j, name = _qualified(tokens, j)
                if _word(tokens, j) == "(":
                    j = _matching(tokens, j) + 1  # a function, such as unnest(...)
                else:
                    found.add(name)
            else:
                break
            j = _skip_alias(tokens, j)
            if _word(tokens, j) != ",":
                break
            j += 1
    return found


def _ctes(tokens: Tokens) -> dict[str, Tokens]:
    """The statement's CTEs (``name [(columns)] AS [MATERIALIZED] (body)``) by name."""
    found: dict[str, Tokens] = {}
    for i in range(1, len(tokens)):
        if _word(tokens, i - 1) not in ("WITH", "RECURSIVE", ",") or not _is_name(tokens, i):
            continue
        j = i + 1
        if _word(tokens, j) == "(":
            j = _matching(tokens, j) + 1
        if _word(tokens, j) != "AS":
            continue
        j += 1
        if _word(tokens, j) == "NOT":
            j += 1
        if _word(tokens, j) == "MATERIALIZED":
            j += 1
        if _word(tokens, j) == "(":
            found[_name(tokens, i)] = tokens[j + 1 : _matching(tokens, j)]
    return found


def _tenant_sources(tokens: Tokens) -> frozenset[str]:
    """Tenant tables, and the statement's CTEs reading one (directly or through another)."""
    sources = set(TENANT_TABLES)
    ctes = {name: tables_read(body) for name, body in _ctes(tokens).items()}
    grew = True
    while grew:
        grew = False
        for name, reads in ctes.items():
            if name not in sources and reads & sources:
                sources.add(name)
                grew = True
    return frozenset(sources)


def _where_of(body: Tokens) -> Tokens | None:
    """The WHERE condition of a subquery's outermost level, if it has one."""
    depth = 0
    for j, token in enumerate(body):
        if token.group() == "(":
            depth += 1
        elif token.group() == ")":
            depth -= 1
        elif depth == 0 and token.group().upper() == "WHERE":
            return body[j + 1 : _until(body, j + 1, _WHERE_ENDS)]
    return None


def _check_join(sql: str, tokens: Tokens, i: int, sources: frozenset[str]) -> str | None:
    """The problem with the JOIN at ``i``, if it joins a tenant source off its tenant."""
    column = placement.TENANT_COLUMN
    j = i + 1
    lateral = _word(tokens, j) == "LATERAL"
    if lateral:
        j += 1
    if _word(tokens, j) == "(":
        close = _matching(tokens, j)
        body = tokens[j + 1 : close]
        read = tables_read(body) & sources
        if lateral:
            where = _where_of(body)
            if read and (where is None or not _mentions(where, column)):
                return (
                    f"a lateral subquery reads {', '.join(sorted(read))} with no {column} in "
                    f"its WHERE: {_snippet(sql, tokens, i, close + 1)}"
                )
            return None
        target, tenant = "a subquery", bool(read)
        j = close + 1
    elif _is_name(tokens, j):
        j, target = _qualified(tokens, j)
        tenant = target in sources
    else:
        return None
    if not tenant:
        return None
    j = _skip_alias(tokens, j)
    if _word(tokens, j) == "ON":
        end = _until(tokens, j + 1, _CONDITION_ENDS)
        if _mentions(tokens[j + 1 : end], column):
            return None
    elif _word(tokens, j) == "USING" and _word(tokens, j + 1) == "(":
        end = _matching(tokens, j + 1) + 1
        if _mentions(tokens[j + 1 : end], column):
            return None
    else:
        end = j
    return f"joins {target} on a condition without {column}: {_snippet(sql, tokens, i, end)}"


def check_joins(text: SqlText) -> list[str]:
    problems: list[str] = []
    for tokens in sql_statements(text.text):
        sources = _tenant_sources(tokens)
        for i in range(len(tokens)):
            if _word(tokens, i) == "JOIN":
                problem = _check_join(text.text, tokens, i, sources)
                if problem is not None:
                    problems.append(
                        f"{text.origin}: {problem} (on Citus a join of tenant tables stays "
                        f"on one shard only if it equates their {placement.TENANT_COLUMN})"
                    )
    return problems


def check_own_key_isolation(text: SqlText) -> list[str]:
    problems: list[str] = []
    for tokens in sql_statements(text.text):
        read = tables_read(tokens)
        own, tenant = read & OWN_KEY_TABLES, read & TENANT_TABLES
        if own and tenant:
            problems.append(
                f"{text.origin}: one statement reads {', '.join(sorted(own))} (distributed by "
                f"its own key) with {', '.join(sorted(tenant))} (distributed by "
                f"{placement.TENANT_COLUMN}), a join Citus cannot run; read the owner first, "
                f"then the tenant's rows: {_snippet(text.text, tokens, 0, len(tokens))}"
            )
    return problems


def test_joins_of_tenant_tables_name_the_tenant() -> None:
    problems = [p for text in sql_texts() for p in check_joins(text)]
    assert not problems, "\n".join(problems)


def test_the_own_key_table_is_never_read_with_a_tenant_table() -> None:
    problems = [p for text in sql_texts() for p in check_own_key_isolation(text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT e.event_id FROM ves_events e "
            "LEFT JOIN ves_sequencer_receipts r ON r.event_id = e.event_id "
            "WHERE e.tenant_id = $1",
            "joins ves_sequencer_receipts on a condition without tenant_id: "
            "JOIN ves_sequencer_receipts r ON r.event_id = e.event_id",
        ),
        (
            "SELECT * FROM unnest($1::uuid[]) AS q(id) CROSS JOIN LATERAL "
            "(SELECT * FROM ves_events WHERE event_id = q.id LIMIT 1) AS e",
            "a lateral subquery reads ves_events with no tenant_id in its WHERE",
        ),
        (
            "SELECT * FROM unnest($1::uuid[]) AS q(id) LEFT JOIN LATERAL "
            "(SELECT * FROM public.ves_sequencer_receipts LIMIT 1) AS r ON TRUE",
            "a lateral subquery reads ves_sequencer_receipts with no tenant_id",
        ),
        (
            "SELECT * FROM ves_events e JOIN ves_command_dedupe d USING (event_id)",
            "joins ves_command_dedupe on a condition without tenant_id",
        ),
        (
            "SELECT * FROM ves_events e CROSS JOIN entity_versions v",
            "joins entity_versions on a condition without tenant_id",
        ),
        (
            "WITH agg AS (SELECT tenant_id, store_id FROM ves_events), "
            "keys AS (SELECT tenant_id, store_id FROM agg) "
            "SELECT * FROM sequence_counters c JOIN keys k ON k.store_id = c.store_id",
            "joins keys on a condition without tenant_id",
        ),
        (
            "SELECT * FROM api_keys a JOIN (SELECT * FROM ves_events) e ON e.event_id = a.x",
            "joins a subquery on a condition without tenant_id",
        ),
    ],
)
def test_join_check_reports_a_join_off_the_tenant(sql: str, expected: str) -> None:
    problems = check_joins(_text(sql))
    assert len(problems) == 1 and expected in problems[0], problems


def test_join_check_passes_joins_on_the_tenant() -> None:
    good = [
        "SELECT * FROM ves_events e LEFT JOIN ves_sequencer_receipts r "
        "ON r.tenant_id = e.tenant_id AND r.event_id = e.event_id WHERE e.tenant_id = $1",
        "SELECT * FROM unnest($2::uuid[]) AS q(id) CROSS JOIN LATERAL "
        "(SELECT * FROM ves_events WHERE tenant_id = $1 AND event_id = q.id LIMIT 1) AS e "
        "LEFT JOIN LATERAL (SELECT * FROM ves_sequencer_receipts "
        "WHERE tenant_id = $1 AND event_id = q.id LIMIT 1) AS r ON TRUE",
        "SELECT * FROM ves_events e JOIN ves_command_dedupe d USING (tenant_id, event_id)",
        # Joins among tables that are not tenant tables, or to a CTE over none, are free.
        "WITH m AS (SELECT key FROM sequencer_meta) "
        "SELECT * FROM api_keys a JOIN audit_log l ON l.actor = a.key_hash JOIN m ON TRUE",
        # "join" in a literal or a comment is not a join.
        "SELECT 'JOIN ves_events e ON x' FROM sequencer_meta -- JOIN ves_events e ON x\n",
    ]
    for sql in good:
        assert check_joins(_text(sql)) == [], sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT e.* FROM ves_event_ids i "
        "JOIN ves_events e ON e.tenant_id = i.tenant_id AND e.event_id = i.event_id",
        "SELECT * FROM ves_events WHERE event_id IN (SELECT event_id FROM ves_event_ids)",
        "SELECT * FROM ves_event_ids i, ves_sequencer_receipts r WHERE r.event_id = i.event_id",
    ],
)
def test_own_key_check_reports_a_read_with_a_tenant_table(sql: str) -> None:
    problems = check_own_key_isolation(_text(sql))
    assert len(problems) == 1 and "reads ves_event_ids" in problems[0], problems


def test_own_key_check_passes_reads_on_their_own() -> None:
    good = [
        "SELECT event_id, tenant_id FROM ves_event_ids WHERE event_id = ANY($1::uuid[])",
        # Filling it from the events (migration 005) writes it; it reads only ves_events.
        "INSERT INTO ves_event_ids (event_id, tenant_id, store_id) "
        "SELECT event_id, tenant_id, store_id FROM ves_events",
        "SELECT tenant_id FROM ves_event_ids WHERE event_id = $1; "
        "SELECT * FROM ves_events WHERE tenant_id = $1",
    ]
    for sql in good:
        assert check_own_key_isolation(_text(sql)) == [], sql


# --- INSERT … SELECT from a tenant table ------------------------------------------------------


def check_insert_selects(text: SqlText) -> list[str]:
    """Citus runs an INSERT … SELECT whose SELECT reads a colocated distributed table on
    the shards, casting the selected values to the column types explicitly: a text too long
    for a VARCHAR(n) is cut to fit instead of refused (seen on Citus 13.2 with the schema
    registry's INSERT … SELECT MAX(version) + 1). The adapters read first and insert with
    VALUES or from unnest() instead. Migrations are exempt: their back-fills copy rows
    that already fit, before any table is distributed."""
    if text.how == "migration" or text.dialect == "sqlite":
        return []
    problems: list[str] = []
    for tokens in sql_statements(text.text):
        if not any(_word(tokens, i) == "INSERT" for i in range(len(tokens))):
            continue
        read = tables_read(tokens) & TENANT_TABLES
        if read:
            problems.append(
                f"{text.origin}: an INSERT in a statement that reads {', '.join(sorted(read))}: "
                f"{_snippet(text.text, tokens, 0, len(tokens))}"
            )
    return problems


def test_no_insert_selects_from_a_tenant_table() -> None:
    problems = [p for text in sql_texts() for p in check_insert_selects(text)]
    assert not problems, "\n".join(problems)


def test_insert_select_check_reports_a_read_of_a_tenant_table() -> None:
    bad = _text(
        "INSERT INTO event_schemas (id, version) SELECT $1, COALESCE(MAX(version), 0) + 1 "
        "FROM event_schemas WHERE tenant_id = $2"
    )
    problems = check_insert_selects(bad)
    assert len(problems) == 1 and "reads event_schemas" in problems[0], problems
    good = _text(
        "INSERT INTO ves_events (event_id, tenant_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])"
    )
    assert check_insert_selects(good) == []


# --- what a foreign key's check can use -------------------------------------------------------

# For each foreign key: the referenced table's indexes led by the key's first referenced
# column, and whether that index is the referenced key itself.
_FK_INDEXES_SQL = """
SELECT c.conname, c.confrelid::regclass::text AS parent, i.indexrelid::regclass::text AS index,
       i.indexrelid = c.conindid AS is_key
FROM pg_constraint c
JOIN pg_index i ON i.indrelid = c.confrelid
WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace
  AND i.indkey[0] = c.confkey[1]
ORDER BY 1, 3
"""


async def test_a_foreign_key_check_has_one_index_to_choose() -> None:
    """The check of a foreign key runs "col1 = $1 AND col2 = $2" on the referenced table,
    with a plan each connection makes once. Made while the table was nearly empty, any
    index led by the same first column cost the same as the referenced key, and one was
    taken that then scanned the whole tenant for every row checked (ingest on 64 streams
    fell by a third as ves_events grew). So the referenced key must be the only index of
    its table led by that column."""
    async with pg.scratch_database() as dsn:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for migration in load("postgres"):
                async with conn.transaction():
                    await conn.execute(migration.up)
            rows = await conn.fetch(_FK_INDEXES_SQL)
        finally:
            await conn.close()
    assert rows, "the schema has foreign keys; the query found none"
    rivals = [
        f"{r['conname']}: {r['index']} on {r['parent']} starts with the key's first column"
        for r in rows
        if not r["is_key"]
    ]
    assert not rivals, "\n".join(rivals)
