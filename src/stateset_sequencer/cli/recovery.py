"""Recovery: export, verify, repair, back up, restore, re-ingest and the post-recovery
checklist. Each command parses its options, opens the store through the composition root
and calls the matching function of ``recovery/``, which holds the logic and is tested on
both backends; this module only renders results and progress."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import Settings
from ..recovery import bulk_ingest as bulk_mod
from ..recovery import doctor as doctor_mod
from ..recovery import export as export_mod
from ..recovery import repair as repair_mod
from ..recovery import verify as verify_mod
from ..recovery.streams import UnknownStream, export_ranges, stream_states
from ..runtime import Runtime, receipt_public_key
from ..runtime.core import AnchoringConfigError, open_anchorer
from ..sequencer.identity import IdentityError
from ..store.errors import ConcurrentWriteError
from ..store.records import CounterState, StreamKey
from ..ves.errors import VesError
from ..ves.signing import parse_public_key
from . import agent as agent_cli
from .common import (
    DatabaseUrl,
    DataDir,
    cli_actor,
    err,
    fail,
    print_json,
    store_settings,
    with_runtime,
)
from .remote import ApiKeyFile, ApiKeyOpt, Url, api_key_from

commands = typer.Typer()

TenantOpt = Annotated[str | None, typer.Option("--tenant-id", help="Tenant UUID")]
StoreOpt = Annotated[str | None, typer.Option("--store-id", help="Store UUID")]
FromOpt = Annotated[int | None, typer.Option("--from", min=1, help="First sequence (default 1)")]
ToOpt = Annotated[int | None, typer.Option("--to", min=1, help="Last sequence (default: head)")]
AllStreamsOpt = Annotated[bool, typer.Option("--all-streams", help="Every stream in the store")]
SequencerKey = Annotated[
    str | None,
    typer.Option(
        "--sequencer-public-key",
        help="Receipt signer's Ed25519 public key (hex); default: the service's key "
        "(VES_SEQUENCER_SIGNING_KEY, VES_SEQUENCER_SIGNING_KEY_FILE, or sequencer.key "
        "beside the data)",
    ),
]
AllowUnsigned = Annotated[
    bool,
    typer.Option(
        "--allow-unsigned-receipts",
        help="Accept receipts stored unsigned (alg none) by older versions; a wrongly "
        "signed receipt is still a finding",
    ),
]


# --- option handling ------------------------------------------------------------------------


def _uuid(value: str, option: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{option}: not a UUID: {value!r}", 2)


def _one_stream(tenant_id: str | None, store_id: str | None, all_streams: bool) -> StreamKey | None:
    """The stream the options name; None for --all-streams."""
    if all_streams:
        if tenant_id is not None or store_id is not None:
            fail("--all-streams cannot be combined with --tenant-id/--store-id", 2)
        return None
    if tenant_id is None or store_id is None:
        fail("give --tenant-id and --store-id (or --all-streams)", 2)
    return StreamKey(_uuid(tenant_id, "--tenant-id"), _uuid(store_id, "--store-id"))


def _optional_stream(tenant_id: str | None, store_id: str | None) -> StreamKey | None:
    if tenant_id is None and store_id is None:
        return None
    if tenant_id is None or store_id is None:
        fail("--tenant-id and --store-id go together", 2)
    return StreamKey(_uuid(tenant_id, "--tenant-id"), _uuid(store_id, "--store-id"))


def _check_range(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end < start:
        fail(f"--to {end} is below --from {start}", 2)


async def _states(runtime: Runtime, stream: StreamKey | None) -> list[CounterState]:
    try:
        return await stream_states(runtime.store, stream)
    except UnknownStream as exc:
        fail(str(exc))


def _name(stream: StreamKey) -> str:
    return f"{stream.tenant_id}/{stream.store_id}"


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (only on a terminal); yields ``advance(n)``."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _sequencer_key(option: str | None, runtime: Runtime) -> bytes | None:
    """The receipt signer's public key: the option, else what the service would use (read,
    never created here)."""
    if option is not None:
        try:
            return parse_public_key(option.strip())
        except VesError as exc:
            fail(f"--sequencer-public-key: {exc}", 2)
    try:
        return receipt_public_key(runtime.settings, runtime.database)
    except IdentityError as exc:
        fail(str(exc))


# --- export-events, verify-export -----------------------------------------------------------


@commands.command("export-events")
def export_events(
    output: Annotated[Path, typer.Option("--output", help="File to write (atomically)")],
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="ndjson (one event per line) or json (an array)")
    ] = "ndjson",
    all_streams: AllStreamsOpt = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Export an agent's outbox instead: unsynced, pushed, acked, rejected or all",
        ),
    ] = None,
    home: agent_cli.HomeOpt = None,
    outbox: agent_cli.OutboxOpt = None,
) -> None:
    """Export events exactly as signed, with receipts, plus FILE.manifest.json. With
    --status, the events of an agent's outbox (--home, --outbox) in the form bulk-ingest
    reads."""
    if fmt not in ("ndjson", "json"):
        fail(f"--format must be ndjson or json, not {fmt!r}", 2)
    if status is not None:
        if tenant_id or store_id or start or end or all_streams or database_url or data_dir:
            fail(
                "--status exports an agent's outbox; the database options (--tenant-id, "
                "--store-id, --from, --to, --all-streams, --database-url, --data-dir) do not apply",
                2,
            )
        if output.is_dir():
            fail(f"--output {output} is a directory", 2)
        agent_cli.export_from_outbox(status, output, fmt, home, outbox)
        return
    if home is not None or outbox is not None:
        fail("--home and --outbox go with --status (an agent's outbox)", 2)
    _check_range(start, end)
    stream = _one_stream(tenant_id, store_id, all_streams)
    if output.is_dir():
        fail(f"--output {output} is a directory", 2)

    async def work(runtime: Runtime) -> dict[str, object]:
        ranges = export_ranges(await _states(runtime, stream), start, end)
        total = sum(max(r.end - r.start + 1, 0) for r in ranges)
        with progress("exporting", total) as advance:
            return await export_mod.export_events(
                runtime.store, ranges, output, "json" if fmt == "json" else "ndjson", advance
            )

    try:
        manifest = asyncio.run(with_runtime(store_settings(database_url, data_dir), work))
    except (export_mod.ExportError, OSError) as exc:
        fail(f"export failed: {exc}")
    streams = manifest["streams"]
    assert isinstance(streams, list)
    typer.echo(
        f"ok: exported {manifest['event_count']} events from {len(streams)} "
        f"stream(s) to {output} (sha256 {manifest['file_sha256']}); "
        f"manifest {export_mod.manifest_path(output)}"
    )


@commands.command("verify-export")
def verify_export(
    file: Annotated[Path, typer.Argument(help="An export file (its manifest beside it)")],
) -> None:
    """Check an export against its manifest: checksum, every record, counts, hash digest."""
    count = 0
    try:
        for _record in export_mod.read_export(file):
            count += 1
    except export_mod.ExportError as exc:
        fail(str(exc))
    typer.echo(f"ok: {file}: {count} events match the manifest")


# --- verify-events --------------------------------------------------------------------------


def _print_report(report: verify_mod.Report) -> None:
    for result in report.streams:
        r = result.run
        state = "ok" if result.first is None else "FAIL"
        typer.echo(
            f"{state}: {_name(r.stream)}: {result.events} events checked "
            f"(sequences {r.start}..{r.end}, counter {r.state.counter})"
        )
    for name, status in report.checks.items():
        typer.echo(f"  {name}: {status}")
    rate = report.events / report.elapsed if report.elapsed > 0 else 0.0
    typer.echo(
        f"{report.events} events in {report.elapsed:.2f}s ({rate:,.0f} events/s); "
        f"{report.total} finding(s)"
    )


def finish_report(report: verify_mod.Report, report_path: Path | None) -> None:
    _print_report(report)
    if report_path is not None:
        try:
            with export_mod.atomic_file(report_path) as handle:
                handle.write(json.dumps(report.to_json(), indent=2).encode("utf-8") + b"\n")
        except OSError as exc:
            fail(f"cannot write the report {report_path}: {exc}")
    first = report.first
    if first is not None:
        where = f"sequence {first.sequence}" if first.sequence is not None else "stream"
        fail(
            f"{_name(first.stream)} first bad {where}: {first.check}.{first.code}: "
            f"{first.message} ({report.total} finding(s) in all"
            + (f"; report {report_path})" if report_path is not None else ")")
        )


def verify(
    configured: Settings,
    stream: StreamKey | None,
    start: int | None,
    end: int | None,
    *,
    key_option: str | None,
    deep: bool,
    allow_unsigned_receipts: bool = False,
) -> verify_mod.Report:
    async def work(runtime: Runtime) -> verify_mod.Report:
        key = _sequencer_key(key_option, runtime)
        states = await _states(runtime, stream)
        total = sum(verify_mod.plan_run(s, start, end).size for s in states)
        anchorer = None
        if deep:
            try:
                anchorer = open_anchorer(runtime.settings, runtime.store)
            except AnchoringConfigError as exc:
                fail(f"configuration: {exc}", 2)
        try:
            with progress("verifying", total) as advance:
                return await verify_mod.verify_streams(
                    runtime.store,
                    states,
                    start,
                    end,
                    sequencer_public_key=key,
                    deep=deep,
                    allow_unsigned_receipts=allow_unsigned_receipts,
                    progress=advance,
                    anchorer=anchorer,
                )
        finally:
            if anchorer is not None:
                anchorer.chain.close()

    return asyncio.run(with_runtime(configured, work))


@commands.command("verify-events")
def verify_events(
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also check anchors on chain")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report")] = None,
    all_streams: AllStreamsOpt = False,
    sequencer_public_key: SequencerKey = None,
    allow_unsigned_receipts: AllowUnsigned = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Verify stored events in one streaming pass: sequence continuity, counter, hashes,
    agent signatures and key validity, receipts (signed, under the sequencer's key), and
    commitments. Exit 1 on any finding."""
    _check_range(start, end)
    stream = _one_stream(tenant_id, store_id, all_streams)
    result = verify(
        store_settings(database_url, data_dir),
        stream,
        start,
        end,
        key_option=sequencer_public_key,
        deep=deep,
        allow_unsigned_receipts=allow_unsigned_receipts,
    )
    finish_report(result, report)


