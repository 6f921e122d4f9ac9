"""The checks ``verify-events`` runs, in the order their findings are reported, and the
one entry point that verifies some streams (``verify-events`` and ``restore``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...store.ports import Store
from ...store.records import CounterState
from .agent_signature import AgentSignatureCheck
from .anchors import AnchorCheck
from .check import Check
from .commitments import CommitmentCheck
from .hashes import EnvelopeCheck
from .receipt import ReceiptCheck
from .report import Report
from .runner import Advance, Verifier, plan_run
from .sequence import SequenceCheck

if TYPE_CHECKING:
    from ...anchoring.anchorer import Anchorer


def default_checks(
    store: Store,
    *,
    sequencer_public_key: bytes | None,
    deep: bool,
    allow_unsigned_receipts: bool = False,
    anchorer: Anchorer | None = None,
) -> list[Check]:
    """Every check; ``deep`` adds the anchor check (against ``anchorer``'s chain).
    Without ``sequencer_public_key`` receipt signatures are not checked (the report says
    so); an unsigned receipt is a finding unless ``allow_unsigned_receipts``."""
    checks: list[Check] = [
        SequenceCheck(),
        EnvelopeCheck(),
        AgentSignatureCheck(store),
        ReceiptCheck(sequencer_public_key, allow_unsigned=allow_unsigned_receipts),
        CommitmentCheck(store),
    ]
    if deep:
        checks.append(AnchorCheck(store, anchorer))
    return checks


async def verify_streams(
    store: Store,
    states: list[CounterState],
    start: int | None = None,
    end: int | None = None,
    *,
    sequencer_public_key: bytes | None,
    deep: bool,
    allow_unsigned_receipts: bool = False,
    progress: Advance | None = None,
    anchorer: Anchorer | None = None,
) -> Report:
    """Verify each stream of ``states`` over ``start..end`` (default: all of it) with
    every check; ``progress(n)`` hears of each page."""
    runs = [plan_run(state, start, end) for state in states]
    checks = default_checks(
        store,
        sequencer_public_key=sequencer_public_key,
        deep=deep,
        allow_unsigned_receipts=allow_unsigned_receipts,
        anchorer=anchorer,
    )
    return await Verifier(store, checks).run(runs, progress)
