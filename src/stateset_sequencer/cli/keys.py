"""Keys: an agent's own signing key (``keygen``), registering it with a sequencer
(``register-key``) and the sequencer's API keys (``api-keys``, straight on the database)."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import SequencerClient
from ..sequencer import api_keys
from ..sequencer.api_keys import KeySpec
from ..sequencer.auth import API_KEY_PREFIX, hash_api_key
from ..sequencer.auth import NIL as NIL_UUID
from ..store.ports import Store
from ..ves import signing
from ..ves.errors import VesError
from ..ves.signing import parse_public_key
from .common import (
    DatabaseUrl,
    DataDir,
    err,
    fail,
    print_json,
    read_text,
    run_on_store,
    write_private,
)
from .remote import ApiKeyFile, ApiKeyOpt, Url, api_key_from, call

commands = typer.Typer()
KEY_FILE = "agent.key"
PUB_FILE = "agent.pub"


def load_signer(path: Path) -> signing.Signer:
    """Read an agent key file (64 hex characters, or base64) and warn if others can read it."""
    text = read_text(path).strip()
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


@commands.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for agent.key and agent.pub")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key")] = False,
) -> None:
    """Create an agent Ed25519 key: DIR/agent.key (seed, hex, mode 0600) and DIR/agent.pub."""
    signer = create_key(out, force=force)
    typer.echo(signer.public_key.hex())


def create_key(out: Path, *, force: bool) -> signing.Signer:
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    if key_path.exists() and not force:
        fail(f"{key_path} already exists; pass --force to replace it (the old key is lost)")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = signing.Signer.generate()
        write_private(key_path, signer.seed.hex() + "\n")
        pub_path.write_text(signer.public_key.hex() + "\n", encoding="ascii")
    except OSError as exc:
        fail(f"cannot write the key to {out}: {exc}")
    err.print(f"wrote {key_path} (private, 0600) and {pub_path}")
    return signer


@commands.command("register-key")
def register_key(
    tenant_id: Annotated[str, typer.Option("--tenant-id", help="Tenant UUID the agent belongs to")],
    agent_id: Annotated[str, typer.Option("--agent-id", help="Agent UUID that signs with the key")],
    public_key: Annotated[str, typer.Option("--public-key", help="Hex, or a file")],
    url: Url = "http://localhost:8080",
    key_id: Annotated[
        int, typer.Option("--key-id", min=0, help="Number of this key among the agent's keys")
    ] = 1,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFile = None,
) -> None:
    """Register an agent's Ed25519 public key (needs an admin key of the tenant)."""
    text = public_key
    if os.path.isfile(public_key):
        text = Path(public_key).read_text(encoding="ascii").strip()
    try:
        tenant, agent = uuid.UUID(tenant_id), uuid.UUID(agent_id)
        key = parse_public_key(text)
    except (ValueError, VesError) as exc:
        fail(str(exc), 2)

    async def work(client: SequencerClient) -> Any:
        return await client.register_agent_key(tenant, agent, key_id, key)

    result = asyncio.run(call(url, api_key_from(api_key, api_key_file), work))
    # The server says "registered" or, for this very key again, "already registered".
    message = str(result.get("message") or "Agent key registered")
    typer.echo(f"ok: key {result['keyId']} of agent {result['agentId']}: {message}")


api_keys_app = typer.Typer(
    help="Mint, list and revoke API keys directly on the database (no server needed).",
    no_args_is_help=True,
)

CLI_ACTOR = "sequencer-cli"


def _uuid_option(value: str | None, name: str) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{name}: not a UUID: {value!r}", 2)


