"""The gRPC API in process: started services (as ``tests/api``), their HTTP app through
httpx's ASGI transport, and the gRPC server on a free loopback port, called by a client
generated from our .proto files here, in the test session (never the server's own
modules): what a third party would build from the published contract.

``rig`` runs a test on SQLite and on a real PostgreSQL; ``sqlite_rig`` only on SQLite,
for tests whose subject is not storage; ``make_rig`` builds one with other settings.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_tools import protoc  # type: ignore[import-untyped]

from stateset_sequencer.api.grpc import GrpcServer
from stateset_sequencer.config import Settings
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.ves import envelope as ves_envelope
from stateset_sequencer.ves.codec import b64url_decode, parse_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope
from tests.api.conftest import ADMIN_KEY, Api, open_api, settings_for

PROTO_DIR = Path(__file__).resolve().parents[2] / "src" / "stateset_sequencer" / "proto"
WAIT_S = 20.0  # a bound on a wait, never an expectation of speed


@dataclass(frozen=True)
class Wire:
    """The client's modules, compiled from the .proto files in this session."""

    v2: ModuleType
    v2_grpc: ModuleType
    v1: ModuleType
    v1_grpc: ModuleType
    empty: ModuleType


@pytest.fixture(scope="session")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    out = tmp_path_factory.mktemp("wire")
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *(str(p) for p in sorted(PROTO_DIR.glob("*.proto"))),
        ]
    )
    assert code == 0, "protoc failed on our .proto files"
    sys.path.insert(0, str(out))
    try:
        modules = {
            name: importlib.import_module(name)
            for name in (
                "sequencer_v2_pb2",
                "sequencer_v2_pb2_grpc",
                "sequencer_pb2",
                "sequencer_pb2_grpc",
            )
        }
        # Loaded from the tmp dir, not from the package: a client of its own.
        assert Path(modules["sequencer_v2_pb2"].__file__ or "").parent == out
        yield Wire(
            modules["sequencer_v2_pb2"],
            modules["sequencer_v2_pb2_grpc"],
            modules["sequencer_pb2"],
            modules["sequencer_pb2_grpc"],
            importlib.import_module("google.protobuf.empty_pb2"),
        )
    finally:
        sys.path.remove(str(out))


def metadata(key: str = ADMIN_KEY, **extra: str) -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"ApiKey {key}"),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )


def stamp(wire: Wire, text: str) -> Any:
    """A Timestamp for an RFC 3339 text with a ``+00:00`` offset, nanoseconds exact."""
    moment = parse_rfc3339(text)
    whole = text.split("+")[0]
    nanos = 0
    if "." in whole:
        nanos = int((whole.split(".")[1] + "000000000")[:9])
    ts = Timestamp()
    ts.seconds = int(moment.replace(microsecond=0).timestamp())
    ts.nanos = nanos
    return ts


def wire_event(wire: Wire, env: VesEventEnvelope, *, hashes: bool = True) -> Any:
    """An envelope as a client builds the message (``hashes`` False: leave both hashes
    empty for the server to compute)."""
    pb = wire.v2
    message = pb.EventEnvelope(
        event_id=str(env.event_id),
        command_id="" if env.command_id is None else str(env.command_id),
        tenant_id=str(env.tenant_id),
        store_id=str(env.store_id),
        entity_type=env.entity_type,
        entity_id=env.entity_id,
        event_type=env.event_type,
        source_agent=str(env.source_agent_id),
        ves_version=env.ves_version,
        agent_key_id=env.agent_key_id,
        agent_signature=env.agent_signature,
        base_version=env.base_version or 0,
    )
    message.created_at.CopyFrom(stamp(wire, env.created_at))
    if hashes:
        message.payload_plain_hash = env.payload_plain_hash
        message.payload_cipher_hash = env.payload_cipher_hash
    if env.payload_kind == ves_envelope.PAYLOAD_KIND_PLAINTEXT:
        message.payload_kind = pb.PAYLOAD_KIND_PLAINTEXT
        message.payload = json.dumps(env.payload).encode()
    else:
        message.payload_kind = pb.PAYLOAD_KIND_ENCRYPTED
        enc = env.payload_encrypted
        assert enc is not None
        if hashes is False:
            message.payload_plain_hash = env.payload_plain_hash  # salted: never computed
        message.payload_encrypted.CopyFrom(
            pb.EncryptedPayload(
                enc_version=enc.enc_version,
                aead=enc.aead,
                nonce=b64url_decode(enc.nonce_b64u),
                ciphertext=b64url_decode(enc.ciphertext_b64u),
                tag=b64url_decode(enc.tag_b64u),
                hpke=pb.HpkeParams(
                    mode=enc.hpke.mode, kem=enc.hpke.kem, kdf=enc.hpke.kdf, aead=enc.hpke.aead
                ),
                recipients=[
                    pb.RecipientKey(
                        recipient_kid=r.recipient_kid,
                        ephemeral_public_key=b64url_decode(r.enc_b64u),
                        wrapped_dek=b64url_decode(r.ct_b64u),
                    )
                    for r in enc.recipients
                ],
            )
        )
    return message