# --- check-gaps and repair-counters ---------------------------------------------------------


@commands.command("check-gaps")
def check_gaps(
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List missing sequence numbers per stream and counters that differ from the
    highest stored event. Exit 1 when anything is found."""
    stream = _optional_stream(tenant_id, store_id)

    async def work(runtime: Runtime) -> list[repair_mod.StreamHealth]:
        states = await _states(runtime, stream)
        return repair_mod.stream_health(states, await runtime.store.sequence_gaps(stream))

    health = asyncio.run(with_runtime(store_settings(database_url, data_dir), work))
    if as_json:
        print_json([h.to_json() for h in health])
    else:
        for h in health:
            typer.echo(h.describe())
    if not all(h.ok for h in health):
        raise typer.Exit(1)


@commands.command("repair-counters")
def repair_counters(
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Change the counters (default: dry run)")
    ] = False,
    allow_lower: Annotated[
        bool,
        typer.Option(
            "--allow-lower",
            help="Also lower counters above the highest stored event (re-issues numbers)",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Show (and with --apply fix) counters that differ from the highest stored event.
    A counter is only ever set to max(sequence_number), with an audit_log row, in one
    transaction."""
    stream = _optional_stream(tenant_id, store_id)
    actor = cli_actor()

    def step(item: repair_mod.CounterPlan, after: CounterState | None) -> None:
        typer.echo(("" if apply else "would: ") + item.describe())
        if after is not None:
            typer.echo(f"  done: counter is now {after.counter} (audit_log row written)")

    async def work(runtime: Runtime) -> int | None:
        plans = repair_mod.plan(await _states(runtime, stream), allow_lower=allow_lower)
        if not plans:
            return None
        try:
            return await repair_mod.repair_counters(
                runtime.store, plans, apply_changes=apply, actor=actor, on_step=step
            )
        except ConcurrentWriteError as exc:
            fail(str(exc))

    refused = asyncio.run(with_runtime(store_settings(database_url, data_dir), work))
    if refused is None:
        typer.echo("ok: every counter equals its stream's highest stored event")
        return
    if not apply:
        typer.echo("dry run: nothing changed; pass --apply to change the counters")
    if refused:
        fail(f"{refused} counter(s) left unchanged (see REFUSED above)")


# --- bulk-ingest ----------------------------------------------------------------------------


@commands.command("bulk-ingest")
def bulk_ingest(
    file: Annotated[Path, typer.Option("--file", help="export-events file, or signed envelopes")],
    url: Url = "http://localhost:8080",
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFile = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1000, help="Events per ingest request")
    ] = 500,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip what the server provably holds already")
    ] = False,
    report_file: Annotated[Path | None, typer.Option("--report", help="JSON report")] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=64,
            help="Streams sent side by side; each one's batches go one after the other, "
            "in file order",
        ),
    ] = bulk_mod.DEFAULT_CONCURRENCY,
) -> None:
    """Re-submit exported or outbox events over HTTP, checking every receipt. Idempotent:
    events already stored come back as replays with their original receipts. Streams are
    sent side by side (--concurrency)."""
    key = api_key_from(api_key, api_key_file)
    try:
        total = bulk_mod.count_records(file)
    except FileNotFoundError:
        fail(f"{file}: no such file", 2)
    except export_mod.ExportError as exc:
        fail(f"{exc} (nothing was sent)")
    try:
        with progress("re-ingesting", total) as advance:
            report = asyncio.run(
                bulk_mod.bulk_ingest(
                    file,
                    url,
                    key,
                    batch_size=batch_size,
                    resume=resume,
                    progress=advance,
                    concurrency=concurrency,
                )
            )
    except bulk_mod.BulkIngestError as exc:
        _write_bulk_report(report_file, exc.report)
        done = exc.report
        fail(f"{exc} (after {done.accepted} accepted, {done.replayed} replayed)")
    _write_bulk_report(report_file, report)
    typer.echo(
        f"{report.total} events: {report.accepted} accepted, {report.replayed} replayed, "
        f"{report.rejected} rejected, {report.skipped} skipped"
        + (f", {report.renumbered} under new sequence numbers" if report.renumbered else "")
    )
    for reason, count in sorted(report.reasons.items()):
        typer.echo(f"  rejected {count}: {reason}")
    if report.rejected:
        raise typer.Exit(1)


