"""A real HTTP server on loopback that answers from a script, one step per request, and
records what it was sent: the retry and failover tests run against real sockets, so that
what they see as a refused, reset or closed connection is what httpx really raises."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stateset_sequencer.testing.ports import free_port


@dataclass(frozen=True)
class Step:
    """One answer: a status with headers and a body, or ``close`` (the connection shut
    without a word), or ``reset`` (shut with a TCP reset), after ``delay`` seconds."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    close: bool = False
    reset: bool = False
    delay: float = 0.0


def ok(body: Any = None) -> Step:
    return Step(200, {} if body is None else body)


def status(code: int, retry_after: str | None = None) -> Step:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Step(code, {"error": f"scripted {code}", "code": "SCRIPTED"}, headers)


CLOSE = Step(close=True)
RESET = Step(reset=True)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: bytes
    at: float


class Scripted:
    """The server's script and log. When the script runs out it answers ``then``."""

    def __init__(self, steps: list[Step], then: Step) -> None:
        self._steps = list(steps)
        self._then = then
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self.url = ""

    def next(self, method: str, path: str, body: bytes) -> Step:
        with self._lock:
            self.seen.append(Seen(method, path, body, time.monotonic()))
            return self._steps.pop(0) if self._steps else self._then

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)


@contextmanager
def scripted(*steps: Step, then: Step | None = None) -> Iterator[Scripted]:
    script = Scripted(list(steps), then if then is not None else ok())

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            step = script.next(self.command, self.path, body)
            if step.delay:
                time.sleep(step.delay)
            if step.reset:
                # Linger 0: close() sends RST, so the client reads "connection reset".
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            if step.close:
                self.close_connection = True
                return
            content = step.raw if step.raw is not None else json.dumps(step.body).encode()
            try:
                self.send_response(step.status)
                self.send_header("content-type", step.content_type)
                self.send_header("content-length", str(len(content)))
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)
            except OSError:
                pass  # the client gave up first (its timeout): nobody to answer

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll, so that shutdown() does not wait half a second per server.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield script
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def dead_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}"


class Sleeps:
    """A ``RetryPolicy.sleep`` that records the waits asked for and waits for none."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
