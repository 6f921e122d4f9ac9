"""A hostile client against a real server process on loopback (issue 11, items 10, 13, 14).

Starts ``python -m stateset_sequencer serve`` on a scratch SQLite database and measures
the server process's resident memory (``/proc/PID/status`` VmRSS, or psutil) before,
during and after each phase:

1. ``--bodies`` unauthenticated 9 MiB bodies to ``POST /api/v1/schemas``, all at once:
   how many got a 401, how long until the last answer, the RSS peak and what remains;
2. ``--bad-keys`` requests with an unknown API key: the answers by status, and the
   ``auth.failure`` audit rows added (counted after shutdown, when counted refusals are
   written) with the refusals they account for;
3. ``--slow`` connections that send a request head one header line every 2 s, and
   ``--idle`` connections that send nothing: how many are still open after the header
   and keep-alive timeouts (waited for: ``HTTP_HEADER_TIMEOUT_SECS`` + 3 s).

``--pythonpath DIR`` runs another checkout's server (``git worktree add /tmp/old HEAD``
then ``--pythonpath /tmp/old/src``) for a before/after comparison. Bounded in time (about
a minute) and in count; prints the figures as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from stateset_sequencer.testing.ports import free_port

ADMIN_KEY = "ss_00000000" + "hostilebenchadminkey000000000000"
BAD_KEY = "ss_" + "q" * 40
STREAM = {"tenant_id": str(uuid.UUID(int=0xA1)), "store_id": str(uuid.UUID(int=0xB1))}
MiB = 1024 * 1024
HEADER_TIMEOUT_S = 10.0  # the server's default, set explicitly so both runs wait alike


def rss_mb(pid: int) -> float:
    try:
        import psutil  # type: ignore[import-untyped, import-not-found, unused-ignore]

        return float(psutil.Process(pid).memory_info().rss) / MiB
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def server(workdir: Path, pythonpath: str | None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{workdir / 'hostile.db'}",
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "SEQUENCER_ENV": "test",
            "LOG_LEVEL": "error",
            "HTTP_HEADER_TIMEOUT_SECS": str(HEADER_TIMEOUT_S),
        }
    )
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with (workdir / "server.out").open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "stateset_sequencer", "serve"],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit((workdir / "server.out").read_text())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sampler:
    """The RSS peak while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def big_body(port: int, size: int) -> tuple[int | None, float]:
    """One unauthenticated POST of ``size`` bytes; (status or None, seconds to answer)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /api/v1/schemas HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    status: int | None = None

    async def upload() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            chunk = b" " * (256 * 1024)
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()

    sending = asyncio.create_task(upload())
    try:
        line = await asyncio.wait_for(reader.readline(), 60)
        if line:
            status = int(line.split()[1])
    except (TimeoutError, ConnectionError, IndexError, ValueError):
        pass
    answered = time.monotonic() - started
    sending.cancel()
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return status, answered


async def phase_bodies(pid: int, port: int, count: int) -> dict[str, Any]:
    before = rss_mb(pid)
    with Sampler(pid) as sampler:
        results = await asyncio.gather(*(big_body(port, 9 * MiB) for _ in range(count)))
    await asyncio.sleep(3)
    return {
        "phase": f"{count} unauthenticated 9 MiB bodies to POST /api/v1/schemas",
        "statuses": dict(Counter(str(s) for s, _ in results)),
        "slowest_answer_s": round(max(t for _, t in results), 2),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak, 1),
        "rss_after_mb": round(rss_mb(pid), 1),
    }


async def phase_bad_keys(pid: int, port: int, count: int) -> dict[str, Any]:
    before = rss_mb(pid)
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=8)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def one() -> None:
            response = await client.get(
                "/api/v1/ves/head",
                params=STREAM,
                headers={"Authorization": f"ApiKey {BAD_KEY}"},
            )
            statuses[response.status_code] += 1

        with Sampler(pid) as sampler:
            for start in range(0, count, 50):
                await asyncio.gather(*(one() for _ in range(min(50, count - start))))
    return {
        "phase": f"{count} requests with an unknown API key",
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(time.monotonic() - started, 2),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak, 1),
    }


def _is_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def phase_connections(pid: int, port: int, slow: int, idle: int) -> dict[str, Any]:
    before = rss_mb(pid)
    slow_socks: list[socket.socket] = []
    idle_socks: list[socket.socket] = []
    for _ in range(slow):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
        slow_socks.append(sock)
    for _ in range(idle):
        idle_socks.append(socket.create_connection(("127.0.0.1", port)))
    opened = time.monotonic()
    with Sampler(pid) as sampler:
        while time.monotonic() - opened < HEADER_TIMEOUT_S + 3:
            for sock in slow_socks:  # one more header line, never the blank one
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n", socket.MSG_DONTWAIT)
            await asyncio.sleep(2)
    result = {
        "phase": f"{slow} slow-header and {idle} idle connections, "
        f"after {HEADER_TIMEOUT_S + 3:g} s",
        "slow_still_open": sum(_is_open(s) for s in slow_socks),
        "idle_still_open": sum(_is_open(s) for s in idle_socks),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak, 1),
    }
    for sock in slow_socks + idle_socks:
        sock.close()
    await asyncio.sleep(1)
    result["rss_after_mb"] = round(rss_mb(pid), 1)
    return result


def audit_rows(database: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT details FROM audit_log WHERE action = 'auth.failure'").fetchall()
    counted = sum(int(json.loads(d or "{}").get("count", 1)) for (d,) in rows)
    return {"auth_failure_rows": len(rows), "refusals_they_count": counted}


async def run(args: argparse.Namespace, workdir: Path) -> None:
    label = args.pythonpath or "this checkout"
    with server(workdir, args.pythonpath) as (process, port):
        print(json.dumps({"server": label, "rss_idle_mb": round(rss_mb(process.pid), 1)}))
        for phase in (
            phase_bodies(process.pid, port, args.bodies),
            phase_bad_keys(process.pid, port, args.bad_keys),
            phase_connections(process.pid, port, args.slow, args.idle),
        ):
            print(json.dumps(await phase), flush=True)
        during = audit_rows(workdir / "hostile.db")
    after = audit_rows(workdir / "hostile.db")
    print(json.dumps({"audit_while_serving": during, "audit_after_shutdown": after}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythonpath", help="serve another checkout's src/")
    parser.add_argument("--bodies", type=int, default=30)
    parser.add_argument("--bad-keys", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--idle", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
