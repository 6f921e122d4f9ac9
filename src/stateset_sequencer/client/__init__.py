"""The typed HTTP client SDK (httpx): what agents, ``sequencer-cli`` and the tests use to
talk to a sequencer — ours or the Rust reference, since the wire format is the same.

:class:`SequencerClient` is async; :class:`SyncSequencerClient` has the same constructor
and methods, blocking. Both cover every route of ``api/http`` but the legacy ones:

* ingest and reads: ``ingest``/``record``, ``head``, ``events``/``iter_events``,
  ``event``, ``entity``, ``sequencer_info``/``use_sequencer_key``;
* the live stream: ``tail`` (Server-Sent Events or gRPC ``StreamEvents``, reconnecting
  after the last position seen; :mod:`.stream`);
* cursors and projections: ``get_cursor``, ``put_cursor``, ``get_projection``;
* agent keys, policies, API keys, registration: ``register_agent_key``,
  ``list_agent_keys``, ``revoke_agent_key``, ``get_policy``, ``put_policy``,
  ``mint_api_key``/``create_api_key``, ``list_api_keys``, ``revoke_api_key``,
  ``get_agent``, ``create_agent_api_key``, ``list_agent_api_keys``,
  ``revoke_agent_api_key``, ``register_agent``;
* commitments, proofs, anchoring: ``create_commitment``, ``list_commitments``,
  ``get_commitment``, ``get_proof``, ``get_event_proof``, ``verify_proof``, ``anchor``,
  ``commit_and_anchor``, ``verify_anchor``, ``verify_anchor_transaction``;
* schemas: ``list_schemas``, ``register_schema``, ``validate_payload``,
  ``get_latest_schema``, ``list_event_type_schemas``, ``get_schema``,
  ``set_schema_status``, ``delete_schema``;
* the service: ``health``, ``ready``, ``health_detailed``, ``metrics``, ``openapi``;
  and ``request`` for anything else.

Not covered, on purpose: the legacy reads ``/api/v1/events``, ``/api/v1/head`` and
``/api/v1/entities/…`` (the VES routes answer the same), the external anchor service's
``/v1/commitments/pending`` and ``/v1/commitments/{batch_id}/anchored`` (legacy paths,
deprecated), ``HEAD`` of ``/health`` and ``/ready`` (a GET answers the same), and the
pages for browsers (``/docs``, ``/redoc``, ``/docs/openapi.yaml``).

Every call is retried by its :class:`RetryPolicy` (:mod:`.retry` says when) across one or
several base URLs (:mod:`.dispatch`). When the tries are spent, the last answer is raised
as a :class:`SequencerError` (``attempts`` lists every try), or, when the last try had no
answer, a :class:`SequencerUnavailable` naming each URL tried and why it failed (an
``httpx.TransportError`` too). :mod:`.errors` lists the rest.

Receipts come back parsed and checked: each one's hash is recomputed from the event it
answers, it must be signed, and its signature must verify under the sequencer's public key
(given, or fetched from ``/api/v1/ves/sequencer`` before the first check). An unsigned
receipt (alg ``none``) is accepted only with ``allow_unsigned_receipts``; a wrongly signed
one never is.

:class:`Agent` signs the events it sends, with signing version 2 unless told otherwise
(``ves_version=1`` for a sequencer that accepts nothing newer; PROTOCOL §4.1).
"""

from __future__ import annotations

from .asyncclient import SequencerClient
from .blocking import SyncSequencerClient
from .core import DEFAULT_TIMEOUT_S
from .envelopes import Agent
from .errors import (
    Attempt,
    InvalidBaseURL,
    ReceiptMismatch,
    SequencerClientError,
    SequencerError,
    SequencerUnavailable,
    UnexpectedResponse,
    UnsignedReceipt,
)
from .receipts import IngestOutcome, Rejected, check_receipt
from .retry import RETRY_STATUSES, RetryPolicy
from .stream import StreamError, TailEvent, TailHeartbeat, TailItem

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RETRY_STATUSES",
    "Agent",
    "Attempt",
    "IngestOutcome",
    "InvalidBaseURL",
    "ReceiptMismatch",
    "Rejected",
    "RetryPolicy",
    "SequencerClient",
    "SequencerClientError",
    "SequencerError",
    "SequencerUnavailable",
    "StreamError",
    "SyncSequencerClient",
    "TailEvent",
    "TailHeartbeat",
    "TailItem",
    "UnexpectedResponse",
    "UnsignedReceipt",
    "check_receipt",
]
