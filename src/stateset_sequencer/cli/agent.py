"""``sequencer-cli agent …``, ``sync-agent`` and the outbox side of ``export-events``:
the offline-first agent (docs/AGENT.md). Each command opens the agent's home
(``--home``, ``$SEQUENCER_HOME``, ``~/.sequencer``), does one step of
:class:`~stateset_sequencer.agent.service.AgentService`, and says what happened in one
line (``--json`` for scripts). Re-running any of them is safe.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..agent.config import AgentConfig, AgentHome, ConfigError, normalise_urls
from ..agent.files import AgentFileError, backup_outbox, export_outbox, restore_outbox
from ..agent.keystore import KeyStore, KeyStoreError
from ..agent.outbox import STATUS_FILTERS, Outbox, OutboxError, OutboxEvent
from ..agent.reports import UNREACHABLE, AgentError, describe_fault
from ..agent.service import AgentService
from ..client import ReceiptMismatch, SequencerError
from ..ves.codec import parse_rfc3339
from ..ves.errors import VesError
from ..ves.jsontext import load_json
from .common import err, fail, print_json, read_text
from .remote import api_key_from

T = TypeVar("T")

agent_app = typer.Typer(
    help="The offline-first agent: sign into a local outbox, push, pull, sync (docs/AGENT.md).",
    no_args_is_help=True,
)
commands = typer.Typer()

HomeOpt = Annotated[
    Path | None,
    # No envvar here: default_home() reads $SEQUENCER_HOME itself, so that a command
    # can tell an explicit --home (an outbox wanted) from the environment's.
    typer.Option("--home", help="Agent directory (default: $SEQUENCER_HOME or ~/.sequencer)"),
]
OutboxOpt = Annotated[
    Path | None, typer.Option("--outbox", help="Outbox file (default: HOME/outbox.db)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout")]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option("--admin-api-key", help="A key that may register agent keys (tenant admin)"),
]
AdminKeyFileOpt = Annotated[
    Path | None, typer.Option("--admin-api-key-file", help="File holding that key")
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, max=1000, help="Events per request (1..1000)")
]


def _home(home: Path | None) -> AgentHome:
    return AgentHome.resolve(home)


@contextmanager
def _opened(home: Path | None, outbox: Path | None) -> Iterator[AgentService]:
    """The configured agent with its outbox open; every agent-side fault becomes one line."""
    with _faults():
        place = _home(home)
        config = place.load()
        with Outbox(place.outbox_path(outbox, config)) as box:
            yield AgentService(config, box, KeyStore(place.root))


@contextmanager
def _faults() -> Iterator[None]:
    try:
        yield
    except (ConfigError, AgentFileError) as exc:
        fail(str(exc))
    except OutboxError as exc:
        fail(f"{exc.reason}: {exc.message}")
    except KeyStoreError as exc:
        fail(f"{exc.reason}: {exc.message}")
    except AgentError as exc:
        fail(f"{exc.reason}: {exc.message}")
    except SequencerError as exc:
        fail(describe_fault(exc))
    except ReceiptMismatch as exc:
        fail(f"receipt_not_trusted: {exc}")
    except UNREACHABLE as exc:
        fail(f"sequencer unreachable: {describe_fault(exc)} (the events stay in the outbox)")


def _run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


def _uuid(value: str, option: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{option}: not a UUID: {value!r}", 2)


def _emit_json_or(as_json: bool, value: dict[str, Any], line: str) -> None:
    if as_json:
        print_json(value)
    else:
        typer.echo(line)


# --- init -----------------------------------------------------------------------------------


@agent_app.command("init")
def init(
    url: Annotated[
        list[str], typer.Option("--url", help="Sequencer base URL (repeat, or comma-separate)")
    ],
    tenant_id: Annotated[str, typer.Option("--tenant-id", help="Tenant UUID")],
    store_id: Annotated[str, typer.Option("--store-id", help="Store UUID")],
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="SEQUENCER_API_KEY", help="The agent's API key"),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="File holding the agent's API key")
    ] = None,
    admin_api_key: AdminKeyOpt = None,
    admin_api_key_file: AdminKeyFileOpt = None,
    agent_id: Annotated[
        str | None, typer.Option("--agent-id", help="Agent UUID (default: kept, or a new one)")
    ] = None,
    ves_version: Annotated[
        int,
        typer.Option("--ves-version", min=1, max=2, help="Signing version (2 signs the controls)"),
    ] = 2,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the key now (online)")
    ] = True,
    allow_unsigned_receipts: Annotated[
        bool, typer.Option("--allow-unsigned-receipts", help="Accept receipts without signature")
    ] = False,
    repin: Annotated[
        bool, typer.Option("--repin", help="Trust the sequencer's current receipt key again")
    ] = False,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a configuration for another tenant/store/agent")
    ] = False,
) -> None:
    """Create the agent's key and outbox, register the key, pin the sequencer's receipt key,
    and record the configuration. Safe to re-run: the key and the outbox are kept."""
    tenant, store = _uuid(tenant_id, "--tenant-id"), _uuid(store_id, "--store-id")
    key_text = api_key_from(api_key, api_key_file)
    admin_key = api_key_from(admin_api_key, admin_api_key_file)
    place = _home(home)
    with _faults():
        urls = normalise_urls(url)
        previous: AgentConfig | None = None
        if place.config_path.exists():
            previous = place.load()
        chosen = _uuid(agent_id, "--agent-id") if agent_id else None
        if previous is not None:
            same = (previous.tenant_id, previous.store_id) == (tenant, store) and chosen in (
                None,
                previous.agent_id,
            )
            if not same and not force:
                fail(
                    f"{place.config_path} is set up for agent {previous.agent_id} on "
                    f"{previous.tenant_id}/{previous.store_id}; use another --home, or --force",
                    2,
                )
        agent = chosen or (previous.agent_id if previous else uuid.uuid4())
        config = AgentConfig(
            agent_id=agent,
            tenant_id=tenant,
            store_id=store,
            urls=urls,
            api_key=key_text if key_text is not None else (previous.api_key if previous else None),
            ves_version=ves_version,
            sequencer_public_key=None
            if repin or previous is None
            else previous.sequencer_public_key,
            allow_unsigned_receipts=allow_unsigned_receipts,
            outbox=str(outbox) if outbox else (previous.outbox if previous else None),
        )
        keys = KeyStore(place.root)
        try:
            current = keys.current(agent)
            created = False
        except KeyStoreError:
            current = keys.create(agent)
            created = True
        with Outbox(place.outbox_path(None, config)) as box:
            service = AgentService(config, box, keys)
            if register:
                answer = _run(service.register_current_key(admin_key))
                err.print(f"key {current.key_id}: {answer.get('message') or 'registered'}")
                config = _run(service.pinned_config())
        place.save(config)
    typer.echo(
        f"ok: agent {agent} on {tenant}/{store}, key {current.key_id} "
        f"({'created' if created else 'kept'}), config {place.config_path}"
    )


# --- emit -----------------------------------------------------------------------------------


def _payload(text: str) -> Any:
    source = text
    if text.startswith("@"):
        source = read_text(Path(text[1:]))
    elif text == "-":
        source = sys.stdin.read()
    try:
        return load_json(source)
    except ValueError as exc:
        fail(f"--payload is not JSON: {exc}", 2)


def _base_version(text: str | None) -> int | str | None:
    if text is None or text == "none":
        return None
    if text == "auto":
        return "auto"
    if re.fullmatch(r"\d{1,16}", text):
        return int(text)
    fail(f"--base-version must be auto, none or a number, not {text!r}", 2)


@agent_app.command("emit")
def emit(
    entity_type: Annotated[str, typer.Option("--entity-type", help="Kind of entity, e.g. order")],
    entity_id: Annotated[str, typer.Option("--entity-id", help="The entity the event is about")],
    event_type: Annotated[
        str, typer.Option("--event-type", help="What happened, e.g. order.created")
    ],
    payload: Annotated[str, typer.Option("--payload", help="JSON, @file, or - for stdin")],
    base_version: Annotated[
        str | None,
        typer.Option("--base-version", help="auto (this outbox's view), none, or N"),
    ] = None,
    command_id: Annotated[
        str | None, typer.Option("--command-id", help="UUID naming the intent, for exactly-once")
    ] = None,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign an event (VES v2 unless configured otherwise) and append it to the outbox.
    Works offline; `agent push` sends it."""
    body = _payload(payload)
    base = _base_version(base_version)
    command = _uuid(command_id, "--command-id") if command_id else None
    with _opened(home, outbox) as service:
        event = service.emit(
            entity_type, entity_id, event_type, body, base_version=base, command_id=command
        )
    _emit_json_or(
        as_json,
        event.to_json(),
        f"ok: {event.event_id} queued as #{event.local_seq}"
        + (
            f" (base version {event.envelope.base_version})"
            if event.envelope.base_version is not None
            else ""
        ),
    )


