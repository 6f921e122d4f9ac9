"""Docs that run: every command in the README's bash blocks is executed here.

Commands run in a scratch directory that shares the project's virtualenv, so ``make``
targets see an installed environment and write nothing into the checkout. ``make test``
is the command running this very test, so it alone is skipped. ``make run`` serves until
stopped: it is started in the background on a free loopback port (the docs' ``8080`` is
rewritten to it), later commands talk to it, and it is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stateset_sequencer.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SELF_COMMANDS = {"make test"}
SERVER_COMMANDS = {"make run"}
DOCS_PORT = "8080"
SERVER_START_S = 60.0
# Benchmarks run for real, but small: the docs test proves the command works, not speed.
SMALL_BENCH = {
    "make bench-core": " BENCH_ARGS='--events 200 --repeats 1'",
    "make bench-ingest": " BENCH_ARGS='--events 32 --batches 1 --backends sqlite'",
    "make bench-http": " BENCH_ARGS='--events 100 --batch-events 200 --duration 1 --streams 2'",
    "make bench-recovery": " BENCH_ARGS='--events 300 --streams 2'",
    "make bench-commit": " BENCH_ARGS='--events 300 --batch 64'",
    "make bench-anchor": " BENCH_ARGS='--streams 1 --events 64 --batch 16 --confirmations 2'",
    "make bench-hostile": " QUICK=1",
    "make bench-agent": " BENCH_ARGS='--quick'",
    "make bench-peers": " BENCH_ARGS='--events 1600'",
    "make drill": " DRILL_ARGS='instance --events 400 --streams 4 --agents 2 --rate 100'",
}


def bash_commands_of(block: str) -> list[str]:
    commands = []
    for line in block.splitlines():
        command = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def bash_commands(markdown: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", markdown.read_text(encoding="utf-8"), re.S)
    return [command for block in blocks for command in bash_commands_of(block)]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    copied = ("Makefile", "pyproject.toml", "constraints.txt", "package.json", "package-lock.json")
    for name in copied:
        shutil.copy2(ROOT / name, tmp_path / name)  # copy2 keeps mtimes: no reinstall
    linked = (".venv", "node_modules", "docs", "src", "bench", "tests", "scripts", "contracts")
    for name in (*linked, "README.md"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_readme_has_the_two_quick_start_commands() -> None:
    commands = bash_commands(ROOT / "README.md")
    assert "make run" in commands
    assert "make test" in commands


class Servers:
    """Background servers a docs block starts, stopped when the test ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = str(free_port())
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: str, env: dict[str, str]) -> None:
        log = (self.workdir / "server.log").open("ab")
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.workdir,
            env=env | {"HOST": "127.0.0.1", "PORT": self.port},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make's child goes down with the whole group
        )
        self.processes.append(process)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command!r} exited: {(self.workdir / 'server.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{command!r} never answered /health")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def servers(workdir: Path) -> Iterator[Servers]:
    started = Servers(workdir)
    try:
        yield started
    finally:
        started.stop()


def test_readme_commands_run_in_order(workdir: Path, servers: Servers) -> None:
    # Commands of the README depend on earlier ones (keygen before sign), so they run once,
    # in order, in one scratch directory, as a reader would type them; the first failure
    # names its command.
    commands = [c for c in bash_commands(ROOT / "README.md") if c not in SELF_COMMANDS]
    assert commands
    env = os.environ | {"MAKEFLAGS": ""}
    for step in commands:
        if step in SERVER_COMMANDS:
            servers.start(step, env)
            continue
        step = step.replace(f"localhost:{DOCS_PORT}", f"localhost:{servers.port}")
        step += SMALL_BENCH.get(step, "")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert result.returncode == 0, f"{step!r} failed:\n{result.stdout}\n{result.stderr}"


def _section_commands(markdown: Path, heading: str) -> list[str]:
    """The commands of the first bash block under ``heading``."""
    text = markdown.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, heading
    return bash_commands_of(block.group(1))


def test_sign_and_send_block_runs_twice_and_keeps_the_root_clean(
    workdir: Path, servers: Servers
) -> None:
    """A newcomer re-runs the walkthrough: the second run must succeed too (same agent key
    "already registered", the admin key file kept, the same receipt), and no key or event
    file may land in the checkout's root, where git would offer to commit it."""
    block = _section_commands(ROOT / "README.md", "## Sign and send events")
    before = set(os.listdir(workdir))
    env = os.environ | {"MAKEFLAGS": ""}
    servers.start("make run", env)
    outputs: list[list[str]] = []
    for _ in range(2):
        run: list[str] = []
        for step in block:
            step = step.replace(f"localhost:{DOCS_PORT}", f"localhost:{servers.port}")
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", step],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                check=False,
            )
            assert result.returncode == 0, f"{step!r} failed:\n{result.stdout}\n{result.stderr}"
            run.append(result.stdout)
        outputs.append(run)
    registered = [o for o in outputs[1] if "already registered" in o]
    assert len(registered) == 1, outputs[1]
    assert set(os.listdir(workdir)) - before <= {"data", "server.log"}
    assert (workdir / "data" / "admin.key").exists() and (workdir / "data" / "signed.json").exists()


def test_the_performance_guide_runs_the_benchmarks_the_readme_runs() -> None:
    # docs/PERFORMANCE.md names the benchmarks its figures come from; each is a README
    # command, which the test above runs (small), so the guide's commands cannot rot.
    guide = bash_commands(ROOT / "docs" / "PERFORMANCE.md")
    assert guide
    assert set(guide) <= set(bash_commands(ROOT / "README.md"))
