"""``sequencer-cli`` commands of the recovery toolkit (export-events, verify-events, …).

Each command is a thin shell: it parses options, opens the store with ``clikit.with_store``
and calls the matching module (``export``, ``verify``, ``repair``, ``backup``), which hold
the logic and are tested on both backends.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..clikit import DatabaseUrl, DataDir, err, fail, print_json, redact, with_store
from ..config import Settings
from ..sequencer.identity import SEQUENCER_KEY_FILE, IdentityError, signing_seed
from ..store.base import ConcurrentWriteError, CounterState, Store, StreamKey
from ..store.factory import describe
from ..ves.errors import VesError
from ..ves.signing import Signer, parse_public_key
from . import backup as backup_mod
from . import bulk_ingest as bulk_mod
from . import export as export_mod
from . import repair as repair_mod
from . import verify as verify_mod

TenantOpt = Annotated[str | None, typer.Option("--tenant-id", help="Tenant UUID")]
StoreOpt = Annotated[str | None, typer.Option("--store-id", help="Store UUID")]
FromOpt = Annotated[int | None, typer.Option("--from", min=1, help="First sequence (default 1)")]
ToOpt = Annotated[int | None, typer.Option("--to", min=1, help="Last sequence (default: head)")]
AllStreamsOpt = Annotated[bool, typer.Option("--all-streams", help="Every stream in the store")]
SequencerKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--sequencer-public-key",
        help="Receipt signer's Ed25519 public key (hex); default: from "
        "VES_SEQUENCER_SIGNING_KEY or DATA_DIR/sequencer.key",
    ),
]


# --- shared option handling -------------------------------------------------------------------


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


async def _states(store: Store, stream: StreamKey | None) -> list[CounterState]:
    states = await store.counter_states(stream)
    if stream is not None and not states:
        fail(f"no stream {stream.tenant_id}/{stream.store_id} in this database")
    return states


def _name(stream: StreamKey) -> str:
    return f"{stream.tenant_id}/{stream.store_id}"


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
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


def _sequencer_key(
    option: str | None, database_url: str | None, data_dir: Path | None
) -> bytes | None:
    """The receipt signer's public key: the option, else the configured seed, else the
    embedded default's key file (read only, never created here)."""
    if option is not None:
        try:
            return parse_public_key(option.strip())
        except VesError as exc:
            fail(f"--sequencer-public-key: {exc}", 2)
    settings = Settings()
    folder = data_dir if data_dir is not None else settings.DATA_DIR
    url = database_url if database_url is not None else settings.DATABASE_URL
    try:
        if settings.VES_SEQUENCER_SIGNING_KEY:
            seed = signing_seed(settings.VES_SEQUENCER_SIGNING_KEY, None)
        elif describe(url, folder)[0] == "sqlite" and (folder / SEQUENCER_KEY_FILE).is_file():
            seed = signing_seed(None, folder)
        else:
            return None
    except IdentityError as exc:
        fail(str(exc))
    return None if seed is None else Signer(seed).public_key


# --- export-events ----------------------------------------------------------------------------


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
) -> None:
    """Export events exactly as signed, with receipts, plus FILE.manifest.json."""
    if fmt not in ("ndjson", "json"):
        fail(f"--format must be ndjson or json, not {fmt!r}", 2)
    _check_range(start, end)
    stream = _one_stream(tenant_id, store_id, all_streams)
    if output.is_dir():
        fail(f"--output {output} is a directory", 2)

    async def work(store: Store) -> dict[str, Any]:
        ranges = []
        for s in await _states(store, stream):
            top = max(s.counter or 0, s.max_sequence)
            ranges.append(export_mod.StreamRange(s.stream, start or 1, min(end or top, top)))
        total = sum(max(r.end - r.start + 1, 0) for r in ranges)
        with _progress("exporting", total) as advance:
            return await export_mod.export_events(
                store,
                ranges,
                output,
                "json" if fmt == "json" else "ndjson",
                advance,
            )

    try:
        manifest = asyncio.run(with_store(database_url, data_dir, work))
    except (export_mod.ExportError, OSError) as exc:
        fail(f"export failed: {exc}")
    typer.echo(
        f"ok: exported {manifest['event_count']} events from {len(manifest['streams'])} "
        f"stream(s) to {output} (sha256 {manifest['file_sha256']}); "
        f"manifest {export_mod.manifest_path(output)}"
    )


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


# --- verify-events ----------------------------------------------------------------------------


