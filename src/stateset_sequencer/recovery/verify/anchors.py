"""Anchors (``--deep``): anchored state roots compared with the chain."""

from __future__ import annotations

from ...store.ports import Commitments
from .check import Check, Finding, StreamRun


class AnchorCheck(Check):
    """Compare anchored state roots with the chain. No chain client exists in this build
    yet, so the check says so rather than pretend to have looked."""

    name = "anchors"

    def __init__(self, store: Commitments) -> None:
        self._store = store
        self._anchored = 0

    async def begin(self, run: StreamRun) -> list[Finding]:
        rows = await self._store.list_commitments(run.stream)
        self._anchored += sum(1 for c in rows if c.chain_tx_hash is not None)
        return []

    def status(self) -> str:
        return (
            "NOT CONFIGURED: no chain client in this build; "
            f"{self._anchored} anchored commitments not compared with the chain"
        )
