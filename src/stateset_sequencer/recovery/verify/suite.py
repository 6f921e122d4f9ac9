"""The checks ``verify-events`` runs, in the order their findings are reported."""

from __future__ import annotations

from ...store.ports import Store
from .agent_signature import AgentSignatureCheck
from .anchors import AnchorCheck
from .check import Check
from .commitments import CommitmentCheck
from .hashes import EnvelopeCheck
from .receipt import ReceiptCheck
from .sequence import SequenceCheck


def default_checks(store: Store, *, sequencer_public_key: bytes | None, deep: bool) -> list[Check]:
    """Every check; ``deep`` adds the anchor check. Without ``sequencer_public_key``
    receipt signatures are not checked (the report says so)."""
    checks: list[Check] = [
        SequenceCheck(),
        EnvelopeCheck(),
        AgentSignatureCheck(store),
        ReceiptCheck(sequencer_public_key),
        CommitmentCheck(store),
    ]
    if deep:
        checks.append(AnchorCheck(store))
    return checks
