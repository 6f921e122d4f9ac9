"""``sequencer-cli keys …``: the agent's local key store (``HOME/keys``, see
:mod:`stateset_sequencer.agent.keystore`): list, create, and move keys between machines
in a passphrase-sealed archive.

The passphrase comes from ``--passphrase-file``, else ``$SEQUENCER_KEYS_PASSPHRASE``, else
a hidden prompt (twice when sealing, so a typo does not lock the keys away). Never from an
option's value: that would sit in the shell history and in every process listing.
"""

from __future__ import annotations

import os
import secrets
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..agent.keystore import (
    ACTIVE,
    MAX_ARCHIVE_BYTES,
    REVOKED,
    AgentKey,
    KeyStore,
    KeyStoreError,
    KeyStoreReason,
)
from ..ves.codec import U32_MAX, format_rfc3339
from .common import err, fail, print_json

PASSPHRASE_ENV = "SEQUENCER_KEYS_PASSPHRASE"  # noqa: S105 (a variable name)

# What the user can fix by changing the command line; the rest is the work failing.
_USAGE_REASONS = {
    KeyStoreReason.INVALID,
    KeyStoreReason.EMPTY_PASSPHRASE,
    KeyStoreReason.KEY_EXISTS,
}

keys_app = typer.Typer(
    help="The agent's own Ed25519 keys in HOME/keys: list, create, export and import them.",
    no_args_is_help=True,
)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="SEQUENCER_HOME", help="Agent directory holding keys/ (~/.sequencer)"
    ),
]
PassphraseFile = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="File whose first line is the archive's passphrase"),
]


@contextmanager
def _key_store_errors() -> Iterator[None]:
    try:
        yield
    except KeyStoreError as exc:
        fail(f"{exc.reason}: {exc.message}", 2 if exc.reason in _USAGE_REASONS else 1)


def _agent_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"--agent-id: not a UUID: {value!r}", 2)


def _describe(key: AgentKey, current: AgentKey | None) -> dict[str, Any]:
    def text(moment: datetime | None) -> str | None:
        return None if moment is None else format_rfc3339(moment)

    return {
        "agentId": str(key.agent_id),
        "keyId": key.key_id,
        "publicKey": key.public_key.hex(),
        "status": key.status,
        "current": current is not None and current.key_id == key.key_id,
        "createdAt": text(key.created_at),
        "revokeAfter": text(key.revoke_after),
        "revokedAt": text(key.revoked_at),
    }


