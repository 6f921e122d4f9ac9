"""Anchors (``--deep``): every anchored commitment of the range held against the registry,
field by field (events root, new state root, range, count), and its recorded transaction
against the canonical chain. With the commitment check (events against commitments) this
closes the proof from stored events to the chain.

The registry also knows how far each stream was anchored (``getHeadSequence``). Over a
whole stream, a head on chain past the store's last event means events that were
anchored, and so acknowledged, are missing here (a restore from a backup older than
the last anchor): ``ANCHORED_EVENTS_MISSING``, the one loss an in-database check cannot
see.

A commitment with no transaction is not a finding (it is waiting for the worker). One
whose recorded transaction the chain no longer holds is: before finality the worker
re-anchors it, after finality it means an anchor was lost. Without a chain client the
check cannot look; anchored commitments it could not compare are findings, because the
operator asked for the chain to be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...anchoring.faults import ChainError
from ...store.ports import Commitments
from .check import Check, Finding, StreamRun

if TYPE_CHECKING:
    from ...anchoring.anchorer import Anchorer


class AnchorCheck(Check):
    name = "anchors"

    def __init__(self, store: Commitments, anchorer: Anchorer | None) -> None:
        self._store = store
        self._anchorer = anchorer
        self._compared = 0
        self._unchecked = 0

    async def begin(self, run: StreamRun) -> list[Finding]:
        try:
            findings = await self._chain_head(run)
        except ChainError as exc:
            # Reported here even when the store holds no anchored commitment: a restore
            # that lost them all must not pass as "nothing to compare".
            self._unchecked += 1
            return [
                self._finding(
                    run, run.start, "ANCHOR_CHAIN_UNAVAILABLE", f"the chain did not answer: {exc}"
                )
            ]
        return findings + await self._commitments(run)

    async def _chain_head(self, run: StreamRun) -> list[Finding]:
        if self._anchorer is None or not run.whole:
            return []
        head = await self._anchorer.chain.head_sequence(run.stream.tenant_id, run.stream.store_id)
        if head <= run.state.max_sequence:
            return []
        return [
            self._finding(
                run,
                run.state.max_sequence + 1,
                "ANCHORED_EVENTS_MISSING",
                f"the registry holds this stream anchored up to sequence {head}; the store "
                f"ends at {run.state.max_sequence}: events "
                f"{run.state.max_sequence + 1}..{head} were acknowledged and are gone",
            )
        ]

    async def _commitments(self, run: StreamRun) -> list[Finding]:
        rows = [
            row
            for row in await self._store.list_commitments(run.stream, anchored=True)
            if row.sequence_end >= run.start and row.sequence_start <= run.end
        ]
        if not rows:
            return []
        if self._anchorer is None:
            self._unchecked += len(rows)
            return [
                self._finding(
                    run,
                    rows[0].sequence_start,
                    "ANCHOR_UNCHECKED",
                    f"{len(rows)} anchored commitments and no chain to compare them with "
                    "(set L2_RPC_URL, SET_REGISTRY_ADDRESS and SEQUENCER_PRIVATE_KEY)",
                )
            ]
        findings: list[Finding] = []
        for row in rows:
            assert row.chain_tx_hash is not None
            where = f"commitment {row.batch_id} ({row.sequence_start}..{row.sequence_end})"
            try:
                exists, checks = await self._anchorer.verify(row)
                block = await self._anchorer.chain.receipt_block(bytes(row.chain_tx_hash))
            except ChainError as exc:
                self._unchecked += 1
                findings.append(
                    self._finding(run, row.sequence_start, "ANCHOR_CHAIN_UNAVAILABLE", str(exc))
                )
                break  # the node is away: the rest would say the same
            self._compared += 1
            final = "final" if row.anchored_at is not None else "not yet final"
            if not exists:
                findings.append(
                    self._finding(
                        run,
                        row.sequence_start,
                        "ANCHOR_MISSING",
                        f"{where}: recorded as anchored ({final}) but the registry does "
                        "not hold the batch",
                    )
                )
                continue
            bad = [c for c in checks if not c.match]
            if bad:
                detail = "; ".join(f"{c.field} {c.stored} != {c.on_chain}" for c in bad)
                findings.append(
                    self._finding(run, row.sequence_start, "ANCHOR_MISMATCH", f"{where}: {detail}")
                )
            if block is None:
                findings.append(
                    self._finding(
                        run,
                        row.sequence_start,
                        "ANCHOR_TX_MISSING",
                        f"{where}: transaction 0x{bytes(row.chain_tx_hash).hex()} is not on "
                        f"the canonical chain ({final})",
                    )
                )
        return findings

    def _finding(self, run: StreamRun, sequence: int, code: str, message: str) -> Finding:
        return Finding(run.stream, sequence, self.name, code, message)

    def status(self) -> str:
        if self._anchorer is None and not self._unchecked:
            return "NOT CONFIGURED: no chain to compare with (no anchored commitments in range)"
        if self._anchorer is None:
            return f"NOT CONFIGURED: {self._unchecked} anchored commitments not compared"
        text = f"{self._compared} anchored commitments compared with the chain"
        return text + (f", {self._unchecked} not reachable" if self._unchecked else "")