async def run_verification(
    store: Store,
    stream: StreamKey | None,
    start: int | None,
    end: int | None,
    *,
    sequencer_public_key: bytes | None,
    deep: bool,
) -> verify_mod.Report:
    """Verify one stream or every stream; shared by verify-events and restore."""
    runs = [verify_mod.plan_run(s, start, end) for s in await _states(store, stream)]
    checks = verify_mod.default_checks(store, sequencer_public_key=sequencer_public_key, deep=deep)
    total = sum(max(r.end - r.start + 1, 0) for r in runs)
    with _progress("verifying", total) as advance:
        return await verify_mod.Verifier(store, checks).run(runs, advance)


def print_report(report: verify_mod.Report) -> None:
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


def _write_report(path: Path, report: verify_mod.Report) -> None:
    try:
        with export_mod.atomic_file(path) as handle:
            handle.write(json.dumps(report.to_json(), indent=2).encode("utf-8") + b"\n")
    except OSError as exc:
        fail(f"cannot write the report {path}: {exc}")


def finish_report(report: verify_mod.Report, report_path: Path | None) -> None:
    print_report(report)
    if report_path is not None:
        _write_report(report_path, report)
    first = report.first
    if first is not None:
        where = f"sequence {first.sequence}" if first.sequence is not None else "stream"
        fail(
            f"{_name(first.stream)} first bad {where}: {first.check}.{first.code}: "
            f"{first.message} ({report.total} finding(s) in all"
            + (f"; report {report_path})" if report_path is not None else ")")
        )


def verify_events(
    tenant_id: TenantOpt = None,
    store_id: StoreOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also check anchors on chain")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report")] = None,
    all_streams: AllStreamsOpt = False,
    sequencer_public_key: SequencerKeyOpt = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Verify stored events in one streaming pass: sequence continuity, counter, hashes,
    agent signatures and key validity, receipts, and commitments. Exit 1 on any finding."""
    _check_range(start, end)
    stream = _one_stream(tenant_id, store_id, all_streams)
    key = _sequencer_key(sequencer_public_key, database_url, data_dir)
    result = asyncio.run(
        with_store(
            database_url,
            data_dir,
            lambda store: run_verification(
                store, stream, start, end, sequencer_public_key=key, deep=deep
            ),
        )
    )
    finish_report(result, report)


# --- check-gaps and repair-counters -----------------------------------------------------------


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

    async def work(store: Store) -> tuple[list[CounterState], Any]:
        return await _states(store, stream), await store.sequence_gaps(stream)

    states, gaps = asyncio.run(with_store(database_url, data_dir, work))
    grouped = repair_mod.group_gaps(gaps)
    bad_counters = {s.stream for s in repair_mod.mismatched(states)}
    if as_json:
        print_json(
            [
                {
                    "tenant_id": str(s.stream.tenant_id),
                    "store_id": str(s.stream.store_id),
                    "counter": s.counter,
                    "max_sequence": s.max_sequence,
                    "event_count": s.event_count,
                    "missing": [
                        [g.first_missing, g.last_missing] for g in grouped.get(s.stream, [])
                    ],
                    "counter_mismatch": s.stream in bad_counters,
                }
                for s in states
            ]
        )
    else:
        for s in states:
            problems = []
            if s.stream in grouped:
                problems.append(f"missing {repair_mod.format_ranges(grouped[s.stream])}")
            if s.stream in bad_counters:
                problems.append(f"counter {s.counter} != highest stored event {s.max_sequence}")
            typer.echo(
                f"{'GAPS' if problems else 'ok'}: {_name(s.stream)}: {s.event_count} events, "
                f"counter {s.counter}" + (f"; {'; '.join(problems)}" if problems else "")
            )
    if grouped or bad_counters:
        raise typer.Exit(1)


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
    actor = f"sequencer-cli:{getpass.getuser()}"

    async def work(store: Store) -> int:
        plans = repair_mod.plan(await _states(store, stream), allow_lower=allow_lower)
        if not plans:
            typer.echo("ok: every counter equals its stream's highest stored event")
            return 0
        refused = 0
        for item in plans:
            typer.echo(("" if apply else "would: ") + item.describe())
            if item.refused is not None:
                refused += 1
                continue
            if apply:
                try:
                    after = await repair_mod.apply(store, item, actor=actor)
                except ConcurrentWriteError as exc:
                    fail(str(exc))
                typer.echo(f"  done: counter is now {after.counter} (audit_log row written)")
        if not apply:
            typer.echo("dry run: nothing changed; pass --apply to change the counters")
        return refused

    refused = asyncio.run(with_store(database_url, data_dir, work))
    if refused:
        fail(f"{refused} counter(s) left unchanged (see REFUSED above)")


# --- backup, backup verify, restore -----------------------------------------------------------

backup_app = typer.Typer(
    help="Back up the database (pg_dump -Fc or SQLite online backup) with a manifest.",
    no_args_is_help=False,
)


def _data_dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else Settings().DATA_DIR


def _url(database_url: str | None) -> str | None:
    return database_url if database_url is not None else Settings().DATABASE_URL


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
    with _progress("backing up", None) as advance:
        done = [0]

        def pages(copied: int, _total: int) -> None:
            advance(copied - done[0])
            done[0] = copied

        try:
            manifest = asyncio.run(
                backup_mod.create_backup(_url(database_url), _data_dir(data_dir), output, pages)
            )
        except (backup_mod.BackupError, OSError) as exc:
            fail(f"backup failed: {exc}")
    contents = manifest["contents"]
    typer.echo(
        f"ok: {manifest['dialect']} backup in {output}: {len(contents['streams'])} stream(s), "
        f"{contents['tables'].get('ves_events', 0)} events; manifest {output / backup_mod.MANIFEST}"
    )


@backup_app.command("verify")
def backup_verify(
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
    try:
        restored = asyncio.run(backup_mod.verify_backup(directory, _url(database_url)))
    except (backup_mod.BackupError, OSError) as exc:
        fail(f"backup verify failed: {exc}")
    typer.echo(
        f"ok: {directory}: checksums match and a test restore matches the manifest "
        f"({len(restored['streams'])} stream(s), {restored['tables'].get('ves_events', 0)} events)"
    )


def restore(
    directory: Annotated[Path, typer.Argument(help="A backup directory")],
    database_url: Annotated[
        str, typer.Option("--database-url", help="Target: postgres://… or sqlite:///path")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a target that holds events or keys")
    ] = False,
    sequencer_public_key: SequencerKeyOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into --database-url, then verify every stream (verify-events)."""
    folder = _data_dir(data_dir)
    try:
        asyncio.run(backup_mod.restore(directory, database_url, folder, force=force))
    except (backup_mod.BackupError, OSError) as exc:
        fail(f"restore failed: {exc}")
    typer.echo(f"ok: restored {directory} into {redact(database_url)}; verifying every stream")
    key = _sequencer_key(sequencer_public_key, database_url, data_dir)
    report = asyncio.run(
        with_store(
            database_url,
            data_dir,
            lambda store: run_verification(
                store, None, None, None, sequencer_public_key=key, deep=False
            ),
        )
    )
    finish_report(report, None)


