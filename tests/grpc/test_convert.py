"""The pure parts: chrono's ``to_rfc3339`` of a Timestamp, the stored text back to a
Timestamp, the rejection enum, and the one table of reasons to status codes."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from stateset_sequencer.api.grpc import convert
from stateset_sequencer.api.grpc.errors import (
    REASON_CODES,
    SERVICE_REASONS,
    STORE_FAULTS,
    GrpcError,
    store_fault,
)
from stateset_sequencer.proto import sequencer_v2_pb2 as pb
from stateset_sequencer.sequencer.outcomes import Rejection
from stateset_sequencer.store.errors import OperationalError, StoreError

BASE = 1_735_689_600  # 2025-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "2025-01-01T00:00:00+00:00"),
        (120_000_000, "2025-01-01T00:00:00.120+00:00"),
        (1_000, "2025-01-01T00:00:00.000001+00:00"),
        (123_456_000, "2025-01-01T00:00:00.123456+00:00"),
        (123_456_789, "2025-01-01T00:00:00.123456789+00:00"),
        (1, "2025-01-01T00:00:00.000000001+00:00"),
    ],
)
def test_timestamps_print_as_chrono_does(nanos: int, text: str) -> None:
    ts = Timestamp(seconds=BASE, nanos=nanos)
    assert convert.timestamp_text(ts) == text
    assert convert.text_timestamp(text) == ts


def test_other_offsets_and_bounds() -> None:
    assert convert.text_timestamp("2025-01-01T02:00:00.5+02:00") == Timestamp(
        seconds=BASE, nanos=500_000_000
    )
    assert convert.timestamp_text(Timestamp(seconds=-1)) == "1969-12-31T23:59:59+00:00"
    for bad in (Timestamp(seconds=BASE, nanos=-1), Timestamp(seconds=BASE, nanos=10**9)):
        with pytest.raises(GrpcError) as refused:
            convert.timestamp_text(bad)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(GrpcError):
        convert.timestamp_text(Timestamp(seconds=10**12))  # past year 9999


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        ("duplicate_event_id", "", pb.REJECTION_REASON_DUPLICATE_EVENT),
        ("duplicate_command_id", "", pb.REJECTION_REASON_DUPLICATE_COMMAND),
        ("invalid_payload_hash", "", pb.REJECTION_REASON_INVALID_HASH),
        ("invalid_cipher_hash", "", pb.REJECTION_REASON_INVALID_HASH),
        ("invalid_signature", "", pb.REJECTION_REASON_INVALID_SIGNATURE),
        ("agent_key_invalid: Agent key has been revoked", "x", pb.REJECTION_REASON_REVOKED_KEY),
        ("agent_key_invalid: Agent key has expired", "x", pb.REJECTION_REASON_UNKNOWN_KEY),
        ("agent_key_invalid: Agent key is not yet valid", "x", pb.REJECTION_REASON_UNKNOWN_KEY),
        ("agent_key_invalid: Agent key not found", "x", pb.REJECTION_REASON_UNKNOWN_KEY),
        ("unsupported_version", "", pb.REJECTION_REASON_INVALID_FORMAT),
        ("schema_validation: payload", "", pb.REJECTION_REASON_INVALID_FORMAT),
        ("schema_validation", "", pb.REJECTION_REASON_INVALID_FORMAT),
        ("version_conflict: expected 1, actual 0", "", pb.REJECTION_REASON_VERSION_CONFLICT),
        ("agent_policy_denied", "", pb.REJECTION_REASON_UNSPECIFIED),
    ],
)
def test_rejection_enum(reason: str, message: str, expected: int) -> None:
    assert convert.rejection_reason(Rejection(uuid.uuid4(), reason, message)) == expected


def test_every_service_reason_has_a_status() -> None:
    missing = [
        f"{enum.__name__}.{member.name}"
        for enum in SERVICE_REASONS
        for member in enum
        if member not in REASON_CODES
    ]
    assert not missing, missing


def test_store_faults_never_leak_the_driver() -> None:
    assert STORE_FAULTS[-1][0] is StoreError
    refused = store_fault(OperationalError("connection to 10.0.0.5 refused: password..."))
    assert refused.code == grpc.StatusCode.UNAVAILABLE and "10.0.0.5" not in refused.message
    assert store_fault(StoreError("x")).message == "internal error"
