"""Events: signing and checking envelopes locally (``sign``, ``verify``, ``demo``) and
sending them to a sequencer (``send``)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ..client import SequencerClient, UnsignedReceipt
from ..ves import envelope, jcs, signing
from ..ves.codec import format_rfc3339, parse_uuid
from ..ves.envelope import VesEventEnvelope, parse_envelope
from ..ves.errors import EnvelopeInvalid, VesError
from .common import err, fail, one_line, print_json, read_text
from .keys import KEY_FILE, create_key, load_signer
from .remote import ApiKeyFile, ApiKeyOpt, Url, api_key_from, call

commands = typer.Typer()


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        value = jcs.loads(read_text(path))
    except VesError as exc:
        fail(f"{path}: {exc}", 2)
    if not isinstance(value, dict):
        fail(f"{path}: expected one JSON object, got {type(value).__name__}", 2)
    return value


def read_envelopes(path: Path) -> list[VesEventEnvelope]:
    """One JSON object, a JSON array of them, or NDJSON (one object per line)."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: {exc}", 2)
    try:
        whole = jcs.loads(text)
        items: list[Any] = whole if isinstance(whole, list) else [whole]
    except VesError:
        try:  # not one JSON text: NDJSON, then
            items = [jcs.loads(line) for line in text.splitlines() if line.strip()]
        except VesError as exc:
            fail(f"{path}: neither JSON nor NDJSON: {exc}", 2)
    envelopes = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            fail(f"{path}: item {index} is not a JSON object", 2)
        try:
            envelopes.append(parse_envelope(item))
        except ValidationError as exc:
            fail(f"{path}: item {index} is not a VES envelope: {one_line(exc)}", 2)
    return envelopes


@commands.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Agent key file (agent.key)")],
    event: Annotated[Path, typer.Option("--event", help="Unsigned event JSON file, or -")],
    ves_version: Annotated[
        int | None,
        typer.Option(
            "--ves-version",
            min=1,
            max=2,
            help="Signing version: 2 also signs command_id and base_version; 1 only for a "
            "sequencer that accepts nothing newer. Default: the event's own ves_version, "
            "else 2",
        ),
    ] = None,
    command_id: Annotated[
        str | None, typer.Option("--command-id", help="Set the event's command_id (a UUID)")
    ] = None,
    base_version: Annotated[
        int | None,
        typer.Option(
            "--base-version",
            min=0,
            help="Set the event's base_version (at most 2^53-1 when signed with version 2)",
        ),
    ] = None,
) -> None:
    """Sign one event and print the complete envelope as one JSON object.

    The input holds the envelope fields without payload_plain_hash, payload_cipher_hash
    and agent_signature. With "payload_kind": 1 and "recipients":
    [{"recipient_kid": n, "public_key": hex}] the payload is encrypted (VES-ENC-1).
    An option that sets a field the file also holds must agree with it.
    """
    signer = load_signer(key)
    obj = _load_json_object(event)
    if command_id is not None:
        try:
            command_id = str(parse_uuid(command_id))
        except VesError as exc:
            fail(f"--command-id: {exc}", 2)
    flags = {"ves_version": ves_version, "command_id": command_id, "base_version": base_version}
    for name, value in flags.items():
        if value is None:
            continue
        given = obj.get(name)
        if name == "command_id" and isinstance(given, str):
            # A malformed id is left as given: sign_unsigned names the bad field.
            with contextlib.suppress(VesError):
                given = str(parse_uuid(given))
        if name in obj and (given != value or type(given) is not type(value)):
            fail(f"{event}: {name} is {obj[name]!r} in the file but {value!r} on the command line")
        obj[name] = value
    try:
        signed = envelope.sign_unsigned(obj, signer)
    except EnvelopeInvalid as exc:
        fail(f"{event}: {exc.reason}: {exc.message}" if exc.message != exc.reason else exc.reason)
    except VesError as exc:
        fail(f"{event}: {exc}")
    print_json(signed.to_wire())


@commands.command()
def verify(
    event: Annotated[Path, typer.Option("--event", help="Signed envelope JSON file, or -")],
    public_key: Annotated[
        str, typer.Option("--public-key", help="Agent public key: hex, or a file holding it")
    ],
) -> None:
    """Check a signed envelope: structure, payload hash and agent signature."""
    key_text = public_key
    if Path(public_key).is_file():
        key_text = read_text(Path(public_key)).strip()
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


@commands.command()
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
        signer = create_key(key_dir, force=False)
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


@commands.command("send")
def send(
    event: Annotated[
        Path, typer.Option("--event", help="Signed envelope(s): JSON or NDJSON, or -")
    ],
    url: Url = "http://localhost:8080",
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFile = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=1000, help="Events per ingest request (1-1000)")
    ] = 100,
    allow_unsigned_receipts: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned-receipts",
            help="Accept unsigned receipts (alg none) from a sequencer without a signing "
            "key; a wrongly signed receipt still fails",
        ),
    ] = False,
) -> None:
    """Send signed events and print each receipt, checked against its event and the
    sequencer's published key. Exit 1 if any event is rejected or any receipt is
    unsigned or does not verify."""
    envelopes = read_envelopes(event)
    if not envelopes:
        fail(f"{event}: no events", 2)
    agent = envelopes[0].source_agent_id

    async def work(client: SequencerClient) -> list[Any]:
        client.allow_unsigned_receipts = allow_unsigned_receipts
        await client.use_sequencer_key()
        outcomes = []
        for start in range(0, len(envelopes), batch):
            try:
                outcomes.append(await client.ingest(agent, envelopes[start : start + batch]))
            except UnsignedReceipt as exc:
                raise UnsignedReceipt(f"{exc}; --allow-unsigned-receipts accepts it") from None
        return outcomes

    outcomes = asyncio.run(call(url, api_key_from(api_key, api_key_file), work))
    rejected = 0
    for outcome in outcomes:
        for receipt in outcome.receipts:
            print_json(receipt.to_wire())
        for rejection in outcome.rejections:
            rejected += 1
            err.print(f"rejected {rejection.event_id}: {rejection.reason}")
    accepted = sum(o.events_accepted for o in outcomes)
    replayed = sum(o.replayed for o in outcomes)
    err.print(f"accepted {accepted}, replayed {replayed}, rejected {rejected}")
    if rejected:
        raise typer.Exit(1)
