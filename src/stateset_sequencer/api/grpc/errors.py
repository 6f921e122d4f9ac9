"""The one table that turns a service's reason into a gRPC status, and the refusal type
the handlers raise.

Services (``sequencer/``) raise exceptions that carry a reason and a message, never a
status; :data:`REASON_CODES` maps every reason a gRPC call can meet to its status code,
as ``api/http/errors.py`` maps them to HTTP. A test walks every member of
:data:`SERVICE_REASONS` and fails on one without a row here.

Messages are the services' own words, except the permission refusals, which the
reference's gRPC clients match on in its exact lowercase words
(:data:`REFERENCE_MESSAGES`). A library's text (a driver's error, a decoder's) never
reaches a client: store faults are answered by class (:data:`STORE_FAULTS`), with the
driver's text in the log beside the request id.
"""

from __future__ import annotations

import enum

import grpc

from ...sequencer.auth import AuthError, AuthReason
from ...sequencer.commitments import CommitmentError, CommitmentReason
from ...sequencer.cursors import CursorError, CursorReason
from ...sequencer.ingest import BatchReason, BatchRejected
from ...store.errors import (
    AheadOfHeadError,
    ConcurrentWriteError,
    IntegrityError,
    MigrationError,
    OperationalError,
    StoreError,
)

Code = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]

RESUME_METADATA = "x-resume-from-sequence"
RETRY_AFTER_METADATA = "retry-after"
INTERNAL_MESSAGE = "internal error"


class GrpcError(Exception):
    """A call refused with ``code``: the handler layer aborts the call with it."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: Metadata = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing


REASON_CODES: dict[str, grpc.StatusCode] = {
    # sequencer/ingest.py: whole-batch faults (the reference answers its own checks of
    # the same kind INVALID_ARGUMENT, and a batch over the limit RESOURCE_EXHAUSTED)
    BatchReason.EMPTY_BATCH: Code.INVALID_ARGUMENT,
    BatchReason.MIXED_STREAM: Code.INVALID_ARGUMENT,
    BatchReason.SOURCE_AGENT_MISMATCH: Code.INVALID_ARGUMENT,
    BatchReason.AGENT_MISMATCH: Code.PERMISSION_DENIED,
    BatchReason.INVALID_FIELD: Code.INVALID_ARGUMENT,
    BatchReason.MISSING_PAYLOAD: Code.INVALID_ARGUMENT,
    BatchReason.BATCH_TOO_LARGE: Code.RESOURCE_EXHAUSTED,
    BatchReason.PAYLOAD_TOO_LARGE: Code.RESOURCE_EXHAUSTED,
    # sequencer/auth.py: credentials ...
    AuthReason.MISSING_AUTH: Code.UNAUTHENTICATED,
    AuthReason.INVALID_API_KEY: Code.UNAUTHENTICATED,
    AuthReason.INVALID_JWT: Code.UNAUTHENTICATED,
    AuthReason.TOKEN_EXPIRED: Code.UNAUTHENTICATED,
    AuthReason.API_KEY_EXPIRED: Code.UNAUTHENTICATED,
    AuthReason.RATE_LIMITED: Code.RESOURCE_EXHAUSTED,
    # ... and scopes
    AuthReason.INSUFFICIENT_PERMISSIONS: Code.PERMISSION_DENIED,
    AuthReason.TENANT_ACCESS_DENIED: Code.PERMISSION_DENIED,
    AuthReason.STORE_ACCESS_DENIED: Code.PERMISSION_DENIED,
    AuthReason.OPERATOR_REQUIRED: Code.PERMISSION_DENIED,
    AuthReason.TENANT_WIDE_REQUIRED: Code.PERMISSION_DENIED,
    # sequencer/cursors.py (EventAck in SyncStream)
    CursorReason.AGENT_ACCESS_DENIED: Code.PERMISSION_DENIED,
    CursorReason.INVALID_SEQUENCE: Code.INVALID_ARGUMENT,
    CursorReason.AHEAD_OF_HEAD: Code.INVALID_ARGUMENT,
    # sequencer/commitments.py (proofs and commitments)
    CommitmentReason.INVALID_RANGE: Code.INVALID_ARGUMENT,
    CommitmentReason.RANGE_TOO_LARGE: Code.INVALID_ARGUMENT,
    CommitmentReason.NOT_NEXT: Code.FAILED_PRECONDITION,
    CommitmentReason.RANGE_CONFLICT: Code.ALREADY_EXISTS,
    CommitmentReason.EVENTS_MISSING: Code.FAILED_PRECONDITION,
    CommitmentReason.NOTHING_TO_COMMIT: Code.FAILED_PRECONDITION,
    CommitmentReason.NOT_FOUND: Code.NOT_FOUND,
    CommitmentReason.NOT_COMMITTED: Code.NOT_FOUND,
    CommitmentReason.OUTSIDE_COMMITMENT: Code.INVALID_ARGUMENT,
    CommitmentReason.WRONG_STREAM: Code.PERMISSION_DENIED,
}

SERVICE_REASONS: tuple[type[enum.StrEnum], ...] = (
    BatchReason,
    AuthReason,
    CursorReason,
    CommitmentReason,
)
"""Every enum of reasons a gRPC call can meet; the test of the table walks these."""

REFERENCE_MESSAGES: dict[str, str] = {
    "Read permission required": "read permission required",
    "Write permission required": "write permission required",
    "Admin permission required": "admin permission required",
    "Tenant access denied": "tenant access denied",
    "Store access denied": "store access denied",
}


def refusal(exc: AuthError | BatchRejected | CursorError | CommitmentError) -> GrpcError:
    """The status for a service's refusal, in its own words (or the reference's, for
    the permission refusals its clients match)."""
    message = REFERENCE_MESSAGES.get(exc.message, exc.message)
    trailing: Metadata = ()
    if isinstance(exc, AuthError) and exc.retry_after is not None:
        trailing = ((RETRY_AFTER_METADATA, str(exc.retry_after)),)
    return GrpcError(REASON_CODES[exc.reason], message, trailing)


STORE_FAULTS: tuple[tuple[type[StoreError], grpc.StatusCode, str], ...] = (
    (OperationalError, Code.UNAVAILABLE, "database unavailable; retry shortly"),
    (ConcurrentWriteError, Code.UNAVAILABLE, "concurrent writes kept conflicting; retry"),
    (AheadOfHeadError, Code.INVALID_ARGUMENT, "the sequence is past the stream head"),
    (IntegrityError, Code.INTERNAL, INTERNAL_MESSAGE),
    (MigrationError, Code.INTERNAL, INTERNAL_MESSAGE),
    (StoreError, Code.INTERNAL, INTERNAL_MESSAGE),
)
"""Store faults by class, first match wins: the database away or contended is
UNAVAILABLE (the same call may work in a moment, as HTTP's 503); anything else is the
reference's INTERNAL "internal error"."""


def store_fault(exc: StoreError) -> GrpcError:
    for kind, code, message in STORE_FAULTS:
        if isinstance(exc, kind):
            return GrpcError(code, message)
    raise AssertionError("StoreError is the last row")  # pragma: no cover


def invalid(message: str) -> GrpcError:
    return GrpcError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> GrpcError:
    return GrpcError(Code.NOT_FOUND, message)
