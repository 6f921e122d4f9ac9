"""``sequencer-cli anchor`` and ``verify-anchor``: put commitments on chain and hold them
against it, on the database itself with the chain the anchoring settings name
(docs/ANCHORING.md; the HTTP routes do the same)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..anchoring.faults import NOT_CONFIGURED, AnchorError, ChainError
from ..runtime.core import AnchoringConfigError, Runtime, open_anchorer
from ..sequencer.commitments import (
    MAX_COMMIT_EVENTS,
    CommitmentEngine,
    CommitmentError,
    CommitmentReason,
)
from ..store.records import CommitmentRow, StreamKey
from .common import DatabaseUrl, DataDir, fail, print_json, run_on_runtime

if TYPE_CHECKING:
    from ..anchoring.anchorer import Anchorer

# The anchoring modules (and with them web3) are imported inside the commands: they take a
# second to import, which every other command would otherwise pay at start.

commands = typer.Typer()

BatchOpt = Annotated[
    uuid.UUID | None, typer.Option("--batch-id", help="The commitment (its batch id)")
]
TenantOpt = Annotated[uuid.UUID | None, typer.Option("--tenant-id", help="Tenant UUID")]
StoreOpt = Annotated[uuid.UUID | None, typer.Option("--store-id", help="Store UUID")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document")]


def _anchorer(runtime: Runtime) -> Anchorer:
    try:
        anchorer = open_anchorer(runtime.settings, runtime.store)
    except AnchoringConfigError as exc:
        fail(f"configuration: {exc}", 2)
    if anchorer is None:
        fail(NOT_CONFIGURED, 2)
    return anchorer


@commands.command("anchor")
def anchor_command(
    batch_id: BatchOpt = None,
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    start: Annotated[
        int | None,
        typer.Option(
            "--from", min=1, help="With --tenant-id/--store-id: commit this range first (with --to)"
        ),
    ] = None,
    end: Annotated[int | None, typer.Option("--to", min=1, help="Last sequence")] = None,
    max_events: Annotated[
        int,
        typer.Option("--max-events", min=1, max=MAX_COMMIT_EVENTS, help="Without --from/--to"),
    ] = 1024,
    pending: Annotated[
        bool, typer.Option("--pending", help="Every unanchored commitment, streams in order")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="With --pending")] = 100,
    finalize: Annotated[
        bool,
        typer.Option(
            "--finalize",
            help="Then run one finality pass: confirm anchors ANCHOR_FINALITY_CONFIRMATIONS "
            "deep, clear those a reorg dropped",
        ),
    ] = False,
    as_json: JsonOpt = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Anchor one commitment (--batch-id), commit a stream's next range and anchor it
    (--tenant-id/--store-id, as the reference's ves-commit-and-anchor), or anchor every
    pending commitment (--pending). Exit 1 when anything could not be anchored."""
    modes = sum([batch_id is not None, tenant_id is not None or store_id is not None, pending])
    if modes != 1:
        fail("give exactly one of --batch-id, --tenant-id with --store-id, or --pending", 2)
    if (tenant_id is None) != (store_id is None):
        fail("--tenant-id and --store-id go together", 2)
    if (start is None) != (end is None):
        fail("--from and --to go together (or neither: the next range up to the head)", 2)
    from ..anchoring.anchorer import AnchorResult

    async def work(runtime: Runtime) -> tuple[list[dict[str, Any]], list[str], dict[str, int]]:
        anchorer = _anchorer(runtime)
        done: list[dict[str, Any]] = []
        failed: list[str] = []
        try:
            if pending:
                sent = await anchorer.anchor_pending(limit)
                done = [AnchorResult("anchored", r).to_json() for r in sent.anchored]
                failed = [f"{r.batch_id}: {why}" for r, why in sent.failed]
            else:
                row = await _target(runtime, batch_id, tenant_id, store_id)
                if row is not None:
                    done = [(await anchorer.anchor(row)).to_json()]
            final: dict[str, int] = {}
            if finalize:
                passed = await anchorer.confirm_pending(10_000)
                final = {
                    "confirmed": len(passed.confirmed),
                    "reanchor": len(passed.reanchor),
                    "waiting": passed.waiting,
                    "disagreeing": len(passed.disagreeing),
                }
            return done, failed, final
        except (AnchorError, ChainError) as exc:
            fail(f"anchor failed: {exc}")
        finally:
            anchorer.chain.close()

    async def _target(
        runtime: Runtime,
        batch: uuid.UUID | None,
        tenant: uuid.UUID | None,
        store: uuid.UUID | None,
    ) -> CommitmentRow | None:
        """The commitment to anchor; None when the stream has nothing new to commit and
        its last commitment is anchored already."""
        if batch is not None:
            row = await runtime.store.get_commitment(batch)
            if row is None:
                fail(f"commitment {batch} not found")
            return row
        assert tenant is not None and store is not None
        stream = StreamKey(tenant, store)
        engine = CommitmentEngine(runtime.store, runtime.store)
        try:
            if start is not None and end is not None:
                return (await engine.create(stream, start, end)).row
            return (await engine.create_next(stream, max_events)).row
        except CommitmentError as exc:
            if exc.reason is CommitmentReason.NOTHING_TO_COMMIT:
                last = await runtime.store.last_commitment(stream)
                if last is None or last.chain_tx_hash is not None:
                    return None
                return last  # committed already, not anchored yet: anchor that
            fail(f"commit refused ({exc.reason.value}): {exc.message}")

    done, failed, final = run_on_runtime(database_url, data_dir, work)
    if as_json:
        print_json({"anchored": done, "failed": failed, "finality": final or None})
    else:
        for item in done:
            typer.echo(
                f"ok: {item['status']} {item['sequence_start']}..{item['sequence_end']} "
                f"({item['batch_id']}) in tx 0x{item['chain_tx_hash']} "
                f"block {item['chain_block_number']}"
            )
        for line in failed:
            typer.echo(f"FAIL: {line}")
        if final:
            typer.echo("finality: " + ", ".join(f"{name} {count}" for name, count in final.items()))
        if not done and not failed:
            typer.echo("ok: nothing pending" if pending else "ok: nothing new to commit or anchor")
    if failed:
        raise typer.Exit(1)


