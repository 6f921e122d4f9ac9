"""``sequencer-cli``: the operator's and the agent's command line.

Every command exits 0 on success, 1 when the work itself fails (a bad signature, an
unreadable key) and 2 on usage errors, and says why on stderr in one line, never with a
traceback.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__
from .client.commands import register as register_client_commands
from .clikit import DatabaseUrl, DataDir, err, fail, one_line, print_json, target, with_store
from .recovery.commands import register as register_recovery
from .sequencer import api_keys
from .sequencer.api_keys import KeySpec
from .sequencer.auth import NIL as NIL_UUID
from .server import Host, Port
from .server import run as run_server
from .store.base import MigrationStatus
from .ves import envelope, jcs, signing
from .ves.codec import format_rfc3339
from .ves.errors import EnvelopeInvalid, VesError

app = typer.Typer(
    name="sequencer-cli",
    help="StateSet Sequencer: sign and verify VES v1.0 events, and operate the sequencer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
KEY_FILE = "agent.key"
PUB_FILE = "agent.pub"


def _read_text(path: Path) -> str:
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file", 2)
    except IsADirectoryError:
        fail(f"{path}: is a directory", 2)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read ({exc})", 2)


def _write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only, without a window where it is wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by umask and ignored for old files


def load_signer(path: Path) -> signing.Signer:
    """Read an agent key file (64 hex characters, or base64) and warn if others can read it."""
    text = _read_text(path).strip()
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        err.print(f"warning: {path} is readable by other users; chmod 600 it")
    try:
        return signing.Signer(text)
    except VesError as exc:
        fail(f"{path}: not an Ed25519 seed ({exc})")


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        value = jcs.loads(_read_text(path))
    except VesError as exc:
        fail(f"{path}: {exc}", 2)
    if not isinstance(value, dict):
        fail(f"{path}: expected one JSON object, got {type(value).__name__}", 2)
    return value


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for agent.key and agent.pub")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key")] = False,
) -> None:
    """Create an agent Ed25519 key: DIR/agent.key (seed, hex, mode 0600) and DIR/agent.pub."""
    signer = _create_key(out, force=force)
    typer.echo(signer.public_key.hex())


def _create_key(out: Path, *, force: bool) -> signing.Signer:
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    if key_path.exists() and not force:
        fail(f"{key_path} already exists; pass --force to replace it (the old key is lost)")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = signing.Signer.generate()
        _write_private(key_path, signer.seed.hex() + "\n")
        pub_path.write_text(signer.public_key.hex() + "\n", encoding="ascii")
    except OSError as exc:
        fail(f"cannot write the key to {out}: {exc}")
    err.print(f"wrote {key_path} (private, 0600) and {pub_path}")
    return signer


@app.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Agent key file (agent.key)")],
    event: Annotated[Path, typer.Option("--event", help="Unsigned event JSON file, or -")],
) -> None:
    """Sign one event and print the complete envelope as one JSON object.

    The input holds the envelope fields without payload_plain_hash, payload_cipher_hash
    and agent_signature. With "payload_kind": 1 and "recipients":
    [{"recipient_kid": n, "public_key": hex}] the payload is encrypted (VES-ENC-1).
    """
    signer = load_signer(key)
    obj = _load_json_object(event)
    try:
        signed = envelope.sign_unsigned(obj, signer)
    except EnvelopeInvalid as exc:
        fail(f"{event}: {exc.reason}: {exc.message}" if exc.message != exc.reason else exc.reason)
    except VesError as exc:
        fail(f"{event}: {exc}")
    print_json(signed.to_wire())


@app.command()
def verify(
    event: Annotated[Path, typer.Option("--event", help="Signed envelope JSON file, or -")],
    public_key: Annotated[
        str, typer.Option("--public-key", help="Agent public key: hex, or a file holding it")
    ],
) -> None:
    """Check a signed envelope: structure, payload hash and agent signature."""
    key_text = public_key
    if Path(public_key).is_file():
        key_text = _read_text(Path(public_key)).strip()
    try:
        pk = signing.parse_public_key(key_text)
    except VesError as exc:
        fail(f"public key: {exc}", 2)
    obj = _load_json_object(event)
    try:
        env = envelope.parse_envelope(obj)
    except ValueError as exc:  # pydantic's ValidationError
        fail(f"{event}: not a VES envelope: {one_line(exc)}")
    try:
        digest = envelope.validate(env)
        envelope.verify_signature(env, pk, digest)
    except EnvelopeInvalid as exc:
        fail(f"{event}: {exc.reason}: {exc.message}")
    typer.echo(f"ok: event {env.event_id} signing hash {digest.hex()}")


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo agent key lives")
    ] = Path("./data"),
) -> None:
    """Make (or reuse) an agent key, sign a sample event, verify it and print it."""
    key_dir = data_dir / "agent"
    if (key_dir / KEY_FILE).exists():
        signer = load_signer(key_dir / KEY_FILE)
    else:
        signer = _create_key(key_dir, force=False)
    signed = envelope.sign_event(
        signer=signer,
        tenant_id=uuid.UUID(int=1),
        store_id=uuid.UUID(int=2),
        source_agent_id=uuid.uuid5(uuid.NAMESPACE_OID, signer.public_key.hex()),
        entity_type="order",
        entity_id="ORD-001",
        event_type="order.created",
        created_at=format_rfc3339(datetime.now(UTC)),
        payload={"total": 4999, "currency": "USD"},
    )
    digest = envelope.validate(signed)
    envelope.verify_signature(signed, signer.public_key, digest)
    print_json(signed.to_wire())
    err.print(f"signed and verified event {signed.event_id} with key {key_dir / KEY_FILE}")


@app.command("serve")
def serve(host: Host = None, port: Port = None) -> None:
    """Serve the HTTP API (same as `stateset-sequencer serve`)."""
    run_server(host, port)


# --- database commands ------------------------------------------------------------------

migrate_app = typer.Typer(
    help="Apply, inspect or roll back schema migrations.", no_args_is_help=False
)
app.add_typer(migrate_app, name="migrate")


@migrate_app.callback(invoke_without_command=True)
def migrate(ctx: typer.Context, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Apply pending migrations (the default action)."""
    if ctx.invoked_subcommand is not None:
        return
    applied: list[int] = asyncio.run(
        with_store(database_url, data_dir, lambda store: store.migrate())
    )
    where = target(database_url, data_dir)
    if applied:
        typer.echo(f"ok: applied migrations {', '.join(f'{v:03d}' for v in applied)} on {where}")
    else:
        typer.echo(f"ok: schema is up to date on {where}")


