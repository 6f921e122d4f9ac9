"""Anchoring rules: which commitment goes on chain when, how an anchor becomes final, and
how a stored commitment is held against what the chain says (docs/ANCHORING.md).

- **Stream order.** The registry's strict mode reverts a batch whose ``prevStateRoot`` or
  start does not continue the last one of its stream, so a commitment is sent only once
  the one before it in its stream has a transaction.
- **Already on chain.** ``batchExists`` is asked first. When it says yes (a send whose
  answer was lost, a second process, the anchor service) nothing is sent: the registry's
  ``BatchCommitted`` log for the batch gives the real transaction and block, which are
  recorded as ours would be. No placeholder hash is ever stored.
- **Finality.** A sent anchor records its transaction and block with no ``anchored_at``.
  The finality pass sets ``anchored_at`` once the block is ``confirmations`` deep and
  ``getBatchCommitment`` agrees with the stored commitment field by field. A transaction
  the canonical chain no longer holds (a reorg) has its chain fields cleared, and the
  commitment is anchored again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from ..store.ports import Commitments
from ..store.records import AnchorOutcome, CommitmentRow, StreamKey
from ..ves import anchor
from .chain import Chain, ChainError, ChainFailure, OnChainBatch
from .contract import BatchCommittedLog
from .faults import AnchorError as AnchorError
from .faults import AnchorReason as AnchorReason

log = structlog.get_logger("stateset_sequencer.anchoring")


@dataclass(frozen=True, slots=True)
class FieldCheck:
    field: str
    stored: str | int
    on_chain: str | int | None
    match: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "stored": self.stored,
            "on_chain": self.on_chain,
            "match": self.match,
        }


@dataclass(frozen=True, slots=True)
class AnchorResult:
    status: str  # "anchored" (sent now) or "already_anchored"
    row: CommitmentRow
    gas_used: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The answer of the anchoring route and of ``anchor --json``."""
        row = self.row
        return {
            "batch_id": str(row.batch_id),
            "status": self.status,
            "chain_id": row.chain_id,
            "chain_tx_hash": None if row.chain_tx_hash is None else bytes(row.chain_tx_hash).hex(),
            "chain_block_number": row.chain_block_number,
            "merkle_root": bytes(row.merkle_root).hex(),
            "prev_state_root": bytes(row.prev_state_root).hex(),
            "new_state_root": bytes(row.new_state_root).hex(),
            "sequence_start": row.sequence_start,
            "sequence_end": row.sequence_end,
            "gas_used": self.gas_used,
            "final": row.anchored_at is not None,
        }


@dataclass(slots=True)
class AnchorPass:
    anchored: list[CommitmentRow] = field(default_factory=list)
    failed: list[tuple[CommitmentRow, str]] = field(default_factory=list)


@dataclass(slots=True)
class FinalityPass:
    confirmed: list[CommitmentRow] = field(default_factory=list)
    reanchor: list[CommitmentRow] = field(default_factory=list)  # dropped by a reorg
    waiting: int = 0
    disagreeing: list[CommitmentRow] = field(default_factory=list)


def expected_fields(row: CommitmentRow) -> dict[str, str | int]:
    """What the registry must hold for this commitment, in its own field names."""
    return {
        "events_root": row.merkle_root.hex(),
        "new_state_root": row.new_state_root.hex(),
        "sequence_start": row.sequence_start,
        "sequence_end": row.sequence_end,
        "event_count": row.leaf_count,
    }


def compare(row: CommitmentRow, chain: OnChainBatch | BatchCommittedLog | None) -> list[FieldCheck]:
    """The stored commitment against the registry's record (or one of its logs), field by
    field; every field fails when the chain holds nothing."""
    got: dict[str, str | int] = {}
    if chain is not None:
        got = {
            "events_root": chain.events_root.hex(),
            "new_state_root": chain.new_state_root.hex(),
            "sequence_start": chain.sequence_start,
            "sequence_end": chain.sequence_end,
            "event_count": chain.event_count,
        }
    return [
        FieldCheck(name, value, got.get(name), got.get(name) == value)
        for name, value in expected_fields(row).items()
    ]


def log_identity(row: CommitmentRow, entry: BatchCommittedLog) -> list[FieldCheck]:
    """A log's indexed topics against the commitment: its batch and its stream."""
    batch = anchor.uuid_to_bytes32(row.batch_id).hex()
    key = anchor.tenant_store_key(row.tenant_id, row.store_id).hex()
    return [
        FieldCheck("batch_id", batch, entry.batch_id.hex(), entry.batch_id.hex() == batch),
        FieldCheck(
            "tenant_store_key",
            key,
            entry.tenant_store_key.hex(),
            entry.tenant_store_key.hex() == key,
        ),
    ]


def _now() -> datetime:
    return datetime.now(UTC)