# --- push, pull, sync -------------------------------------------------------------------------


def _refusals(report: dict[str, Any]) -> None:
    refused = int(report.get("rejected", 0)) + int(report.get("conflicts", 0))
    if refused:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.get("reasons", {}).items()))
        err.print(
            f"warning: {refused} event(s) refused ({reasons}); they stay in the outbox: "
            "`sequencer-cli agent status`, `agent conflicts`, `agent rebase`"
        )
        raise typer.Exit(1)


@agent_app.command("push")
def push(
    batch_size: BatchOpt = 100,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the unsynced events in order; record each verified receipt; move the cursor.
    Exit 1 if the sequencer refused some (they stay, with the reason)."""
    with _opened(home, outbox) as service:
        report = _run(service.push(batch_size)).to_json()
    _emit_json_or(
        as_json,
        report,
        f"ok: sent {report['sent']} in {report['batches']} batch(es): acked {report['acked']}, "
        f"rejected {report['rejected']}, conflicts {report['conflicts']}; "
        f"cursor {report['cursor']}",
    )
    if report["cursor_error"]:
        err.print(f"warning: the cursor was not moved: {report['cursor_error']}")
    _refusals(report)


@agent_app.command("pull")
def pull(home: HomeOpt = None, outbox: OutboxOpt = None, as_json: JsonOpt = False) -> None:
    """Fetch the stream from the last pulled sequence, verifying each event's agent
    signature and receipt before keeping it."""
    with _opened(home, outbox) as service:
        report = _run(service.pull()).to_json()
    _emit_json_or(
        as_json,
        report,
        f"ok: pulled {report['pulled']} ({report['own']} our own), up to sequence "
        f"{report['last_sequence']} of {report['head']}",
    )


@agent_app.command("sync")
def sync(
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep syncing; back off while down")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between rounds")
    ] = 2.0,
    max_backoff: Annotated[
        float, typer.Option("--max-backoff", min=0.1, help="Longest wait while down (seconds)")
    ] = 60.0,
    rounds: Annotated[
        int | None, typer.Option("--rounds", min=1, help="With --watch: stop after N rounds")
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live/--no-live",
            help="With --watch: start a round early when the server's event stream has news",
        ),
    ] = True,
    batch_size: BatchOpt = 100,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push, then pull. With --watch, again every --interval seconds until stopped
    (Ctrl-C), waiting longer while the sequencer is unreachable; with --live (the
    default) a new event on the server's stream starts the next round at once."""
    with _opened(home, outbox) as service:
        if watch:
            try:
                done = _run(
                    service.watch(
                        batch_size=batch_size,
                        interval_s=interval,
                        max_backoff_s=max_backoff,
                        rounds=rounds,
                        on_round=lambda line: err.print(line),
                        live=live,
                    )
                )
            except KeyboardInterrupt:
                done = -1
            typer.echo(f"ok: stopped after {done} round(s)" if done >= 0 else "ok: stopped")
            return
        pushed, pulled = _run(service.sync(batch_size))
    report = {"push": pushed.to_json(), "pull": pulled.to_json()}
    _emit_json_or(
        as_json,
        report,
        f"ok: pushed {pushed.sent} (acked {pushed.acked}, rejected {pushed.rejected}, conflicts "
        f"{pushed.conflicts}); pulled {pulled.pulled}, up to {pulled.last_sequence} of "
        f"{pulled.head}",
    )
    _refusals(report["push"])


@agent_app.command("status")
def status(
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Do not ask the sequencer")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Counts by state, the oldest unsynced event, the last sync, conflicts, and the lag
    behind the stream's head from the server cursor."""
    with _opened(home, outbox) as service:
        report = _run(service.status(online=not offline))
    if as_json:
        print_json(report)
        return
    counts = " ".join(f"{k}={v}" for k, v in report["counts"].items())
    server = report["server"]
    reach = (
        "not asked"
        if server["reachable"] is None
        else ("reachable" if server["reachable"] else f"unreachable ({server.get('error')})")
    )
    typer.echo(f"agent {report['agent_id']} key {report['key_id']} outbox {report['outbox']}")
    typer.echo(f"  events: {counts}")
    typer.echo(
        f"  unsynced: {report['unsynced']} (oldest {report['oldest_unsynced'] or '-'}); "
        f"conflicts: {report['conflicts']}"
    )
    typer.echo(
        f"  last sync: {report['last_sync_at'] or '-'}; "
        f"pulled to {report['last_pulled_sequence']}; "
        f"cursor {report['server_cursor']}; lag {report['lag']}"
    )
    typer.echo(f"  sequencer: {reach}")
    if report["last_error"]:
        typer.echo(f"  last error: {report['last_error']}")


@agent_app.command("conflicts")
def conflicts(home: HomeOpt = None, outbox: OutboxOpt = None, as_json: JsonOpt = False) -> None:
    """Events refused with version_conflict, with the entity's version on the server."""
    with _opened(home, outbox) as service:
        found = [e.to_json() for e in service.conflicts()]
    if as_json:
        print_json({"conflicts": found, "count": len(found)})
        return
    for item in found:
        typer.echo(
            f"{item['event_id']}  {item['entity_type']}/{item['entity_id']}  "
            f"base {item['base_version']} actual {item['actual_version']}  {item['event_type']}"
        )
    err.print(f"{len(found)} conflict(s)")


@agent_app.command("rebase")
def rebase(
    event_id: Annotated[str, typer.Argument(help="The conflicting (or rejected) event")],
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign the event again on the entity's current version, with a new event id; the
    original stays, marked superseded and linked to the new one."""
    target = _uuid(event_id, "EVENT_ID")
    with _opened(home, outbox) as service:
        new: OutboxEvent = service.rebase(target)
    _emit_json_or(
        as_json,
        new.to_json(),
        f"ok: {target} rebased as {new.event_id} (base version {new.envelope.base_version}); "
        "push to send it",
    )


# --- keys -----------------------------------------------------------------------------------


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        fail(f"--grace must look like 90s, 30m, 24h or 7d, not {text!r}", 2)
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


@agent_app.command("rotate-key")
def rotate_key(
    grace: Annotated[str, typer.Option("--grace", help="Keep the old key this long (24h)")] = "24h",
    admin_api_key: AdminKeyOpt = None,
    admin_api_key_file: AdminKeyFileOpt = None,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
) -> None:
    """Create a new key id, register it, sign with it from now on; the old key retires
    and `agent revoke-retired` (or `agent sync`) revokes it once the grace has passed."""
    period = _duration(grace)
    with _opened(home, outbox) as service:
        new = _run(service.rotate_key(period, api_key_from(admin_api_key, admin_api_key_file)))
    typer.echo(f"ok: key {new.key_id} registered and signing; older keys retire in {grace}")


@agent_app.command("revoke-retired")
def revoke_retired(
    admin_api_key: AdminKeyOpt = None,
    admin_api_key_file: AdminKeyFileOpt = None,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
) -> None:
    """Revoke, on the sequencer and here, the retired keys whose grace has passed."""
    with _opened(home, outbox) as service:
        notes = _run(service.revoke_due(api_key_from(admin_api_key, admin_api_key_file)))
    for note in notes:
        typer.echo(note)
    typer.echo(f"ok: {len(notes)} retired key(s) looked at")


# --- backup, restore, export ---------------------------------------------------------------


@agent_app.command("backup")
def backup(
    output: Annotated[Path, typer.Option("--output", help="New file for the copy")],
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
) -> None:
    """An online copy of the outbox (safe while the agent writes) and its checksum manifest."""
    with _opened(home, outbox) as service:
        manifest = backup_outbox(service.outbox, output)
    typer.echo(
        f"ok: {manifest['event_count']} events backed up to {output} "
        f"(sha256 {manifest['file_sha256']})"
    )


@agent_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="A file `agent backup` wrote")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing outbox")] = False,
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
) -> None:
    """Check a backup against its manifest and put it in place; the outbox it replaces is
    kept beside it. Stop the agent's other commands first."""
    with _faults():
        place = _home(home)
        config = place.load() if place.config_path.exists() else None
        result = restore_outbox(file, place.outbox_path(outbox, config), force=force)
    for aside in result["moved_aside"]:
        err.print(f"kept the replaced file as {aside}")
    typer.echo(f"ok: restored {result['restored']} ({result['counts']})")


def export_from_outbox(
    status_filter: str, output: Path, fmt: str, home: Path | None, outbox: Path | None
) -> None:
    """``export-events --status …``: the outbox's events for ``bulk-ingest``."""
    if status_filter not in STATUS_FILTERS:
        fail(f"--status must be one of {', '.join(STATUS_FILTERS)}, not {status_filter!r}", 2)
    with _faults():
        place = _home(home)
        config = place.load() if place.config_path.exists() else None
        path = place.outbox_path(outbox, config)
        if not path.exists():
            fail(f"{path}: no outbox here (pass --outbox or --home)", 2)
        with Outbox(path) as box:
            manifest = export_outbox(
                box, status_filter, output, "json" if fmt == "json" else "ndjson"
            )
    typer.echo(
        f"ok: exported {manifest['event_count']} {status_filter} event(s) from {path} to {output} "
        f"(sha256 {manifest['file_sha256']}); manifest {output}.manifest.json"
    )


# --- sync-agent -----------------------------------------------------------------------------


def _instant(text: str, option: str) -> datetime:
    try:
        moment = parse_rfc3339(text)
    except VesError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            fail(f"{option}: not an RFC 3339 time: {text!r}", 2)
        if moment.tzinfo is None:
            fail(f"{option}: give the offset (Z or +hh:mm): {text!r}", 2)
    return moment.astimezone(UTC)


@commands.command("sync-agent")
def sync_agent(
    start_time: Annotated[str, typer.Option("--start-time", help="RFC 3339, inclusive")],
    end_time: Annotated[str, typer.Option("--end-time", help="RFC 3339, exclusive")],
    home: HomeOpt = None,
    outbox: OutboxOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-send every outbox event recorded in the window, whatever its state. Replays
    must come back with the receipt held here; events the sequencer lost are sequenced
    again. Exit 1 if any receipt differs."""
    start, end = _instant(start_time, "--start-time"), _instant(end_time, "--end-time")
    with _opened(home, outbox) as service:
        report = _run(service.sync_window(start, end)).to_json()
    _emit_json_or(
        as_json,
        report,
        f"ok: {report['total']} event(s) in the window: {report['replayed_same']} held with the "
        f"same receipt, {report['resequenced']} sequenced again, {report['newly_acked']} newly "
        f"acknowledged, {report['rejected']} refused",
    )
    for line in report["receipt_mismatches"]:
        err.print(f"receipt mismatch: {line}")
    if report["receipt_mismatches"]:
        raise typer.Exit(1)
