"""The processes a drill starts besides PostgreSQL: sequencer servers and ``sequencer-cli``
commands, each a child process of its own, exactly as an operator would run them.

A drill's recovery is only worth something if it is done with the documented commands, so
every step (``migrate``, ``api-keys create``, ``repair-counters``, ``export-events``,
``sync-agent``, ``bulk-ingest``, ``verify-events --deep``) runs ``python -m
stateset_sequencer`` and its output is kept in the drill's folder for the reviewer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..testing.ports import free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 900.0
HEALTH_POLL_S = 0.1


class DrillError(RuntimeError):
    """A step of the drill could not be carried out; the message says which and why."""


def clean_environment() -> dict[str, str]:
    """This process's environment without the settings a drill gives its children itself,
    so an operator's own ``DATABASE_URL`` can never point a drill at a real database."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "VES_", "L2_", "SET_REGISTRY", "SEQUENCER_"))
        and k not in {"SERVER_WORKERS", "PORT", "GRPC_PORT", "HOST"}
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    command: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(slots=True)
class Cli:
    """Runs ``sequencer-cli`` commands in ``workdir``, logging each to ``log``."""

    workdir: Path
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    _children: set[subprocess.Popen[str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def kill_running(self) -> None:
        """SIGKILL every command still running (the drill is being torn down)."""
        with self._lock:
            running = list(self._children)
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def run(
        self,
        *args: str,
        ok: Sequence[int] = (0,),
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> Outcome:
        command = [sys.executable, "-m", "stateset_sequencer", *args]
        began = time.monotonic()
        with subprocess.Popen(
            command,
            cwd=self.workdir,
            env={**clean_environment(), **self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            with self._lock:
                self._children.add(child)
            try:
                stdout, stderr = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                raise DrillError(
                    f"sequencer-cli {args[0]} did not finish in {timeout:.0f} s"
                ) from None
            finally:
                with self._lock:
                    self._children.discard(child)
        done = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
        outcome = Outcome(
            command, done.returncode, done.stdout, done.stderr, time.monotonic() - began
        )
        self.history.append(
            {
                "command": ["sequencer-cli", *args],
                "exit": done.returncode,
                "seconds": round(outcome.seconds, 3),
            }
        )
        with self.log.open("a", encoding="utf-8") as sink:
            sink.write(f"$ sequencer-cli {' '.join(args)}\n{done.stdout}{done.stderr}")
            sink.write(f"[exit {done.returncode}]\n\n")
        if done.returncode not in ok:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            raise DrillError(f"sequencer-cli {args[0]} exited {done.returncode}: {last[0]}")
        return outcome


class Server:
    """One ``stateset-sequencer serve`` child on a loopback port of its own."""

    def __init__(self, workdir: Path, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = workdir / f"server-{name}.log"
        self.env = {
            **clean_environment(),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "GRPC_PORT": str(free_port()),
            "LOG_LEVEL": "warning",
            "SERVER_WORKERS": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.process is not None:
            raise DrillError(f"server {self.name} is already running")
        with self.out.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stateset_sequencer", "serve"],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise DrillError(f"server {self.name} exited with {code}: {self._tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise DrillError(f"server {self.name} did not answer /health: {self._tail()}")
            time.sleep(HEALTH_POLL_S)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, with whatever is in flight: the crash the ``instance`` drill is about."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.process = None

    def _tail(self) -> str:
        try:
            lines = self.out.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(lines[-5:]) or "(no output)"
