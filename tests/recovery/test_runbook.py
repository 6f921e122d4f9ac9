"""Runbook validation: every ```bash and ```sql block of docs/DISASTER_RECOVERY.md,
docs/RUNBOOK.md, docs/SCALING.md, docs/AGENT.md, docs/STREAMS.md and docs/GRPC.md runs, in
order, against a real PostgreSQL database and a real server.

Each document becomes ONE bash script run with ``set -euo pipefail``, so its blocks share
shell variables and files the way an operator's terminal session would; a ```sql block
becomes a ``psql "$DATABASE_URL" -v ON_ERROR_STOP=1`` call inside that script. ```text
blocks are examples (other systems, or commands that would stop the service) and are not
run; any other fence is an error, so nothing is silently left untested.

The script runs in a scratch directory that links the project's ``.venv``, with
``DATABASE_URL`` (a scratch database seeded with events), ``RESTORE_DATABASE_URL`` (an
empty one) and ``VES_SEQUENCER_SIGNING_KEY`` (the key the seed events' receipts were signed
with, as the service would have it) exported. The service runs on a free loopback port;
the documents' ``localhost:8080`` is rewritten to it, and its gRPC port is ``$GRPC_PORT``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import server
from tests.recovery.conftest import STREAM_2, populate

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("DISASTER_RECOVERY.md", "RUNBOOK.md", "SCALING.md", "AGENT.md", "STREAMS.md", "GRPC.md")
RUN = {"bash", "sql"}
SHOW = {"text"}
DOCS_ADDRESS = "localhost:8080"
SCRIPT_TIMEOUT_S = 300
SQL_END = "RUNBOOK_SQL_END"


@dataclass(frozen=True, slots=True)
class Block:
    lang: str
    body: str
    line: int  # of the opening fence, for messages


def blocks(markdown: str) -> list[Block]:
    """Every fenced block with its language; an unlabelled fence counts as language ''."""
    found = []
    for match in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", markdown, re.S | re.M):
        line = markdown.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1).strip(), match.group(2), line))
    return found


def script(name: str, markdown: str, address: str) -> str:
    parts = ["set -euo pipefail"]
    for block in blocks(markdown):
        if block.lang in SHOW:
            continue
        if block.lang not in RUN:
            raise ValueError(
                f"{name} line {block.line}: block type {block.lang!r} is neither run "
                f"({', '.join(sorted(RUN))}) nor shown ({', '.join(sorted(SHOW))})"
            )
        parts.append(f"echo '### {name} line {block.line} ({block.lang})' >&2")
        body = block.body.replace(DOCS_ADDRESS, address)
        if block.lang == "sql":
            assert SQL_END not in body
            psql = 'psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -f -'
            body = f"{psql} <<'{SQL_END}'\n{body}{SQL_END}\n"
        parts.append(body)
    parts.append(f"echo '### {name}: every block ran' >&2")
    return "\n".join(parts) + "\n"


def test_the_parser_knows_every_block_type() -> None:
    sample = "a\n```bash\necho hi\n```\n```sql\nSELECT 1;\n```\n```text\nnot run\n```\n"
    assert [b.lang for b in blocks(sample)] == ["bash", "sql", "text"]
    made = script("x.md", sample, "127.0.0.1:1")
    assert "echo hi" in made and "SELECT 1;" in made and "not run" not in made
    for fence in ("```python\nprint(1)\n```\n", "```\nls\n```\n"):
        with pytest.raises(ValueError, match="neither run"):
            script("x.md", fence, "127.0.0.1:1")


@pytest.mark.parametrize("name", DOCS)
def test_every_doc_runs_something_and_states_the_convention(name: str) -> None:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    langs = {b.lang for b in blocks(text)}
    assert {"bash", "sql"} <= langs, f"{name} has no bash or no sql block to validate"
    assert "tests/recovery/test_runbook.py" in text.split("\n## ", 1)[0]
    script(name, text, "127.0.0.1:1")  # unknown block types fail here, before any work


@pytest.fixture
async def databases() -> AsyncIterator[dict[str, tuple[str, str]]]:
    """Per document: a seeded database (two streams) and an empty one to restore into."""
    async with AsyncExitStack() as stack:
        made = {}
        for name in DOCS:
            dsn = await stack.enter_async_context(pg.scratch_database("runbook"))
            target = await stack.enter_async_context(pg.scratch_database("restore"))
            store = await open_store(parse_database_url(dsn, Path()), max_connections=4)
            try:
                await store.migrate()
                await populate(store, 12)
                await populate(store, 4, stream=STREAM_2)
            finally:
                await store.close()
            made[name] = (dsn, target)
        yield made


def test_runbook_blocks_run(databases: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    # The documents run at once, each against its own databases and server: the time
    # goes into starting sequencer-cli processes, and the two sessions share nothing.
    with ExitStack() as stack:
        running = {}
        for name in DOCS:
            dsn, target = databases[name]
            base = tmp_path / name.removesuffix(".md").lower()
            workdir = base / "work"
            workdir.mkdir(parents=True)
            (workdir / ".venv").symlink_to(ROOT / ".venv")
            (workdir / "docs").symlink_to(ROOT / "docs")
            env = {
                "DATABASE_URL": dsn,
                "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
                "GRPC_PORT": str(free_port()),
            }
            url, log = stack.enter_context(server(base, env))
            text = script(name, (ROOT / "docs" / name).read_text(encoding="utf-8"), url[7:])
            (workdir / "runbook.sh").write_text(text, encoding="utf-8")
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
            process = subprocess.Popen(
                ["bash", "runbook.sh"],
                cwd=workdir,
                env=clean | env | {"RESTORE_DATABASE_URL": target},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            stack.callback(_stop, process)
            running[name] = (process, log)
        deadline = time.monotonic() + SCRIPT_TIMEOUT_S
        problems = []
        for name, (process, log) in running.items():
            try:
                out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
                problems.append(f"{name}: did not finish in {SCRIPT_TIMEOUT_S} s\n{err[-2000:]}")
                continue
            markers = [line for line in err.splitlines() if line.startswith("### ")]
            if process.returncode != 0 or markers[-1:] != [f"### {name}: every block ran"]:
                problems.append(
                    f"{name}: {markers[-1] if markers else 'before the first block'} failed "
                    f"(exit {process.returncode})\n--- stdout\n{out[-4000:]}\n"
                    f"--- stderr\n{err[-4000:]}\n--- server\n{log.read_text()[-2000:]}"
                )
    assert not problems, "\n\n".join(problems)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
