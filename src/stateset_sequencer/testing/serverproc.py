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


@contextmanager
def server(cwd: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """Start ``stateset-sequencer serve`` and wait for /health; stop it with SIGTERM."""
    port = free_port()
    out = cwd / f"server-{port}.out"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
    full_env = {**base_env, "HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "warning", **env}
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "stateset_sequencer", "serve"],
            cwd=cwd,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"server exited with {process.returncode}:\n{out.read_text()}")
                try:
                    if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not answer /health:\n{out.read_text()}")
                time.sleep(0.1)
            yield url, out
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
