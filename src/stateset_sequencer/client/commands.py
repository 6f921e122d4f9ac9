"""``sequencer-cli`` commands that talk to a running sequencer over HTTP (the agent's side):
``register-key`` and ``send``. They work against this service or the Rust reference."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError

from ..clikit import err, fail, one_line, print_json
from ..ves import jcs
from ..ves.envelope import VesEventEnvelope, parse_envelope
from ..ves.errors import VesError
from ..ves.signing import parse_public_key
from . import ReceiptMismatch, SequencerClient, SequencerError

Url = Annotated[
    str,
    typer.Option("--url", envvar="SEQUENCER_URL", help="Sequencer base URL"),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="SEQUENCER_API_KEY", help="API key (or $SEQUENCER_API_KEY)"),
]
ApiKeyFile = Annotated[Path | None, typer.Option("--api-key-file", help="File holding the API key")]


def _api_key(key: str | None, key_file: Path | None) -> str | None:
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{key_file}: {exc}", 2)
    return key


def read_envelopes(path: Path) -> list[VesEventEnvelope]:
    """One JSON object, a JSON array of them, or NDJSON (one object per line)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
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


async def _call(url: str, key: str | None, work: Any) -> Any:
    try:
        async with SequencerClient(url, key) as client:
            return await work(client)
    except SequencerError as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        fail(f"{exc.status} {exc.code}{reason}: {exc.message}")
    except ReceiptMismatch as exc:
        fail(f"receipt check failed: {exc}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}: {exc}")


def register(app: typer.Typer) -> None:
    @app.command("register-key")
    def register_key(
        tenant_id: Annotated[str, typer.Option("--tenant-id")],
        agent_id: Annotated[str, typer.Option("--agent-id")],
        public_key: Annotated[str, typer.Option("--public-key", help="Hex, or a file")],
        url: Url = "http://localhost:8080",
        key_id: Annotated[int, typer.Option("--key-id", min=0)] = 1,
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

        result = asyncio.run(_call(url, _api_key(api_key, api_key_file), work))
        typer.echo(f"ok: key {result['keyId']} of agent {result['agentId']} registered")

    @app.command("send")
    def send(
        event: Annotated[
            Path, typer.Option("--event", help="Signed envelope(s): JSON or NDJSON, or -")
        ],
        url: Url = "http://localhost:8080",
        api_key: ApiKeyOpt = None,
        api_key_file: ApiKeyFile = None,
        batch: Annotated[int, typer.Option("--batch", min=1, max=1000)] = 100,
    ) -> None:
        """Send signed events and print each receipt, checked against its event and the
        sequencer's published key. Exit 1 if any event is rejected."""
        envelopes = read_envelopes(event)
        if not envelopes:
            fail(f"{event}: no events", 2)
        agent = envelopes[0].source_agent_id

        async def work(client: SequencerClient) -> list[Any]:
            await client.use_sequencer_key()
            outcomes = []
            for start in range(0, len(envelopes), batch):
                outcomes.append(await client.ingest(agent, envelopes[start : start + batch]))
            return outcomes

        outcomes = asyncio.run(_call(url, _api_key(api_key, api_key_file), work))
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
