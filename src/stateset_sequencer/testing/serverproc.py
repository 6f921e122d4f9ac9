"""A real ``stateset-sequencer serve`` process on loopback, for end-to-end tests, and a
stand-in that answers with receipts the real one never issues."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ..ves.signing import ReceiptSigner
from . import kit

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A ``stateset-sequencer serve`` child that can be stopped, killed and started again
    on the same port (agents keep their configured URL across a restart)."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        port: int | None = None,
        grpc_port: int | None = None,
    ) -> None:
        self.cwd = cwd
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A free port of its own for the gRPC API: PORT + 1, the default, may be taken by
        # another test's server.
        given = env.get("GRPC_PORT")
        self.grpc_port = int(given) if given else (grpc_port or free_port())
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.out = cwd / f"server-{self.port}.out"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
        self.env = {
            **base_env,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "GRPC_PORT": str(self.grpc_port),
            "LOG_LEVEL": "warning",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        with self.out.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stateset_sequencer", "serve"],
                cwd=self.cwd,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"server exited with {code}:\n{self.out.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not answer /health:\n{self.out.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the crash, with whatever was in flight."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None


@contextmanager
def server(cwd: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """Start ``stateset-sequencer serve`` and wait for /health; stop it with SIGTERM."""
    child = ServerProcess(cwd, env)
    child.start()
    try:
        yield child.url, child.out
    finally:
        child.stop()


@contextmanager
def fake_sequencer(receipts: ReceiptSigner, *, publish_key: bool = True) -> Iterator[str]:
    """A stand-in sequencer on loopback that answers ``/api/v1/ves/sequencer`` and ingest
    with receipts from ``receipts`` (say, unsigned or signed with another key than the
    published one, which the real service never does), for the client-side checks of
    ``sequencer-cli``. Yields its base URL."""
    info = json.dumps(kit.sequencer_answer(receipts, publish_key=publish_key)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/v1/ves/sequencer":
                self._answer(200, info)
            else:
                self._answer(404, b'{"error": "not found", "code": "NOT_FOUND"}')

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self._answer(200, json.dumps(kit.ingest_answer(body, receipts)).encode())

        def _answer(self, status: int, content: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
