"""Commitments: the state-root chain (``ves.merkle.chain_faults``) and each Merkle root
recomputed from the stored events."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence

from ...store.ports import Commitments
from ...store.records import CommitmentRow, StreamKey
from ...ves import merkle
from .check import Check, Chunk, Examined, Finding, StreamRun

# This sequencer's commitment engine starts every stream's chain at sequence 1; the
# protocol would allow any first start, so the verifier asks for more than ves does.
FIRST_START = 1


class CommitmentCheck(Check):
    """Commitments are contiguous from 1, their counts fit their ranges, state roots chain
    and recompute, none covers events above the stream's head, and each commitment fully
    inside the range has its Merkle root recomputed from the events."""

    name = "commitments"

    def __init__(self, store: Commitments) -> None:
        self._store = store
        self._targets: deque[CommitmentRow] = deque()
        self._leaves: list[bytes] = []
        self._broken = False
        self._checked = 0
        self._skipped = 0
        self._total = 0

    async def begin(self, run: StreamRun) -> list[Finding]:
        rows = await self._store.list_commitments(run.stream)
        self._total += len(rows)
        found = self._chain_findings(run, rows)
        inside = [c for c in rows if run.start <= c.sequence_start and c.sequence_end <= run.end]
        self._skipped += len(rows) - len(inside)
        self._targets = deque(inside)
        self._leaves, self._broken = [], False
        return found

    def _chain_findings(self, run: StreamRun, rows: Sequence[CommitmentRow]) -> list[Finding]:
        by_index: defaultdict[int, list[merkle.ChainFault]] = defaultdict(list)
        for fault in merkle.chain_faults(rows, first_start=FIRST_START):
            by_index[fault.index].append(fault)
        found = []
        # Per commitment in order, its chain faults then its own head check.
        for index, c in enumerate(rows):
            found += [
                Finding(run.stream, c.sequence_start, self.name, fault.kind.value, str(fault))
                for fault in by_index[index]
            ]
            if run.whole and c.sequence_end > run.state.max_sequence:
                where = f"commitment {c.sequence_start}..{c.sequence_end}"
                found.append(
                    Finding(
                        run.stream,
                        c.sequence_start,
                        self.name,
                        "commitment_beyond_head",
                        f"{where}: covers events above {run.state.max_sequence}",
                    )
                )
        return found

    def ask(self, chunk: Chunk) -> None:
        # Asked for every page: whether the range holds commitments is known only at
        # ``begin``, which may run after this page was read.
        chunk.work.leaves = True

    def examine(self, chunk: Chunk) -> Examined:
        if not self._targets:
            return Examined()
        # Each leaf over the recomputed signing hash where the envelope is valid, as for
        # receipts (``compute``).
        return Examined(data=chunk.computed.leaves)

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        found: list[Finding | None] = []
        if examined.data is None:
            return []
        for (event, _), leaf in zip(chunk.records, examined.data, strict=True):
            seq = event.sequence_number
            while self._targets and seq > self._targets[0].sequence_end:
                found.append(self._close(chunk.run.stream, complete=False))
            if not self._targets or seq < self._targets[0].sequence_start:
                continue
            target = self._targets[0]
            if seq != target.sequence_start + len(self._leaves):
                self._broken = True
            self._leaves.append(leaf)
            if seq == target.sequence_end:
                found.append(self._close(chunk.run.stream, complete=True))
        return [f for f in found if f is not None]

    def _close(self, stream: StreamKey, *, complete: bool) -> Finding | None:
        target = self._targets.popleft()
        leaves, broken = self._leaves, self._broken
        self._leaves, self._broken = [], False
        where = f"commitment {target.sequence_start}..{target.sequence_end}"
        if not complete or broken or len(leaves) != target.leaf_count:
            return Finding(
                stream,
                target.sequence_start,
                self.name,
                "commitment_events_missing",
                f"{where}: its events are not all stored; the Merkle root cannot be recomputed",
            )
        self._checked += 1
        if merkle.merkle_root(leaves) != target.merkle_root:
            return Finding(
                stream,
                target.sequence_start,
                self.name,
                "merkle_root_mismatch",
                f"{where}: Merkle root recomputed from the stored events differs",
            )
        return None

    async def end(self, run: StreamRun) -> list[Finding]:
        closed = [self._close(run.stream, complete=False) for _ in range(len(self._targets))]
        return [f for f in closed if f is not None]

    def status(self) -> str:
        if self._total == 0:
            return "no commitments stored"
        return (
            f"{self._total} commitments chained; {self._checked} Merkle roots recomputed, "
            f"{self._skipped} outside the range"
        )
