"""``verify-events``: prove a stored stream is intact, in one streaming pass.

The runner (``runner``) reads each range in pages and feeds every page to a list of checks
(``check.Check``); what depends on the page alone (envelope validation, signing hashes,
both Ed25519 signatures, receipt hashes, leaves: ``compute``) is done meanwhile by the
worker processes of ``pool``; the report (``report``) counts the findings. One module per
check:

``sequence``         continuity from the range's start to its end, and the counter
``hashes``           envelope validity and the stored signing hash
``agent_signature``  the agent's signature, and its key's validity at sequencing time
``receipt``          the receipt's presence, fields, hash and signature
``commitments``      the state-root chain and each Merkle root from the stored events
``anchors``          (``--deep``) anchored roots against the chain

A new check (on-chain anchors with a real chain client, say) is one more ``Check``
subclass added in ``suite.default_checks``; the runner does not change.

Every hash, signature, key-validity and chain rule is computed by the functions ingest and
the commitment engine use (``ves/``, ``sequencer.keys.judge_key``,
``sequencer.commitments.event_leaf``, ``ves.merkle.chain_faults``), so the verifier and
the sequencer cannot disagree about what a valid stream is. No printing here: the CLI
shell renders the :class:`Report`.
"""

from __future__ import annotations

from .agent_signature import AgentSignatureCheck
from .anchors import AnchorCheck
from .check import Check, Chunk, Examined, Finding, StreamRun
from .commitments import CommitmentCheck
from .compute import Computed, Record, Work
from .hashes import EnvelopeCheck
from .pool import PROCESS_THRESHOLD, WorkerPool
from .receipt import ReceiptCheck
from .report import DEFAULT_FINDINGS_CAP, Report, StreamResult
from .runner import DEFAULT_CHUNK, Advance, Verifier, plan_run
from .sequence import SequenceCheck
from .suite import default_checks, verify_streams

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_FINDINGS_CAP",
    "PROCESS_THRESHOLD",
    "Advance",
    "AgentSignatureCheck",
    "AnchorCheck",
    "Check",
    "Chunk",
    "CommitmentCheck",
    "Computed",
    "EnvelopeCheck",
    "Examined",
    "Finding",
    "ReceiptCheck",
    "Record",
    "Report",
    "SequenceCheck",
    "StreamResult",
    "StreamRun",
    "Verifier",
    "Work",
    "WorkerPool",
    "default_checks",
    "plan_run",
    "verify_streams",
]
