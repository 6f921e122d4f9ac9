"""Helpers every ``sequencer-cli`` command module shares: one-line failures, JSON output,
and opening the configured store."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from .config import Settings
from .store.base import Store, StoreError
from .store.factory import describe, open_store

err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="postgres://…, sqlite:///path; default: $DATABASE_URL"),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Embedded default's directory (./data)")
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")


async def with_store(
    database_url: str | None, data_dir: Path | None, work: Callable[[Store], Awaitable[T]]
) -> T:
    """Open the store the options (or the environment) name, run ``work``, close it; a
    storage fault becomes a one-line failure."""
    settings = Settings()
    url = database_url if database_url is not None else settings.DATABASE_URL
    folder = data_dir if data_dir is not None else settings.DATA_DIR
    try:
        store: Store = await open_store(url, folder, max_connections=2)
    except StoreError as exc:
        fail(f"cannot open the database: {exc}")
    try:
        return await work(store)
    except StoreError as exc:
        fail(str(exc))
    finally:
        await store.close()


def target(database_url: str | None, data_dir: Path | None) -> str:
    settings = Settings()
    url = database_url if database_url is not None else settings.DATABASE_URL
    dialect, where = describe(url, data_dir if data_dir is not None else settings.DATA_DIR)
    return f"{dialect} ({redact(where)})"


def redact(target: str) -> str:
    """Hide a password in a DSN before printing it."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", target)


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
