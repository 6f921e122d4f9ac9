"""``sequencer-cli commit``: commit a stream's events into the next Merkle commitment, on
the database itself (docs/PROTOCOL.md §6-§7; the HTTP route does the same)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from ..sequencer.commitments import (
    MAX_COMMIT_EVENTS,
    CommitmentEngine,
    CommitmentError,
    CommitmentReason,
    Created,
)
from ..store.ports import Store
from ..store.records import StreamKey
from .common import DatabaseUrl, DataDir, fail, print_json, run_on_store

commands = typer.Typer()


@commands.command("commit")
def commit_command(
    tenant_id: Annotated[uuid.UUID, typer.Option("--tenant-id", help="Tenant UUID")],
    store_id: Annotated[uuid.UUID, typer.Option("--store-id", help="Store UUID")],
    start: Annotated[
        int | None, typer.Option("--from", min=1, help="First sequence (with --to)")
    ] = None,
    end: Annotated[int | None, typer.Option("--to", min=1, help="Last sequence")] = None,
    max_events: Annotated[
        int,
        typer.Option(
            "--max-events",
            min=1,
            max=MAX_COMMIT_EVENTS,
            help="Without --from/--to: commit from the last commitment's end up to the head, "
            "at most this many events",
        ),
    ] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Commit the next range of a stream. The same range again prints the stored
    commitment, nothing new to commit is not an error, and a range that does not start
    where the last one ends is refused."""
    if (start is None) != (end is None):
        fail("--from and --to go together (or neither: the next range up to the head)", 2)
    stream = StreamKey(tenant_id, store_id)

    async def work(store: Store) -> Created:
        engine = CommitmentEngine(store, store)
        if start is not None and end is not None:
            return await engine.create(stream, start, end)
        return await engine.create_next(stream, max_events)

    try:
        made = run_on_store(database_url, data_dir, work)
    except CommitmentError as exc:
        if exc.reason is CommitmentReason.NOTHING_TO_COMMIT:
            # Not a failure: what is stored is committed already (by the worker, perhaps),
            # so a cron job or a script may run this as often as it likes.
            typer.echo(f"ok: nothing to commit ({exc.message})")
            return
        fail(f"commit refused ({exc.reason.value}): {exc.message}")
    row = made.row
    if as_json:
        print_json(
            {
                "batch_id": str(row.batch_id),
                "created": made.created,
                "sequence_start": row.sequence_start,
                "sequence_end": row.sequence_end,
                "leaf_count": row.leaf_count,
                "tree_depth": row.tree_depth,
                "merkle_root": bytes(row.merkle_root).hex(),
                "prev_state_root": bytes(row.prev_state_root).hex(),
                "new_state_root": bytes(row.new_state_root).hex(),
            }
        )
        return
    verb = "committed" if made.created else "already committed"
    typer.echo(
        f"ok: {verb} {row.sequence_start}..{row.sequence_end} as {row.batch_id} "
        f"(root {bytes(row.merkle_root).hex()}, state {bytes(row.new_state_root).hex()})"
    )
