"""What every ``sequencer-cli`` command shares: the process's settings, one-line failures,
JSON output, private files, and the store the options name.

Settings are read from the environment once per process (:func:`settings`); an option
such as ``--database-url`` overrides them by copying (:func:`with_overrides`), so a
command never re-reads the environment or parses the database URL itself.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from ..config import Settings
from ..runtime import Runtime, open_runtime
from ..store.errors import StoreError
from ..store.ports import Store

err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="postgres://…, sqlite:///path; default: $DATABASE_URL"),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Embedded default's directory (./data)")
]


def program(name: str, summary: str) -> typer.Typer:
    """The root of an installed command. Both commands answer a bare call with help and
    fail in one line (no rich traceback, see :func:`fail`); neither installs shell
    completion."""
    return typer.Typer(
        name=name,
        help=summary,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")


@cache
def settings() -> Settings:
    """The environment's settings, read on first use: commands that need none (keygen,
    sign) keep working under a configuration that would not validate."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(f"configuration: {one_line(exc)}", 2)


def with_overrides(**values: Any) -> Settings:
    """The process's settings with the given options applied (None leaves a value as
    configured)."""
    update = {name: value for name, value in values.items() if value is not None}
    base = settings()
    if not update:
        return base
    try:
        return Settings.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        fail(f"configuration: {one_line(exc)}", 2)


def store_settings(database_url: str | None, data_dir: Path | None) -> Settings:
    return with_overrides(DATABASE_URL=database_url, DATA_DIR=data_dir)


async def with_runtime(configured: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Open the configured store, run ``work``, close it; a storage fault becomes a
    one-line failure."""
    opened = False
    try:
        async with open_runtime(configured) as runtime:
            opened = True
            return await work(runtime)
    except StoreError as exc:
        fail(str(exc) if opened else f"cannot open the database: {exc}")


def read_text(path: Path) -> str:
    """A file's text, or standard input for ``-``; a failure is a usage error."""
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file", 2)
    except IsADirectoryError:
        fail(f"{path}: is a directory", 2)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read ({exc})", 2)


def write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only, without a window where it is wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by umask and ignored for old files


def run_on_store(
    database_url: str | None, data_dir: Path | None, work: Callable[[Store], Awaitable[T]]
) -> T:
    """Run ``work`` on the store the options (or the environment) name."""
    return asyncio.run(
        with_runtime(store_settings(database_url, data_dir), lambda runtime: work(runtime.store))
    )


def run_on_runtime(
    database_url: str | None, data_dir: Path | None, work: Callable[[Runtime], Awaitable[T]]
) -> T:
    """Run ``work`` on the store the options name, with the settings it came from."""
    return asyncio.run(with_runtime(store_settings(database_url, data_dir), work))


def cli_actor() -> str:
    """Who the audit log names for a change made from this command line."""
    return f"sequencer-cli:{getpass.getuser()}"
