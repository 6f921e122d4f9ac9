"""``sequencer-cli audit``: verify the audit log's hash chain and take checkpoints of it,
offline, on the database itself (docs/PROTOCOL.md, docs/RUNBOOK.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..sequencer.audit import ChainReport, CheckpointError, parse_checkpoint, verify_chain
from .common import DatabaseUrl, DataDir, fail, print_json, run_on_store

audit_app = typer.Typer(
    help="Verify the tamper-evident audit log and take checkpoints of it (no server needed).",
    no_args_is_help=True,
)


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            help="SEQ:HASH from `audit checkpoint`: the log must still extend it",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Re-hash every entry from the first; exit 1 naming the first broken entry."""
    # Checked before the database is opened: a typo must not look like a broken log.
    try:
        mark = None if checkpoint is None else parse_checkpoint(checkpoint)
    except CheckpointError as exc:
        fail(f"--checkpoint: {exc}", 2)
    report: ChainReport = run_on_store(
        database_url, data_dir, lambda store: verify_chain(store, mark)
    )
    if as_json:
        print_json(report.as_json())
    if report.fault is not None:
        fail(f"audit log broken at entry {report.fault.chain_seq}: {report.fault.message}")
    if not as_json:
        head = "empty log" if report.head is None else f"head {report.head}"
        extends = f"; extends checkpoint {mark}" if mark is not None else ""
        typer.echo(f"audit log verified: {report.entries} entries, {head}{extends}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Verify the chain, then print its head as SEQ:HASH, to keep outside the database."""
    report: ChainReport = run_on_store(database_url, data_dir, lambda store: verify_chain(store))
    if report.fault is not None:
        fail(f"audit log broken at entry {report.fault.chain_seq}: {report.fault.message}")
    if report.head is None:
        fail("the audit log is empty: there is nothing to checkpoint yet")
    if as_json:
        print_json(report.head.as_json())
    else:
        typer.echo(str(report.head))
