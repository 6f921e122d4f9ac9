"""The database: apply, inspect and roll back schema migrations; back it up, check a
backup, restore one (then verify every stream)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from ..recovery import backup as backup_mod
from ..runtime import Runtime, database_config, snapshots
from ..store.placement import REFERENCE
from ..store.records import Distribution, MigrationStatus
from .common import (
    DatabaseUrl,
    DataDir,
    cli_actor,
    fail,
    run_on_store,
    store_settings,
    with_runtime,
)
from .recovery import AllowUnsigned, SequencerKey, finish_report, progress, verify

commands = typer.Typer()
backup_app = typer.Typer(
    help="Back up the database (pg_dump -Fc or SQLite online backup) with a manifest.",
    no_args_is_help=False,
)
migrate_app = typer.Typer(
    help="Apply, inspect or roll back schema migrations.", no_args_is_help=False
)


async def _migrate(runtime: Runtime) -> tuple[list[int], Distribution, str]:
    applied = await runtime.store.migrate()
    return applied, await runtime.store.distribution(), runtime.database.display


@migrate_app.callback(invoke_without_command=True)
def migrate(ctx: typer.Context, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Apply pending migrations (the default action); on a database with the citus
    extension, also distribute every table by tenant as the schema declares."""
    if ctx.invoked_subcommand is not None:
        return
    applied, placed, where = asyncio.run(
        with_runtime(store_settings(database_url, data_dir), _migrate)
    )
    if applied:
        typer.echo(f"ok: applied migrations {', '.join(f'{v:03d}' for v in applied)} on {where}")
    else:
        typer.echo(f"ok: schema is up to date on {where}")
    typer.echo(distribution_line(placed))


def distribution_line(placed: Distribution) -> str:
    if placed.engine is None:
        return "distribution: skipped, the citus extension is not installed here; tables stay local"
    wrong = [t.table for t in placed.tables if t.placement != t.expected]
    if wrong:
        return f"distribution: NOT as declared on {placed.engine}: {', '.join(wrong)}"
    spread = sum(1 for t in placed.tables if t.placement != REFERENCE)
    return (
        f"distribution: {placed.engine}, {spread} distributed and "
        f"{len(placed.tables) - spread} reference tables, as declared"
    )


async def _status(runtime: Runtime) -> tuple[list[MigrationStatus], Distribution]:
    return await runtime.store.migration_status(), await runtime.store.distribution()


@migrate_app.command("status")
def migrate_status(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """List every migration and whether it is applied, then each table's placement."""
    rows, placed = asyncio.run(with_runtime(store_settings(database_url, data_dir), _status))
    for row in rows:
        state = "applied" if row.applied else "pending"
        if row.applied and not row.checksum_ok:
            state = "EDITED AFTER APPLYING"
        typer.echo(f"{row.version:03d}  {row.name:<24} {state}")
    typer.echo(distribution_line(placed))
    for table in placed.tables:
        note = "" if table.placement == table.expected else f"  (declared: {table.expected})"
        typer.echo(f"  {table.table:<24} {table.placement}{note}")
    if any(r.applied and not r.checksum_ok for r in rows):
        raise typer.Exit(1)


@migrate_app.command("rollback")
def migrate_rollback(
    to: Annotated[int, typer.Option("--to", min=0, help="Version to keep (0: undo all)")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Undo applied migrations above --to, newest first."""
    reverted: list[int] = run_on_store(database_url, data_dir, lambda store: store.rollback(to))
    if reverted:
        typer.echo(f"ok: rolled back {', '.join(f'{v:03d}' for v in reverted)}")
    else:
        typer.echo(f"ok: nothing above {to:03d} to roll back")


# --- backup, backup verify, restore ---------------------------------------------------------


@backup_app.callback(invoke_without_command=True)
def backup(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("--output", help="New (or empty) directory for the backup")
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Back up the database into DIR with DIR/manifest.json (the default action)."""
    if ctx.invoked_subcommand is not None:
        return
    if output is None:
        fail("give --output DIR", 2)
    with progress("backing up", None) as advance:
        done = [0]

        def pages(copied: int, _total: int) -> None:
            advance(copied - done[0])
            done[0] = copied

        try:
            source = snapshots(store_settings(database_url, data_dir))
            manifest = asyncio.run(backup_mod.take_backup(source, output, pages))
        except (backup_mod.BackupError, OSError) as exc:
            fail(f"backup failed: {exc}")
    contents = manifest["contents"]
    typer.echo(
        f"ok: {manifest['dialect']} backup in {output}: {len(contents['streams'])} stream(s), "
        f"{contents['tables'].get('ves_events', 0)} events; manifest {output / backup_mod.MANIFEST}"
    )


@backup_app.command("verify")
def backupverify(
    directory: Annotated[Path, typer.Argument(help="A backup directory")],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL backups: a server to test-restore on (a temporary database "
            "is created and dropped); default: $DATABASE_URL",
        ),
    ] = None,
) -> None:
    """Re-check checksums and test-restore into a scratch database, comparing the manifest."""
    configured = store_settings(database_url, None)
    try:
        server = database_config(configured) if configured.DATABASE_URL else None
        restored = asyncio.run(backup_mod.verify_backup(directory, server))
    except (backup_mod.BackupError, OSError) as exc:
        fail(f"backup verify failed: {exc}")
    typer.echo(
        f"ok: {directory}: checksums match and a test restore matches the manifest "
        f"({len(restored['streams'])} stream(s), {restored['tables'].get('ves_events', 0)} events)"
    )


@commands.command("restore")
def restore(
    directory: Annotated[Path, typer.Argument(help="A backup directory")],
    database_url: Annotated[
        str, typer.Option("--database-url", help="Target: postgres://… or sqlite:///path")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a target that holds events or keys")
    ] = False,
    sequencer_public_key: SequencerKey = None,
    allow_unsigned_receipts: AllowUnsigned = False,
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into --database-url, then verify every stream (verify-events)."""
    target = store_settings(database_url, data_dir)
    try:
        where = database_config(target)
        restored = asyncio.run(backup_mod.restore_backup(directory, snapshots(target), force=force))
    except (backup_mod.BackupError, OSError) as exc:
        fail(f"restore failed: {exc}")
    run_on_store(
        database_url,
        data_dir,
        lambda store: backup_mod.record_restore(
            store, directory, restored, force=force, actor=cli_actor()
        ),
    )
    typer.echo(f"ok: restored {directory} into {where.location}; verifying every stream")
    report = verify(
        target,
        None,
        None,
        None,
        key_option=sequencer_public_key,
        deep=False,
        allow_unsigned_receipts=allow_unsigned_receipts,
    )
    finish_report(report, None)
