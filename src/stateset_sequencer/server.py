"""``stateset-sequencer serve`` (also ``sequencer-cli serve``): the HTTP service on uvicorn.

Configuration comes from the environment with the reference's names (see ``config.py``);
the two options here only override ``HOST`` and ``PORT``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn

from .api.http.app import create_app
from .api.http.services import StartupError, start_services
from .clikit import fail
from .config import Settings
from .logs import configure
from .sequencer.identity import IdentityError
from .store.base import StoreError


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
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["HOST"] = host
    if port is not None:
        overrides["PORT"] = port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(f"configuration: {' '.join(str(exc).split())[:300]}", 2)
    try:
        asyncio.run(serve(settings))
    except (StartupError, IdentityError) as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(f"database: {exc}")
    except KeyboardInterrupt:
        pass


Host = Annotated[
    str | None, typer.Option("--host", help="Listen address (default $HOST or 0.0.0.0)")
]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port ($PORT or 8080)")]

app = typer.Typer(
    name="stateset-sequencer",
    help="StateSet Sequencer service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("serve")
def serve_command(host: Host = None, port: Port = None) -> None:
    """Serve the HTTP API (SQLite under ./data unless DATABASE_URL says otherwise)."""
    run(host, port)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    from . import __version__

    typer.echo(__version__)


def main() -> None:
    app()
