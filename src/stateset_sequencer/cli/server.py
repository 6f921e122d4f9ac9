"""The server: ``stateset-sequencer serve`` (also ``sequencer-cli serve``) runs the HTTP API
on uvicorn and, unless ``GRPC_DISABLED``, the gRPC API beside it on ``GRPC_PORT``
(docs/GRPC.md), both over the services the composition root wires.

Configuration comes from the environment with the reference's names (``config.py``); the
options here only override ``HOST``, ``PORT``, ``DATABASE_URL`` and ``DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from .. import __version__
from ..api.http.connections import protocol_class
from ..config import Settings
from ..logs import configure
from ..runtime import StartupError, start_services
from ..sequencer.identity import IdentityError
from ..store.errors import StoreError
from .common import DatabaseUrl, DataDir, fail, program, with_overrides

Host = Annotated[
    str | None, typer.Option("--host", help="Listen address (default $HOST or 0.0.0.0)")
]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port ($PORT or 8080)")]


async def serve(settings: Settings) -> None:
    # The app (and the anchoring routes' Ethereum libraries) only for the command that
    # serves it: every other command starts a second sooner.
    import structlog

    from ..api.grpc import GrpcServer
    from ..api.http.app import create_app

    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    services = await start_services(settings)
    grpc_server: GrpcServer | None = None
    try:
        if not settings.GRPC_DISABLED:
            # Before HTTP: a gRPC port that cannot be bound stops the start, named.
            grpc_server = GrpcServer(services)
            port = await grpc_server.start()
            structlog.get_logger("stateset_sequencer.grpc").info(
                "grpc listening", host=settings.HOST, port=port
            )
        config = uvicorn.Config(
            create_app(services),
            host=settings.HOST,
            port=settings.PORT,
            log_config=None,
            access_log=False,  # our middleware writes one structured line per request
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            # Our HTTP/1.1 protocol: uvicorn's, with a deadline for request heads and a
            # connection cap (api/http/connections.py); it also sets the keep-alive timeout.
            http=protocol_class(
                header_timeout=settings.HTTP_HEADER_TIMEOUT_SECS,
                keepalive_timeout=settings.HTTP_KEEPALIVE_TIMEOUT_SECS,
                max_connections=settings.HTTP_MAX_CONNECTIONS,
            ),
        )
        with _signals_after_shutdown():
            await uvicorn.Server(config).serve()
    finally:
        if grpc_server is not None:
            # Streams end first, told where to resume; calls in flight get a grace.
            await grpc_server.stop()
        await services.close()


@contextmanager
def _signals_after_shutdown() -> Iterator[None]:
    """uvicorn stops gracefully on SIGTERM or SIGINT and then raises the same signal again
    "for the expected behaviour": with the default handlers that kills the process (or
    cancels the main task) before :meth:`Services.close` has run, and what the services
    still hold (the counted auth refusals) would be lost. The re-raised signal lands
    here instead and is ignored: the process closes its services and exits."""
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(
    host: str | None,
    port: int | None,
    database_url: str | None = None,
    data_dir: Path | None = None,
) -> None:
    settings = with_overrides(HOST=host, PORT=port, DATABASE_URL=database_url, DATA_DIR=data_dir)
    try:
        asyncio.run(serve(settings))
    except (StartupError, IdentityError) as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(f"database: {exc}")
    except KeyboardInterrupt:
        pass


def serve_command(
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the HTTP API (SQLite under ./data unless DATABASE_URL says otherwise)."""
    run(host, port, database_url, data_dir)


def version_command() -> None:
    """Print the version."""
    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


def with_version_option(app: typer.Typer) -> typer.Typer:
    """``--version`` on a command's root, beside its ``version`` command."""

    @app.callback()
    def root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_print_version, is_eager=True, help="Print the version."
            ),
        ] = False,
    ) -> None:
        pass

    return app


app = with_version_option(program("stateset-sequencer", "StateSet Sequencer service."))
app.command("serve")(serve_command)
app.command("version")(version_command)


def main() -> None:
    app()
