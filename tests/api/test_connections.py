"""Connection limits on a real server process on loopback (issue 11, item 14): a head that
never completes, an idle keep-alive connection, and connections past the cap.

Every wait is a bounded loop on what the socket reports, never an assertion on time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path

from stateset_sequencer.testing.serverproc import server

ADMIN_KEY = "ss_00000000" + "connectionlimitsadminkey00000000"
WAIT_S = 20.0  # the bound of every wait; the timeouts under test are 1 s


def _env(tmp_path: Path, **limits: str) -> dict[str, str]:
    return {
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "SEQUENCER_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'limits.db'}",
        **limits,
    }


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait (bounded) until the server closes the connection; True if it did."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: sequencer.test\r\n\r\n"


def test_incomplete_heads_and_idle_connections_are_closed(tmp_path: Path) -> None:
    env = _env(tmp_path, HTTP_HEADER_TIMEOUT_SECS="1", HTTP_KEEPALIVE_TIMEOUT_SECS="1")
    with server(tmp_path, env) as (url, _out):
        silent = _connect(url)  # opens and says nothing
        half = _connect(url)
        half.sendall(b"GET /health HTTP/1.1\r\nHost: sequencer.test\r\n")  # no blank line
        idle = _connect(url)
        idle.sendall(GET_HEALTH)
        status, headers, _ = _response(idle)
        assert status == 200 and headers.get("connection") != "close"
        later = _connect(url)  # a second request whose head stops half way
        later.sendall(GET_HEALTH)
        assert _response(later)[0] == 200
        later.sendall(b"GET /health HTTP/1.1\r\n")
        # Refused before its body was read: answered at once, and what the client goes on
        # sending is dropped only until the deadline.
        refused = _connect(url)
        refused.sendall(
            b"POST /api/v1/schemas HTTP/1.1\r\nHost: sequencer.test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 9000000\r\n\r\n" + b" " * 1000
        )
        status, _, body = _response(refused)
        assert status == 401 and json.loads(body)["code"] == "missing_auth"

        assert _closed_by_server(half)
        assert _closed_by_server(silent)
        assert _closed_by_server(idle)  # the keep-alive timeout
        assert _closed_by_server(later)
        assert _closed_by_server(refused)
        for sock in (silent, half, idle, later, refused):
            sock.close()
    # SIGTERM stopped it: the refusal it counted was written on the way out (uvicorn
    # re-raises the signal after its graceful stop, which must not kill the process first).
    with contextlib.closing(sqlite3.connect(tmp_path / "limits.db")) as db:
        rows = db.execute("SELECT details FROM audit_log WHERE action = 'auth.failure'").fetchall()
    assert [json.loads(d)["code"] for (d,) in rows] == ["missing_auth"]


def test_connections_past_the_cap_get_503(tmp_path: Path) -> None:
    env = _env(tmp_path, HTTP_MAX_CONNECTIONS="3", HTTP_HEADER_TIMEOUT_SECS="60")
    with server(tmp_path, env) as (url, _out):
        held = [_connect(url) for _ in range(3)]
        for sock in held:  # each served once, then kept open (keep-alive)
            sock.sendall(GET_HEALTH)
            assert _response(sock)[0] == 200
        extra = _connect(url)
        extra.sendall(GET_HEALTH)
        status, headers, body = _response(extra)
        assert status == 503
        assert headers["connection"] == "close" and headers["retry-after"] == "1"
        error = json.loads(body)["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert error["details"]["reason"] == "TOO_MANY_CONNECTIONS"
        assert _closed_by_server(extra)
        extra.close()
        # The held ones are still served, and once they go the cap admits others.
        held[0].sendall(GET_HEALTH)
        assert _response(held[0])[0] == 200
        for sock in held:
            sock.close()
        deadline = time.monotonic() + WAIT_S
        while True:
            fresh = _connect(url)
            fresh.sendall(GET_HEALTH)
            status = _response(fresh)[0]
            fresh.close()
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200
