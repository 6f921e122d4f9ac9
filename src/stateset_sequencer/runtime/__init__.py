"""The composition root: the one place where settings become running parts.

Every process is wired here and nowhere else. The HTTP server calls :func:`start_services`
(the full start-up: migrations, bootstrap key, receipt signer, sequencer, authenticator);
every CLI command and ``doctor`` call :func:`open_runtime`, which opens the configured store
and nothing more, so that a maintenance command never migrates, mints keys or creates a
receipt key behind an operator's back. The database URL is parsed once, into
:class:`~stateset_sequencer.store.factory.DatabaseConfig`, and handed on from here.
"""

from __future__ import annotations

from .core import (
    Runtime,
    database_config,
    open_runtime,
    receipt_key,
    receipt_key_dir,
    receipt_public_key,
    snapshots,
)
from .service import IpNetwork, Services, StartupError, start_services

__all__ = [
    "IpNetwork",
    "Runtime",
    "Services",
    "StartupError",
    "database_config",
    "open_runtime",
    "receipt_key",
    "receipt_key_dir",
    "receipt_public_key",
    "snapshots",
    "start_services",
]