def _write_bulk_report(path: Path | None, report: bulk_mod.BulkReport) -> None:
    if path is not None:
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")


# --- doctor ---------------------------------------------------------------------------------


@commands.command("doctor")
def doctor(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="SEQUENCER_URL",
            help="Sequencer base URL; default: the configured HOST and PORT",
        ),
    ] = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFile = None,
    recent_hours: Annotated[
        float,
        typer.Option("--recent-hours", min=0.001, help="Window for the agents check (hours)"),
    ] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document {checks, ok}")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """The post-recovery checklist: health, database, counters, gaps, agents, history,
    a dry-run commitment and anchoring, one PASS/FAIL/SKIP line each. Exit 1 on a FAIL."""
    options = doctor_mod.DoctorOptions(
        settings=store_settings(database_url, data_dir),
        url=url,
        api_key=api_key_from(api_key, api_key_file) or None,
        recent_hours=recent_hours,
    )
    results = asyncio.run(doctor_mod.run_checks(options))
    ok = all(r.status != "FAIL" for r in results)
    if as_json:
        print_json({"checks": [r.to_json() for r in results], "ok": ok})
    else:
        for r in results:
            typer.echo(f"{r.status}  {r.name:<10}  {r.detail}")
        typer.echo("ok: nothing failed" if ok else "FAILED: see the FAIL lines above")
    if not ok:
        raise typer.Exit(1)
