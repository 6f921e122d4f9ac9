"""Options and error handling shared by the commands that talk to a running sequencer
over HTTP; they work against this service or the Rust reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from ..client import (
    InvalidBaseURL,
    ReceiptMismatch,
    SequencerClient,
    SequencerError,
    SequencerUnavailable,
    UnexpectedResponse,
)
from .common import fail

Url = Annotated[
    str,
    typer.Option("--url", envvar="SEQUENCER_URL", help="Sequencer base URL"),
]
ApiKeyOpt = Annotated[
    str | None,
    # typer names the environment variable itself ("[env var: …]"): the help need not.
    typer.Option("--api-key", envvar="SEQUENCER_API_KEY", help="API key to authenticate with"),
]
ApiKeyFile = Annotated[Path | None, typer.Option("--api-key-file", help="File holding the API key")]


def api_key_from(key: str | None, key_file: Path | None) -> str | None:
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{key_file}: {exc}", 2)
    return key


async def call(url: str, key: str | None, work: Any) -> Any:
    try:
        async with SequencerClient(url, key) as client:
            return await work(client)
    except SequencerError as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        fail(escape(f"{exc.status} {exc.code}{reason}: {exc.message}"))
    except ReceiptMismatch as exc:
        fail(escape(f"receipt check failed: {exc}"))
    except InvalidBaseURL as exc:
        fail(escape(f"--url: {exc}"), 2)
    except UnexpectedResponse as exc:
        fail(escape(f"{url} does not answer as a sequencer: {exc}"))
    except SequencerUnavailable as exc:  # after the client's retries, each try named
        fail(escape(f"cannot reach {url}: {exc}"))
    except httpx.HTTPError as exc:
        fail(escape(f"cannot reach {url}: {type(exc).__name__}: {exc}"))