# --- bulk-ingest ------------------------------------------------------------------------------


def bulk_ingest(
    file: Annotated[Path, typer.Option("--file", help="export-events file, or signed envelopes")],
    url: Annotated[
        str, typer.Option("--url", envvar="SEQUENCER_URL", help="Sequencer base URL")
    ] = "http://localhost:8080",
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="SEQUENCER_API_KEY", help="API key with write access"),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="File holding the API key")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1000)] = 500,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip what the server provably holds already")
    ] = False,
    report_file: Annotated[Path | None, typer.Option("--report", help="JSON report")] = None,
) -> None:
    """Re-submit exported or outbox events over HTTP, checking every receipt. Idempotent:
    events already stored come back as replays with their original receipts."""
    key = api_key
    if api_key_file is not None:
        try:
            key = api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{api_key_file}: {exc}", 2)
    try:
        total = bulk_mod.count_records(file)
    except FileNotFoundError:
        fail(f"{file}: no such file", 2)
    except export_mod.ExportError as exc:
        fail(f"{exc} (nothing was sent)")
    try:
        with _progress("re-ingesting", total) as advance:
            report = asyncio.run(
                bulk_mod.bulk_ingest(
                    file, url, key, batch_size=batch_size, resume=resume, progress=advance
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


# --- doctor -----------------------------------------------------------------------------------


def doctor(
    url: Annotated[
        str, typer.Option("--url", envvar="SEQUENCER_URL", help="Sequencer base URL")
    ] = "http://localhost:8080",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="SEQUENCER_API_KEY", help="API key: also read history via HTTP"
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="File holding the API key")
    ] = None,
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
    from . import doctor as doctor_mod  # here, not at the top: one edit point in this file

    key = api_key
    if api_key_file is not None:
        try:
            key = api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{api_key_file}: {exc}", 2)
    options = doctor_mod.options_from_env(
        url=url,
        api_key=key or None,
        database_url=_url(database_url),
        data_dir=_data_dir(data_dir),
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


def register(app: typer.Typer) -> None:
    """Add the recovery commands to the top-level command tree."""
    app.command("doctor")(doctor)
    app.command("bulk-ingest")(bulk_ingest)
    app.command("export-events")(export_events)
    app.command("verify-export")(verify_export)
    app.command("verify-events")(verify_events)
    app.command("check-gaps")(check_gaps)
    app.command("repair-counters")(repair_counters)
    app.add_typer(backup_app, name="backup")
    app.command("restore")(restore)