class Anchorer:
    def __init__(
        self,
        store: Commitments,
        chain: Chain,
        *,
        confirmations: int,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self.chain = chain
        self.confirmations = max(confirmations, 1)
        self._clock = clock

    async def _previous_unsent(self, row: CommitmentRow) -> CommitmentRow | None:
        if row.sequence_start <= 1:
            return None
        stream = StreamKey(row.tenant_id, row.store_id)
        before = await self._store.commitment_covering(stream, row.sequence_start - 1)
        if before is not None and before.chain_tx_hash is None:
            return before
        return None

    async def anchor(self, row: CommitmentRow) -> AnchorResult:
        """Put one commitment on chain (or find it there) and record its transaction."""
        if row.chain_tx_hash is not None:
            return AnchorResult("already_anchored", row)
        before = await self._previous_unsent(row)
        if before is not None:
            raise AnchorError(
                AnchorReason.OUT_OF_ORDER,
                f"commitment {before.batch_id} ({before.sequence_start}..{before.sequence_end}) "
                "comes first in this stream and is not anchored yet",
            )
        chain_id = await self.chain.chain_id()
        if await self.chain.batch_exists(row.batch_id):
            found = await self.chain.find_batch_log(row.batch_id)
            if found is None:
                raise ChainError(
                    ChainFailure.LOG_NOT_FOUND,
                    f"the registry holds batch {row.batch_id} but the node returns no "
                    "BatchCommitted log for it (a pruned node?); nothing was recorded",
                )
            checks = log_identity(row, found.log) + compare(row, found.log)
            bad = [c.field for c in checks if not c.match]
            if bad:
                raise AnchorError(
                    AnchorReason.CHAIN_DISAGREES,
                    f"the registry holds batch {row.batch_id} with other "
                    f"{', '.join(bad)}; nothing was recorded",
                )
            status, tx, block, gas = "already_anchored", found.tx_hash, found.block_number, None
        else:
            sent = await self.chain.send_commitment(row)
            status, tx, block, gas = "anchored", sent.tx_hash, sent.block_number, sent.gas_used
        outcome, after = await self._store.record_anchor(row.batch_id, chain_id, tx, block, None)
        if outcome is AnchorOutcome.CONFLICT and after is not None:
            raise AnchorError(
                AnchorReason.RECORD_CONFLICT,
                f"commitment {row.batch_id} was recorded meanwhile with transaction "
                f"0x{(after.chain_tx_hash or b'').hex()}",
            )
        if after is None:  # deleted under us: only a restore does that
            raise AnchorError(AnchorReason.RECORD_CONFLICT, f"commitment {row.batch_id} is gone")
        log.info(
            "anchored",
            batch_id=str(row.batch_id),
            status=status,
            tx=f"0x{tx.hex()}",
            block=block,
        )
        return AnchorResult(status, after, gas)

    async def anchor_pending(self, limit: int) -> AnchorPass:
        """Send up to ``limit`` unanchored commitments: each stream's from its first
        pending one in order, stopping a stream at its first failure (what follows would
        revert) and moving on to the next, so that one stuck stream stalls only itself."""
        result = AnchorPass()
        for head in await self._store.pending_heads(limit):
            stream = StreamKey(head.tenant_id, head.store_id)
            budget = limit - len(result.anchored)
            if budget <= 0:
                break
            for row in await self._store.list_commitments(stream, anchored=False, limit=budget):
                try:
                    done = await self.anchor(row)
                except AnchorError as error:
                    result.failed.append((row, error.message))
                    break
                except ChainError as error:
                    result.failed.append((row, error.message))
                    if error.failure is ChainFailure.BREAKER_OPEN or error.transient:
                        return result  # the node is away: every other stream would fail too
                    break
                result.anchored.append(done.row)
        return result

    async def confirm_pending(self, limit: int) -> FinalityPass:
        """One finality pass over sent anchors: confirm the deep enough, clear the ones a
        reorg dropped."""
        result = FinalityPass()
        rows = await self._store.unconfirmed_anchors(limit)
        if not rows:
            return result
        head = await self.chain.block_number()
        for row in rows:
            assert row.chain_tx_hash is not None
            block = await self.chain.receipt_block(bytes(row.chain_tx_hash))
            if block is None or block != row.chain_block_number:
                # Dropped, or mined again elsewhere after a reorg: start over from the
                # chain's word (anchor() finds a re-mined one by its log).
                self.chain.forget_nonce()  # the reorg may have taken our nonces back
                if await self._store.clear_anchor(row):
                    result.reanchor.append(row)
                    log.warning(
                        "anchor dropped by the chain, to be anchored again",
                        batch_id=str(row.batch_id),
                        tx=f"0x{bytes(row.chain_tx_hash).hex()}",
                    )
                continue
            if head - block + 1 < self.confirmations:
                result.waiting += 1
                continue
            on_chain = await self.chain.batch_commitment(row.batch_id)
            if not all(check.match for check in compare(row, on_chain)):
                result.disagreeing.append(row)
                log.error("registry disagrees with a stored commitment", batch_id=str(row.batch_id))
                continue
            if await self._store.confirm_anchor(row, self._clock()):
                result.confirmed.append(row)
        return result

    async def verify(self, row: CommitmentRow) -> tuple[bool, list[FieldCheck]]:
        """(``batchExists``, the stored commitment against ``getBatchCommitment``)."""
        exists = await self.chain.batch_exists(row.batch_id)
        on_chain = await self.chain.batch_commitment(row.batch_id) if exists else None
        return exists, compare(row, on_chain)

    async def verify_transaction(
        self, row: CommitmentRow, tx_hash: bytes
    ) -> tuple[str | None, list[FieldCheck], int | None]:
        """Decode the registry's ``BatchCommitted`` log of one transaction and hold it
        against the commitment: (why it cannot be checked, or None; the fields; block)."""
        found = await self.chain.transaction_logs(tx_hash)
        if found is None:
            return "transaction_not_found", [], None
        if found.to != self.chain.registry:
            return "not_a_registry_transaction", [], found.block_number
        if not found.succeeded:
            return "transaction_reverted", [], found.block_number
        ours = [e for e in found.batch_logs if e.batch_id == anchor.uuid_to_bytes32(row.batch_id)]
        if not ours:
            return "no_log_for_this_batch", [], found.block_number
        entry = ours[0]
        return None, log_identity(row, entry) + compare(row, entry), found.block_number


def all_match(checks: Sequence[FieldCheck]) -> bool:
    return bool(checks) and all(check.match for check in checks)
