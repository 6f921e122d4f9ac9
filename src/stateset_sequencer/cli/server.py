"""The server: ``stateset-sequencer serve`` (also ``sequencer-cli serve``) runs the HTTP API
on uvicorn and, unless ``GRPC_DISABLED``, the gRPC API beside it on ``GRPC_PORT``
(docs/GRPC.md), both over the services the composition root wires: in this process, or
with ``--workers N`` (N > 1) in N worker processes under a supervisor
(``runtime/workers.py``, docs/SCALING.md).

Configuration comes from the environment with the reference's names (``config.py``); the
options here only override ``HOST``, ``PORT``, ``DATABASE_URL``, ``DATA_DIR`` and
``SERVER_WORKERS``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..runtime import StartupError
from ..runtime.workers import serve, supervise, worker_count
from ..sequencer.identity import IdentityError
from ..store.errors import StoreError
from .common import DatabaseUrl, DataDir, fail, program, with_overrides

Host = Annotated[
    str | None, typer.Option("--host", help="Listen address (default $HOST or 0.0.0.0)")
]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port ($PORT or 8080)")]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=256,
        help="Server processes ($SERVER_WORKERS; default one per CPU on PostgreSQL, 1 on SQLite)",
    ),
]


def run(
    host: str | None,
    port: int | None,
    database_url: str | None = None,
    data_dir: Path | None = None,
    workers: int | None = None,
) -> None:
    settings = with_overrides(
        HOST=host,
        PORT=port,
        DATABASE_URL=database_url,
        DATA_DIR=data_dir,
        SERVER_WORKERS=workers,
    )
    try:
        count = worker_count(settings)
        if count == 1:
            # No supervisor: the one process serves, exactly as before --workers existed.
            asyncio.run(serve(settings))
        else:
            supervise(settings, count)
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
    workers: Workers = None,
) -> None:
    """Serve the HTTP API (SQLite under ./data unless DATABASE_URL says otherwise)."""
    run(host, port, database_url, data_dir, workers)


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
