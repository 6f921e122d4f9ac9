"""Docs that run: every command in the README's bash blocks is executed here.

Commands run in a scratch directory that shares the project's virtualenv, so ``make``
targets see an installed environment and write nothing into the checkout. ``make test``
is the command running this very test, so it alone is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELF_COMMANDS = {"make test"}
# Benchmarks run for real, but small: the docs test proves the command works, not speed.
SMALL_BENCH = {
    "make bench-core": " BENCH_ARGS='--events 200 --repeats 1'",
    "make bench-ingest": " BENCH_ARGS='--events 32 --batches 1 --backends sqlite'",
}


def bash_commands(markdown: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", markdown.read_text(encoding="utf-8"), re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)  # copy2 keeps mtimes: no reinstall
    for name in (".venv", "docs", "src", "bench", "tests", "README.md"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_readme_has_the_two_quick_start_commands() -> None:
    commands = bash_commands(ROOT / "README.md")
    assert "make run" in commands
    assert "make test" in commands


@pytest.mark.parametrize(
    "command", [c for c in bash_commands(ROOT / "README.md") if c not in SELF_COMMANDS]
)
def test_readme_command_runs(command: str, workdir: Path) -> None:
    # Commands of one README depend on earlier ones (keygen before sign), so each test
    # replays the block up to and including its own command.
    commands = [c for c in bash_commands(ROOT / "README.md") if c not in SELF_COMMANDS]
    for step in commands[: commands.index(command) + 1]:
        step += SMALL_BENCH.get(step, "")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ | {"MAKEFLAGS": ""},
            check=False,
        )
        assert result.returncode == 0, f"{step!r} failed:\n{result.stdout}\n{result.stderr}"