@migrate_app.command("status")
def migrate_status(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """List every migration and whether it is applied."""
    rows: list[MigrationStatus] = asyncio.run(
        with_store(database_url, data_dir, lambda store: store.migration_status())
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
    reverted: list[int] = asyncio.run(
        with_store(database_url, data_dir, lambda store: store.rollback(to))
    )
    if reverted:
        typer.echo(f"ok: rolled back {', '.join(f'{v:03d}' for v in reverted)}")
    else:
        typer.echo(f"ok: nothing above {to:03d} to roll back")


register_recovery(app)
register_client_commands(app)


# --- API keys, directly on the database --------------------------------------------------

keys_app = typer.Typer(
    help="Mint, list and revoke API keys directly on the database (no server needed).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="api-keys")

CLI_ACTOR = "sequencer-cli"


def _uuid_option(value: str | None, name: str) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{name}: not a UUID: {value!r}", 2)


@keys_app.command("create")
def api_keys_create(
    tenant_id: Annotated[
        str | None, typer.Option("--tenant-id", help="Tenant UUID (omit with --admin: all)")
    ] = None,
    store_id: Annotated[
        list[str] | None, typer.Option("--store-id", help="Limit to a store (repeatable)")
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Allow ingest")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="Admin of the tenant (or all)")] = False,
    agent_id: Annotated[
        str | None, typer.Option("--agent-id", help="Bind the key to one agent")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", min=1, help="Requests per window")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the key to this file (0600), not stdout")
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Mint a key and print it once (only its SHA-256 is stored). Without --tenant-id,
    --admin mints a bootstrap admin key (every tenant)."""
    tenant = _uuid_option(tenant_id, "--tenant-id")
    if tenant is None:
        if not admin:
            fail("--tenant-id is required unless --admin mints a bootstrap admin key", 2)
        tenant = NIL_UUID
    spec = KeySpec(
        tenant_id=tenant,
        store_ids=tuple(u for s in store_id or [] if (u := _uuid_option(s, "--store-id"))),
        read=True,
        write=write or admin,
        admin=admin,
        agent_id=_uuid_option(agent_id, "--agent-id"),
        rate_limit=rate_limit,
    )

    async def work(store: Any) -> tuple[str, Any]:
        return await api_keys.create_key(store, spec, actor=CLI_ACTOR, actor_type="cli")

    try:
        plaintext, record = asyncio.run(with_store(database_url, data_dir, work))
    except api_keys.KeyRequestError as exc:
        fail(f"{exc.code}: {exc.message}", 2)
    if out is None:
        typer.echo(plaintext)
    else:
        try:
            _write_private(out, plaintext + "\n")
        except OSError as exc:
            fail(f"{out}: {exc} (the key was created; revoke {record.key_hash[:16]})")
    err.print(
        f"created {api_keys.permissions(record)} key {record.key_hash[:16]} for tenant "
        f"{record.tenant_id}; it is shown only this once"
    )


@keys_app.command("list")
def api_keys_list(
    tenant_id: Annotated[str | None, typer.Option("--tenant-id", help="Only this tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List keys (hash prefixes and scopes; never the keys themselves)."""
    tenant = _uuid_option(tenant_id, "--tenant-id")
    records: list[Any] = asyncio.run(
        with_store(database_url, data_dir, lambda store: store.list_api_keys(tenant))
    )
    rows = [api_keys.describe(r) for r in records]
    if as_json:
        print_json({"keys": rows, "count": len(rows)})
        return
    for row in rows:
        state = "active" if row["active"] else "revoked"
        stores = ",".join(row["storeIds"]) or "*"
        typer.echo(
            f"{row['keyHashPrefix']}  {state:<7}  {row['permissions']:<10}  "
            f"tenant={row['tenantId']}  stores={stores}  agent={row['agentId'] or '-'}"
        )


@keys_app.command("revoke")
def api_keys_revoke(
    key_hash_prefix: Annotated[str, typer.Argument(help="At least 8 hex digits of the hash")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Deactivate the one key whose hash starts with the prefix."""

    async def work(store: Any) -> Any:
        return await api_keys.revoke_key(
            store, key_hash_prefix, tenant_id=None, actor=CLI_ACTOR, actor_type="cli"
        )

    try:
        record = asyncio.run(with_store(database_url, data_dir, work))
    except api_keys.KeyRequestError as exc:
        fail(f"{exc.code}: {exc.message}", 1 if exc.status == 404 else 2)
    typer.echo(f"ok: revoked {record.key_hash[:16]} (tenant {record.tenant_id})")


def main() -> None:
    app()