@keys_app.command("list")
def list_keys(
    agent_id: Annotated[str | None, typer.Option("--agent-id", help="Only this agent")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    home: HomeOpt = None,
) -> None:
    """List the keys (public halves and state; never the seeds). CURRENT marks the key new
    events are signed with."""
    store = KeyStore(home)
    rows: list[dict[str, Any]] = []
    with _key_store_errors():
        agents = [_agent_id(agent_id)] if agent_id is not None else store.agents()
        for agent in agents:
            keys = store.keys(agent)
            active = [k for k in keys if k.status == ACTIVE]
            current = active[-1] if active else None
            rows.extend(_describe(k, current) for k in keys)
    if as_json:
        print_json({"keys": rows, "count": len(rows)})
        return
    if not rows:
        err.print(f"no keys in {store.path}")
        return
    typer.echo(
        f"{'AGENT':<36}  {'KEY':>10}  {'STATUS':<8}  {'CURRENT':<7}  {'CREATED':<25}  "
        f"{'REVOKE AFTER / REVOKED':<25}  PUBLIC KEY"
    )
    for row in rows:
        when = row["revokedAt"] if row["status"] == REVOKED else row["revokeAfter"]
        typer.echo(
            f"{row['agentId']:<36}  {row['keyId']:>10}  {row['status']:<8}  "
            f"{'yes' if row['current'] else '':<7}  {row['createdAt']:<32}  "
            f"{when or '-':<25}  {row['publicKey']}"
        )


@keys_app.command("create")
def create(
    agent_id: Annotated[str, typer.Option("--agent-id", help="Agent UUID the key signs for")],
    key_id: Annotated[
        int | None,
        typer.Option(
            "--key-id", min=0, max=U32_MAX, help="Number of the new key (default: highest + 1)"
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Create a new active key for an agent; prints its public key (hex) to register it
    with ``register-key``."""
    store = KeyStore(home)
    with _key_store_errors():
        key = store.create(_agent_id(agent_id), key_id)
    typer.echo(key.public_key.hex())
    err.print(f"created key {key.key_id} of agent {key.agent_id} in {store.path} (private, 0600)")


def _read_passphrase_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        fail(f"{path}: no such file", 2)
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})", 2)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        err.print(f"warning: {path} is readable by other users; chmod 600 it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path}: the passphrase is not UTF-8 text", 2)
    # Only the line ending goes: spaces may be part of the passphrase.
    return text.splitlines()[0] if text else ""


def _passphrase(path: Path | None, *, confirm: bool) -> str:
    if path is not None:
        passphrase = _read_passphrase_file(path)
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    else:
        passphrase = str(
            typer.prompt(
                "Passphrase",
                hide_input=True,
                confirmation_prompt=confirm,
                default="",  # so that an empty answer is refused in words, not re-asked
                show_default=False,
            )
        )
    if not passphrase:
        fail(f"{KeyStoreReason.EMPTY_PASSPHRASE}: an empty passphrase would protect nothing", 2)
    return passphrase


def _write_new_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to a file only its owner may read: created exclusively, or with
    ``force`` swapped in by rename, so no reader ever sees a wider or half-written file."""
    target = path
    if force:
        target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        fail(f"{path} already exists; pass --force to replace it", 2)
    except OSError as exc:
        fail(f"{path}: cannot create ({exc.strerror or exc})")
    try:
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode passes through the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if target != path:
            os.replace(target, path)
    except OSError as exc:
        target.unlink(missing_ok=True)
        fail(f"{path}: cannot write ({exc.strerror or exc})")


@keys_app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Archive file to write")],
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Seal the archive with a passphrase (required)")
    ] = False,
    agent_id: Annotated[
        list[str] | None,
        typer.Option("--agent-id", help="Only this agent (repeatable; default: every one)"),
    ] = None,
    passphrase_file: PassphraseFile = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
    home: HomeOpt = None,
) -> None:
    """Write the keys, seeds included, to one archive sealed with a passphrase (scrypt,
    AES-256-GCM). The passphrase comes from --passphrase-file, else
    $SEQUENCER_KEYS_PASSPHRASE, else a hidden prompt."""
    if not encrypt:
        fail(
            "refusing to export keys in the clear: anyone holding a copy of the seeds can sign "
            "as the agent; pass --encrypt to seal the archive with a passphrase",
            2,
        )
    if output.exists() and not force:
        fail(f"{output} already exists; pass --force to replace it", 2)
    agents = [_agent_id(a) for a in agent_id] if agent_id else None
    store = KeyStore(home)
    with _key_store_errors():
        # Before the passphrase is asked for twice, not after.
        if agents is None and not store.agents():
            fail(f"{KeyStoreReason.NO_KEY}: no keys to export in {store.path}")
        for agent in agents or []:
            if not store.keys(agent):
                fail(f"{KeyStoreReason.NOT_FOUND}: no keys for agent {agent} in {store.path}")
    passphrase = _passphrase(passphrase_file, confirm=True)
    with _key_store_errors():
        data = store.export_encrypted(passphrase, agents)
    _write_new_private(output, data, force=force)
    err.print(f"wrote {output} (0600, {len(data)} bytes); keep the passphrase apart from it")


@keys_app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="Archive written by `keys export`")],
    passphrase_file: PassphraseFile = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Let the archive's key take a key id held by another"),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Merge an archive's keys into the store. Importing twice is harmless; a revoked key
    stays revoked whatever an older archive says."""
    try:
        size = archive.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            fail(f"{archive}: {size} bytes is too large for a key archive", 2)
        data = archive.read_bytes()
    except FileNotFoundError:
        fail(f"{archive}: no such file", 2)
    except IsADirectoryError:
        fail(f"{archive}: is a directory", 2)
    except OSError as exc:
        fail(f"{archive}: cannot read ({exc.strerror or exc})", 2)
    passphrase = _passphrase(passphrase_file, confirm=False)
    store = KeyStore(home)
    with _key_store_errors():
        changed = store.import_encrypted(data, passphrase, replace=replace)
    for key in changed:
        typer.echo(f"ok: key {key.key_id} of agent {key.agent_id} ({key.status})")
    if not changed:
        typer.echo("ok: nothing to do: every key in the archive is here already")
