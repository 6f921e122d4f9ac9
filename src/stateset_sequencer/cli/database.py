"""The database: apply, inspect and roll back schema migrations."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ..runtime import Runtime
from ..store.records import MigrationStatus
from .common import DatabaseUrl, DataDir, run_on_store, store_settings, with_runtime

migrate_app = typer.Typer(
    help="Apply, inspect or roll back schema migrations.", no_args_is_help=False
)


async def _migrate(runtime: Runtime) -> tuple[list[int], str]:
    return await runtime.store.migrate(), runtime.database.display


@migrate_app.callback(invoke_without_command=True)
def migrate(ctx: typer.Context, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Apply pending migrations (the default action)."""
    if ctx.invoked_subcommand is not None:
        return
    applied, where = asyncio.run(with_runtime(store_settings(database_url, data_dir), _migrate))
    if applied:
        typer.echo(f"ok: applied migrations {', '.join(f'{v:03d}' for v in applied)} on {where}")
    else:
        typer.echo(f"ok: schema is up to date on {where}")


@migrate_app.command("status")
def migrate_status(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """List every migration and whether it is applied."""
    rows: list[MigrationStatus] = run_on_store(
        database_url, data_dir, lambda store: store.migration_status()
    )
    for row in rows:
        state = "applied" if row.applied else "pending"
        if row.applied and not row.checksum_ok:
            state = "EDITED AFTER APPLYING"
        typer.echo(f"{row.version:03d}  {row.name:<24} {state}")
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
