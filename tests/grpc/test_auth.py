"""Credentials and the shared steps of every call: the reference's metadata names, the
HTTP edge's limits and refusal counting (one budget over both APIs), the request id in
the initial metadata, one log line and the counters per call."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from structlog.testing import capture_logs

from stateset_sequencer.sequencer.auth import JwtSettings, issue_jwt
from stateset_sequencer.store.errors import OperationalError
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY

from .conftest import MakeRig, Rig, metadata, rpc_error

Code = grpc.StatusCode
JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}


def sync_state(rig: Rig, creds: tuple[tuple[str, str], ...] | None) -> Any:
    request = rig.wire.v2.GetSyncStateRequest(**QUERY)
    return rig.v2.GetSyncState(request, metadata=creds)


async def test_every_credential_form(make_rig: MakeRig) -> None:
    rig = await make_rig(JWT_SECRET=JWT_SECRET)
    token = issue_jwt(JwtSettings(JWT_SECRET), tenant_id=kit.TENANT, perms="read")
    for creds in (
        (("authorization", f"ApiKey {ADMIN_KEY}"),),
        (("authorization", ADMIN_KEY),),
        (("x-api-key", ADMIN_KEY),),
        (("authorization", f"Bearer {token}"),),
    ):
        state = await sync_state(rig, creds)
        assert state.head_sequence == 0, creds
    refusals: dict[str, tuple[tuple[tuple[str, str], ...] | None, str]] = {
        "none": (None, "Authentication required"),
        "unknown key": ((("x-api-key", "ss_unknown0000000000000000000000"),), "Invalid API key"),
        "bad token": ((("authorization", "Bearer not.a.jwt"),), "Invalid token"),
    }
    for name, (refused, text) in refusals.items():
        error = await rpc_error(sync_state(rig, refused))
        assert error.code() == Code.UNAUTHENTICATED, name
        assert (error.details() or "").startswith(text), (name, (error.details() or ""))
    # A read token is refused writes with the reference's words.
    push = rig.push_request([kit.event(1)])
    denied = await rpc_error(rig.v2.Push(push, metadata=(("authorization", f"Bearer {token}"),)))
    assert (denied.code(), (denied.details() or "")) == (
        Code.PERMISSION_DENIED,
        "write permission required",
    )


async def test_request_id_log_line_and_counters(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    with capture_logs() as logs:
        call = sync_state(rig, metadata(x_request_id="grpc-test-1"))
        await call
        given = dict(await call.initial_metadata())
        bad = sync_state(rig, metadata(x_request_id="no spaces allowed"))
        await bad
        replaced = dict(await bad.initial_metadata())
        await rpc_error(sync_state(rig, None))
    assert given["x-request-id"] == "grpc-test-1"
    assert uuid.UUID(replaced["x-request-id"])
    lines = [line for line in logs if line["event"] == "grpc request"]
    assert [(line["code"], line["method"]) for line in lines] == [
        ("OK", "/stateset.sequencer.v2.Sequencer/GetSyncState"),
        ("OK", "/stateset.sequencer.v2.Sequencer/GetSyncState"),
        ("UNAUTHENTICATED", "/stateset.sequencer.v2.Sequencer/GetSyncState"),
    ]
    assert lines[0]["request_id"] == "grpc-test-1"
    assert lines[0]["tenant_id"] == str(kit.TENANT) and "duration_ms" in lines[0]
    registry = rig.services.metrics.registry
    labels = {"method": "/stateset.sequencer.v2.Sequencer/GetSyncState", "code": "OK"}
    assert registry.get_sample_value("sequencer_grpc_requests_total", labels) == 2
    exposed = await rig.api.client.get("/metrics", headers=rig.api.headers())
    assert "sequencer_grpc_requests_total" in exposed.text
    assert registry.get_sample_value("sequencer_auth_failures_total", {"code": "missing_auth"}) == 1


async def test_limits_are_shared_with_http(make_rig: MakeRig) -> None:
    rig = await make_rig(RATE_LIMIT_PER_MINUTE=2, AUTH_FAILURE_LIMIT_PER_MINUTE=2)
    reader = await rig.api.key(rate_limit=1)
    assert (await sync_state(rig, metadata(reader))).head_sequence == 0
    over = await rpc_error(sync_state(rig, metadata(reader)))
    assert over.code() == Code.RESOURCE_EXHAUSTED
    assert dict(over.trailing_metadata() or ())["retry-after"].isdigit()
    # The tenant's budget is one over HTTP and gRPC (the key minting used the global
    # admin's budget, not the tenant's).
    other = await rig.api.key(uuid.UUID(int=0xA3))
    response = await rig.api.client.get(
        "/api/v1/ves/head",
        params={"tenant_id": str(uuid.UUID(int=0xA3)), "store_id": str(kit.STORE_ID)},
        headers=rig.api.headers(other),
    )
    assert response.status_code == 200
    request = rig.wire.v2.GetSyncStateRequest(
        tenant_id=str(uuid.UUID(int=0xA3)), store_id=str(kit.STORE_ID)
    )
    assert (await rig.v2.GetSyncState(request, metadata=metadata(other))).head_sequence == 0
    spent = await rpc_error(rig.v2.GetSyncState(request, metadata=metadata(other)))
    assert spent.code() == Code.RESOURCE_EXHAUSTED
    # Refused credentials are counted per source: past the limit even a good one waits.
    for _ in range(2):
        bad = await rpc_error(sync_state(rig, metadata("ss_wrong00000000000000000000000")))
        assert bad.code() == Code.UNAUTHENTICATED
    throttled = await rpc_error(sync_state(rig, metadata()))
    assert throttled.code() == Code.RESOURCE_EXHAUSTED
    assert (throttled.details() or "") == "Too many failed authentication attempts"


async def test_auth_disabled_runs_as_the_global_admin(make_rig: MakeRig) -> None:
    rig = await make_rig(AUTH_MODE="disabled", ALLOW_AUTH_DISABLED="true")
    state = await rig.v2.GetSyncState(rig.wire.v2.GetSyncStateRequest(**QUERY))
    assert state.head_sequence == 0


async def test_faults_become_statuses_in_our_words(make_rig: MakeRig) -> None:
    rig = await make_rig(GRPC_REQUEST_TIMEOUT_SECS=0.2)
    store = rig.store

    async def slow(*_: object) -> int:
        await asyncio.sleep(10)
        return 0

    async def down(*_: object) -> int:
        raise OperationalError("could not connect to server at 10.1.2.3: secret detail")

    async def broken(*_: object) -> int:
        raise RuntimeError("a bug with internals in its message")

    expected = {
        slow: (Code.DEADLINE_EXCEEDED, "GRPC_REQUEST_TIMEOUT_SECS"),
        down: (Code.UNAVAILABLE, "database unavailable"),
        broken: (Code.INTERNAL, "internal error"),
    }
    for fault, (code, text) in expected.items():
        store.head = fault
        try:
            error = await rpc_error(sync_state(rig, metadata()))
        finally:
            del store.head
        assert error.code() == code, (fault.__name__, (error.details() or ""))
        assert text in (error.details() or "") and "10.1.2.3" not in (error.details() or "")
        assert "bug" not in (error.details() or "")
    assert (await sync_state(rig, metadata())).head_sequence == 0
