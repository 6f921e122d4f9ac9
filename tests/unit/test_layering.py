"""The layering rules of docs/ARCHITECTURE.md, checked by reading every module's imports:
``ves/`` is pure, the client SDK and the agent never reach into the server (the gRPC
wire contract, ``proto/``, they share with it: it imports nothing of ours), and only
``store/`` names a storage adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "stateset_sequencer"

# Each room, and the rooms of ours it may import (itself always).
ALLOWED: dict[str, set[str]] = {
    "ves": set(),
    "proto": set(),
    "client": {"ves", "proto"},
    "agent": {"ves", "client", "proto"},
    # The drills drive the service from outside, as an operator does: processes, the
    # commands, HTTP and psql; never the store, the runtime or the sequencer in process.
    "drill": {"agent", "client", "recovery", "anchoring", "testing", "ves", "proto"},
}
ADAPTERS = ("store.sqlite", "store.postgres")


def _ours(module: Path) -> set[str]:
    """Our modules that ``module`` imports, as dotted names below the package."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stateset_sequencer."):
                    found.add(alias.name.removeprefix("stateset_sequencer."))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("stateset_sequencer."):
                    found.add(node.module.removeprefix("stateset_sequencer."))
                continue
            # A module's package is its folder, for __init__.py as for any other module.
            package = list(parts[:-1])
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
            if target:
                found.add(target)
            if not node.module:
                found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def _modules(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_what_it_may(room: str) -> None:
    allowed = {room} | ALLOWED[room]
    problems = []
    for module in _modules(room):
        for target in _ours(module):
            if target.split(".")[0] not in allowed:
                problems.append(f"{module.relative_to(PACKAGE)} imports {target}")
    assert not problems, "\n".join(problems)


def test_only_store_names_an_adapter() -> None:
    problems = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE)
        if relative.parts[0] in ("store", "testing"):
            continue
        for target in _ours(module):
            if target.startswith(ADAPTERS):
                problems.append(f"{relative} imports {target}")
    assert not problems, "\n".join(problems)


def test_typer_lives_only_in_the_cli() -> None:
    problems = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE)
        if relative.parts[0] == "cli":
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "typer" or n.startswith("typer.") for n in names):
                problems.append(str(relative))
    assert not problems, "\n".join(problems)


def test_the_reader_sees_relative_imports() -> None:
    """The check is only as good as its parser: it must see what a module imports."""
    found = _ours(PACKAGE / "agent" / "service.py")
    assert {"client", "ves.envelope", "agent.outbox"} <= found
