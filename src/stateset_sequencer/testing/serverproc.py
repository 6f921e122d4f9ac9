"""A real ``stateset-sequencer serve`` process on loopback, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

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
