"""``stateset-sequencer serve`` as a real process: the gRPC API beside HTTP (its port in
the startup line when it was chosen), the standard health and reflection services, a
graceful stop that ends open streams, ``GRPC_DISABLED``, and a port in use refused at
start with one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from stateset_sequencer.testing import kit
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import ServerProcess

from .conftest import WAIT_S, Wire, metadata

ADMIN_KEY = "ss_00000000" + "grpcserveradminkeyfortests000000"
ENV = {"BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY, "SEQUENCER_ENV": "test", "LOG_LEVEL": "info"}
SERVICES = {
    "stateset.sequencer.v2.Sequencer",
    "stateset.sequencer.v2.KeyManagement",
    "stateset.sequencer.v1.Sequencer",
}


def log_lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_", "GRPC_"))}
    return {**base, "HOST": "127.0.0.1", **ENV, **extra}


def test_serve_with_grpc_on_a_chosen_port(tmp_path: Path, wire: Wire) -> None:
    out = tmp_path / "server.out"
    with out.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-m", "stateset_sequencer", "serve"],
            cwd=tmp_path,
            env=child_env({"PORT": "0"}),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        port = None
        while port is None:
            assert child.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            for line in log_lines(out):
                if line.get("event") == "grpc listening":
                    port = int(str(line["port"]))
            time.sleep(0.05)
        assert port > 0
        asyncio.run(_talk(f"127.0.0.1:{port}", wire, child))
        code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 0, out.read_text()
    ended = [line for line in log_lines(out) if line.get("event") == "grpc request"]
    stream = [line for line in ended if str(line["method"]).endswith("/StreamEvents")]
    assert stream and stream[0]["code"] == "UNAVAILABLE", ended


async def _talk(target: str, wire: Wire, child: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICES):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = {s.name async for reply in replies for s in reply.list_services_response.service}
        assert listed >= SERVICES | {"grpc.health.v1.Health"}
        stub = wire.v2_grpc.SequencerStub(channel)
        answer = await stub.GetHealth(wire.empty.Empty(), metadata=metadata(ADMIN_KEY))
        assert answer.healthy
        stream = stub.StreamEvents(
            wire.v2.StreamEventsRequest(
                tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID), heartbeat_interval_ms=100
            ),
            metadata=metadata(ADMIN_KEY),
        )
        assert await asyncio.wait_for(stream.read(), WAIT_S) is not grpc.aio.EOF
        # A graceful stop ends the open stream, telling it where to resume.
        child.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _drain(stream)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
        assert dict(ended.value.trailing_metadata() or ())["x-resume-from-sequence"] == "1"


async def _drain(stream: Any) -> None:
    while True:
        message = await asyncio.wait_for(stream.read(), WAIT_S)
        assert message is not grpc.aio.EOF, "the stream ended without a status"


def test_grpc_disabled(tmp_path: Path) -> None:
    child = ServerProcess(tmp_path, {**ENV, "GRPC_DISABLED": "true"})
    child.start()
    try:
        assert httpx.get(child.url + "/health", timeout=5).status_code == 200
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", child.grpc_port)) != 0
    finally:
        child.stop()
    assert not [line for line in log_lines(child.out) if line.get("event") == "grpc listening"]


def test_a_grpc_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "stateset_sequencer", "serve"],
            cwd=tmp_path,
            env=child_env({"PORT": str(free_port()), "GRPC_PORT": str(port)}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GRPC_PORT" in result.stderr and "Traceback" not in result.stderr
