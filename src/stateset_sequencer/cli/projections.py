"""``sequencer-cli projections``: recompute the projection documents from the log, on
the database itself (docs/PROJECTIONS.md)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from ..sequencer.projections import rebuild
from ..store.ports import Store
from ..store.records import StreamKey
from .common import DatabaseUrl, DataDir, fail, print_json, run_on_store, settings

projections_app = typer.Typer(
    help="Projections: documents folded from each entity's events (no server needed).",
    no_args_is_help=True,
)

TenantOpt = Annotated[
    uuid.UUID | None, typer.Option("--tenant-id", help="Only this tenant's streams")
]
StoreOpt = Annotated[
    uuid.UUID | None, typer.Option("--store-id", help="Only this store (needs --tenant-id)")
]


@projections_app.command("rebuild")
def rebuild_command(
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Delete the chosen streams' documents and checkpoints (every stream's by default)
    and fold them again from the log, as the worker does. A running worker may go on
    meanwhile; documents are missing or behind until the rebuild reaches them."""
    if store_id is not None and tenant_id is None:
        fail("--store-id needs --tenant-id", 2)
    batch_size = settings().PROJECTION_BATCH_SIZE

    async def work(store: Store) -> dict[StreamKey, int]:
        streams: list[StreamKey] | None = None
        if store_id is not None and tenant_id is not None:
            streams = [StreamKey(tenant_id, store_id)]
        elif tenant_id is not None:
            streams = [s for s, _ in await store.list_streams() if s.tenant_id == tenant_id]
        return await rebuild(store, store, streams, batch_size=batch_size)

    folded = run_on_store(database_url, data_dir, work)
    if as_json:
        print_json(
            {
                "streams": [
                    {"tenant_id": str(s.tenant_id), "store_id": str(s.store_id), "checkpoint": n}
                    for s, n in folded.items()
                ]
            }
        )
        return
    events = sum(folded.values())
    typer.echo(f"ok: rebuilt the projections of {len(folded)} streams ({events} events)")
