"""The server: ``stateset-sequencer serve`` (also ``sequencer-cli serve``) runs the HTTP API
on uvicorn, wired by the composition root.

Configuration comes from the environment with the reference's names (``config.py``); the
two options here only override ``HOST`` and ``PORT``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn

from .. import __version__
from ..api.http.app import create_app
from ..config import Settings
from ..logs import configure
from ..runtime import StartupError, start_services
from ..sequencer.identity import IdentityError
from ..store.errors import StoreError
from .common import fail, program, with_overrides

Host = Annotated[
    str | None, typer.Option("--host", help="Listen address (default $HOST or 0.0.0.0)")
]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port ($PORT or 8080)")]


async def serve(settings: Settings) -> None:
    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    services = await start_services(settings)
    try:
        config = uvicorn.Config(
            create_app(services),
            host=settings.HOST,
            port=settings.PORT,
            log_config=None,
            access_log=False,  # our middleware writes one structured line per request
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        await uvicorn.Server(config).serve()
    finally:
        await services.close()


def run(host: str | None, port: int | None) -> None:
    settings = with_overrides(HOST=host, PORT=port)
    try:
        asyncio.run(serve(settings))
    except (StartupError, IdentityError) as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(f"database: {exc}")
    except KeyboardInterrupt:
        pass


def serve_command(host: Host = None, port: Port = None) -> None:
    """Serve the HTTP API (SQLite under ./data unless DATABASE_URL says otherwise)."""
    run(host, port)


def version_command() -> None:
    """Print the version."""
    typer.echo(__version__)


app = program("stateset-sequencer", "StateSet Sequencer service.")
app.command("serve")(serve_command)
app.command("version")(version_command)


def main() -> None:
    app()
