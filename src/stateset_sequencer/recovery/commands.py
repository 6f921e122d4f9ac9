"""``sequencer-cli`` commands of the recovery toolkit (export-events, verify-events, …)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the recovery commands to the top-level command tree."""