def signed(i: int, **kwargs: Any) -> VesEventEnvelope:
    """kit's event with a ``created_at`` in the form the server rebuilds from a
    Timestamp (chrono's ``to_rfc3339``), so that the signature still verifies."""
    kwargs.setdefault("created_at", f"2025-06-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00")
    return kit.event(i, **kwargs)


@dataclass
class Rig:
    api: Api
    server: GrpcServer
    channel: grpc.aio.Channel
    wire: Wire
    target: str

    @property
    def services(self) -> Any:
        return self.api.services

    @property
    def store(self) -> Any:
        return self.api.services.store

    @property
    def v2(self) -> Any:
        return self.wire.v2_grpc.SequencerStub(self.channel)

    @property
    def keys(self) -> Any:
        return self.wire.v2_grpc.KeyManagementStub(self.channel)

    @property
    def v1(self) -> Any:
        return self.wire.v1_grpc.SequencerStub(self.channel)

    def push_request(
        self,
        events: list[VesEventEnvelope],
        *,
        agent_id: uuid.UUID = kit.AGENT_ID,
        hashes: bool = True,
        request_id: str = "",
    ) -> Any:
        return self.wire.v2.PushRequest(
            agent_id=str(agent_id),
            tenant_id=str(kit.TENANT),
            store_id=str(kit.STORE_ID),
            events=[wire_event(self.wire, e, hashes=hashes) for e in events],
            request_id=request_id,
        )

    async def push(self, events: list[VesEventEnvelope], key: str = ADMIN_KEY, **kw: Any) -> Any:
        return await self.v2.Push(self.push_request(events, **kw), metadata=metadata(key))

    async def snapshot(self) -> Any:
        return await kit.snapshot(self.store)


@asynccontextmanager
async def open_rig(settings: Settings, wire: Wire, **channel: Any) -> AsyncIterator[Rig]:
    async with open_api(settings) as api:
        server = GrpcServer(api.services)
        port = await server.start("127.0.0.1", 0)
        target = f"127.0.0.1:{port}"
        try:
            async with grpc.aio.insecure_channel(target, options=channel.get("options")) as ch:
                yield Rig(api, server, ch, wire, target)
        finally:
            await server.stop(grace=1.0)


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path, wire: Wire) -> AsyncIterator[MakeRig]:
    """``await make_rig(backend="sqlite", options=[...], **settings)``."""
    async with AsyncExitStack() as stack:

        async def make(backend: str = "sqlite", options: Any = None, **overrides: Any) -> Rig:
            folder = tmp_path / f"rig-{uuid.uuid4().hex[:8]}"
            url = None
            if backend == "postgres":
                url = await stack.enter_async_context(pg.scratch_database("seqgrpc"))
            settings = settings_for(url, folder, **overrides)
            return await stack.enter_async_context(open_rig(settings, wire, options=options))

        yield make


@pytest.fixture(params=["sqlite", "postgres"])
async def rig(request: pytest.FixtureRequest, make_rig: MakeRig) -> Rig:
    return await make_rig(request.param)


@pytest.fixture
async def sqlite_rig(make_rig: MakeRig) -> Rig:
    return await make_rig("sqlite")


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ends with (it must fail)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in (error.trailing_metadata() or ()) if isinstance(v, str)}
