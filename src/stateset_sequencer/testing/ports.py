"""Loopback ports for the servers that tests, benchmarks and drills start.

Binding port 0 and handing the number on is racy: between closing the probe socket and the
child binding the port, the kernel may hand the same number to another process's probe (a
parallel test worker) or to an outgoing connection as its ephemeral port. So ports come from
below the kernel's ephemeral range, each parallel test worker draws from its own slice, each
process starts at its own place in that slice, and a candidate is taken only if it binds
without ``SO_REUSEADDR`` (so neither a listener nor a lingering connection holds it).
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import threading
from pathlib import Path

from ..config import TestEnvironment

LOW = 20000
HIGH = 32000  # exclusive; Linux's default ephemeral range starts at 32768
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_lock = threading.Lock()
_cursor: itertools.count[int] | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing holds now and no sibling process will pick."""
    low, high = _slice()
    if high - low < 16:
        return _kernel_port(host)
    global _cursor
    with _lock:
        if _cursor is None:
            _cursor = itertools.count((os.getpid() * 7919) % (high - low))
        for _ in range(high - low):
            port = low + next(_cursor) % (high - low)
            if _binds(host, port):
                return port
    return _kernel_port(host)


@functools.cache
def _slice() -> tuple[int, int]:
    top = min(HIGH, _ephemeral_low())
    found = TestEnvironment()
    worker = found.PYTEST_XDIST_WORKER
    count = int(found.PYTEST_XDIST_WORKER_COUNT) if found.PYTEST_XDIST_WORKER_COUNT.isdigit() else 1
    if not worker.startswith("gw") or not worker[2:].isdigit() or count < 2:
        return LOW, top
    width = (top - LOW) // count
    index = int(worker[2:]) % count
    return LOW + index * width, LOW + (index + 1) * width


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return HIGH


def _binds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _kernel_port(host: str) -> int:
    # The ephemeral range is narrowed to nothing below ours: let the kernel choose.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