@api_keys_app.command("create")
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
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", help="RFC 3339 with offset, e.g. 2027-01-31T00:00:00Z"),
    ] = None,
    ttl_seconds: Annotated[
        int | None, typer.Option("--ttl-seconds", help="Expire this many seconds from now")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the key to this file (0600), not stdout")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --out file (the key it held stays active: revoke it)",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Mint a key and print it once (only its SHA-256 is stored). Without --tenant-id,
    --admin mints a bootstrap admin key (every tenant). An existing --out file is kept
    (exit 2, nothing minted) unless --force replaces it."""
    replaced = _check_out_file(out, force=force)
    tenant = _uuid_option(tenant_id, "--tenant-id")
    if tenant is None:
        if not admin:
            fail("--tenant-id is required unless --admin mints a bootstrap admin key", 2)
        tenant = NIL_UUID
    try:
        expiry = api_keys.parse_expiry(expires_at, ttl_seconds, now=datetime.now(UTC))
    except api_keys.KeyRequestError as exc:
        fail(f"{exc.reason}: {exc.message}", 2)
    spec = KeySpec(
        tenant_id=tenant,
        store_ids=tuple(u for s in store_id or [] if (u := _uuid_option(s, "--store-id"))),
        read=True,
        write=write or admin,
        admin=admin,
        agent_id=_uuid_option(agent_id, "--agent-id"),
        rate_limit=rate_limit,
        expires_at=expiry,
    )

    async def work(store: Store) -> tuple[str, Any]:
        return await api_keys.create_key(store, spec, actor=CLI_ACTOR, actor_type="cli")

    try:
        plaintext, record = run_on_store(database_url, data_dir, work)
    except api_keys.KeyRequestError as exc:
        fail(f"{exc.reason}: {exc.message}", 2)
    created = (
        f"created {api_keys.permissions(record)} key {record.key_hash[:16]} for tenant "
        f"{record.tenant_id}"
    )
    if out is None:
        typer.echo(plaintext)
        err.print(f"{created}; it is shown only this once")
        return
    try:
        write_private(out, plaintext + "\n")
    except OSError as exc:
        fail(f"{out}: {exc} (the key was created; revoke {record.key_hash[:16]})")
    err.print(f"{created}; written to {out} (0600)")
    if replaced is not None:
        err.print(
            f"warning: the key {out} held before ({replaced}) is still active; revoke it "
            f"with: sequencer-cli api-keys revoke {replaced}"
        )


def _check_out_file(out: Path | None, *, force: bool) -> str | None:
    """Refuse (before minting) to overwrite a key file without --force; with --force,
    the hash prefix of the key the file held, if it held one, so it can be revoked:
    the file is replaced, the old key is not revoked behind the user's back."""
    if out is None or not out.exists():
        return None
    if not force:
        fail(f"{out} already exists; pass --force to replace it (nothing was minted)", 2)
    try:
        previous = out.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return hash_api_key(previous)[:16] if previous.startswith(API_KEY_PREFIX) else None


@api_keys_app.command("list")
def api_keys_list(
    tenant_id: Annotated[str | None, typer.Option("--tenant-id", help="Only this tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List keys (hash prefixes and scopes; never the keys themselves). PARENT is the key
    that minted each one over HTTP: revoking a key revokes the keys minted from it."""
    tenant = _uuid_option(tenant_id, "--tenant-id")
    records: list[Any] = run_on_store(
        database_url, data_dir, lambda store: store.list_api_keys(tenant)
    )
    rows = [api_keys.describe(r) for r in records]
    if as_json:
        print_json({"keys": rows, "count": len(rows)})
        return
    typer.echo(
        f"{'KEY HASH PREFIX':<16}  {'STATE':<7}  {'PERMS':<10}  {'TENANT':<36}  "
        f"{'PARENT':<16}  {'AGENT':<36}  STORES"
    )
    for row in rows:
        state = "active" if row["active"] else "revoked"
        if (
            row["active"]
            and row["expiresAt"]
            and datetime.fromisoformat(row["expiresAt"]) <= datetime.now(UTC)
        ):
            state = "expired"
        stores = ",".join(row["storeIds"]) or "*"
        typer.echo(
            f"{row['keyHashPrefix']:<16}  {state:<7}  {row['permissions']:<10}  "
            f"{row['tenantId']:<36}  {row['parentKeyHashPrefix'] or '-':<16}  "
            f"{row['agentId'] or '-':<36}  {stores}"
        )


@api_keys_app.command("revoke")
def api_keys_revoke(
    key_hash_prefix: Annotated[str, typer.Argument(help="At least 8 hex digits of the hash")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Deactivate the one key whose hash starts with the prefix, and every key minted
    from it. On the database this may revoke the last global admin key (HTTP refuses)."""

    async def work(store: Store) -> api_keys.Revocation:
        return await api_keys.revoke_tree(
            store, key_hash_prefix, tenant_id=None, actor=CLI_ACTOR, actor_type="cli"
        )

    try:
        revocation = run_on_store(database_url, data_dir, work)
    except api_keys.KeyRequestError as exc:
        missing = exc.reason is api_keys.KeyReason.KEY_NOT_FOUND
        fail(f"{exc.reason}: {exc.message}", 1 if missing else 2)
    record = revocation.record
    typer.echo(f"ok: revoked {record.key_hash[:16]} (tenant {record.tenant_id})")
    for child in revocation.children:
        typer.echo(f"ok: revoked {child.key_hash[:16]} with it (minted from it)")
