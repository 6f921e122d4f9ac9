"""A real ``stateset-sequencer serve`` process on loopback, for end-to-end tests, and a
stand-in that answers with receipts the real one never issues."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
from .ports import free_port

START_TIMEOUT_S = 30.0
# A supervisor's workers start side by side on a shared machine, each as slow as one
# server; its graceful stop waits for every worker's.
WORKERS_START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
WORKERS_STOP_TIMEOUT_S = 45.0


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a supervisor's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def listening_sockets(port: int) -> int:
    """How many sockets listen on TCP ``port`` of this host (each worker binds its own
    gRPC socket with SO_REUSEPORT; the HTTP socket is one, shared)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


class ServerProcess:
    """A ``stateset-sequencer serve`` child that can be stopped, killed and started again
    on the same port (agents keep their configured URL across a restart).

    ``workers``: the server's ``--workers`` (``SERVER_WORKERS``); 1 by default, so a
    test sees one process whatever the machine, None for the server's own default. With
    more, :meth:`start` returns once every worker listens."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        port: int | None = None,
        grpc_port: int | None = None,
        *,
        workers: int | None = 1,
    ) -> None:
        self.cwd = cwd
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A free port of its own for the gRPC API: PORT + 1, the default, may be taken by
        # another test's server.
        given = env.get("GRPC_PORT")
        self.grpc_port = int(given) if given else (grpc_port or free_port())
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.out = cwd / f"server-{self.port}.out"
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "VES_")) and k != "SERVER_WORKERS"
        }
        self.env = {
            **base_env,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "GRPC_PORT": str(self.grpc_port),
            "LOG_LEVEL": "warning",
            **({} if workers is None else {"SERVER_WORKERS": str(workers)}),
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
        several = self.workers is not None and self.workers > 1
        deadline = time.monotonic() + (WORKERS_START_TIMEOUT_S if several else START_TIMEOUT_S)
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"server exited with {code}:\n{self.out.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200 and (
                    not several or self.workers_listening()
                ):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not answer /health:\n{self.out.read_text()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The supervisor's workers (none for a single process)."""
        return [] if self.process is None else children(self.process.pid)

    def workers_listening(self) -> bool:
        """Every worker started and listens: each binds a gRPC socket of its own (with
        GRPC_DISABLED, every worker process exists)."""
        expected = self.workers or 1
        if len(self.worker_pids()) < expected:
            return False
        return self.env.get("GRPC_DISABLED", "").lower() == "true" or (
            listening_sockets(self.grpc_port) >= expected
        )

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown (of every worker, under a supervisor)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        several = self.workers is not None and self.workers > 1
        try:
            self.process.wait(timeout=WORKERS_STOP_TIMEOUT_S if several else STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the crash, with whatever was in flight; a supervisor's workers with it,
        as a host's crash would take them."""
        if self.process is None:
            return
        # The supervisor first, so that it cannot start a worker in place of one killed.
        workers = children(self.process.pid)
        self.process.kill()
        self.process.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None


@contextmanager
def server(
    cwd: Path, env: dict[str, str], *, workers: int | None = 1
) -> Iterator[tuple[str, Path]]:
    """Start ``stateset-sequencer serve`` and wait for /health; stop it with SIGTERM."""
    child = ServerProcess(cwd, env, workers=workers)
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