@commands.command("verify-anchor")
def verify_anchor_command(
    batch_id: BatchOpt = None,
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    tx: Annotated[
        str | None,
        typer.Option("--tx", help="With --batch-id: check this transaction's BatchCommitted log"),
    ] = None,
    as_json: JsonOpt = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Hold stored commitments against the registry, field by field: one (--batch-id,
    optionally one transaction's log with --tx) or every anchored commitment of a stream
    (--tenant-id/--store-id). Exit 1 on any mismatch or a commitment the chain lacks."""
    if (batch_id is None) == (tenant_id is None and store_id is None):
        fail("give --batch-id, or --tenant-id with --store-id", 2)
    if batch_id is None and (tenant_id is None or store_id is None):
        fail("--tenant-id and --store-id go together", 2)
    tx_hash: bytes | None = None
    if tx is not None:
        if batch_id is None:
            fail("--tx needs --batch-id", 2)
        text = tx.removeprefix("0x")
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            fail("--tx must be a 32-byte transaction hash in hex", 2)
        tx_hash = bytes.fromhex(text)
    from ..anchoring.anchorer import all_match

    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        anchorer = _anchorer(runtime)
        try:
            if batch_id is not None:
                row = await runtime.store.get_commitment(batch_id)
                if row is None:
                    fail(f"commitment {batch_id} not found")
                rows = [row]
            else:
                assert tenant_id is not None and store_id is not None
                rows = await runtime.store.list_commitments(
                    StreamKey(tenant_id, store_id), anchored=True
                )
            out = []
            for row in rows:
                if tx_hash is not None:
                    reason, checks, block = await anchorer.verify_transaction(row, tx_hash)
                    ok = reason is None and all_match(checks)
                    out.append(
                        {
                            "batch_id": str(row.batch_id),
                            "valid": ok,
                            "reason": reason if reason or ok else "fields_differ",
                            "block_number": block,
                            "fields": [c.to_json() for c in checks],
                        }
                    )
                    continue
                exists, checks = await anchorer.verify(row)
                out.append(
                    {
                        "batch_id": str(row.batch_id),
                        "valid": exists and all_match(checks),
                        "reason": None if exists else "not_on_chain",
                        "fields": [c.to_json() for c in checks],
                    }
                )
            return out
        except ChainError as exc:
            fail(f"verify-anchor: {exc}")
        finally:
            anchorer.chain.close()

    results = run_on_runtime(database_url, data_dir, work)
    if as_json:
        print_json({"results": results, "valid": all(r["valid"] for r in results)})
    else:
        if not results:
            typer.echo("ok: no anchored commitments to verify")
        for r in results:
            if r["valid"]:
                typer.echo(f"ok: {r['batch_id']} matches the chain")
                continue
            bad = [f["field"] for f in r["fields"] if not f["match"]]
            typer.echo(
                f"FAIL: {r['batch_id']}: {r['reason'] or 'mismatch'}"
                + (f" ({', '.join(bad)})" if bad else "")
            )
    if not all(r["valid"] for r in results):
        raise typer.Exit(1)
