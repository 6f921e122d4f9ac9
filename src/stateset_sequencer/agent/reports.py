"""What the agent's steps report, and the one reading of the sequencer's refusals: the
reports the commands print, the error a step stops with, and what a conflict says."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..client import SequencerError
from ..client import errors as client_errors

_CONFLICT = re.compile(r"^version_conflict: expected (\d+), actual (\d+)$")
# What a stream of network faults looks like to the agent: the server or the path is down.
UNREACHABLE: tuple[type[Exception], ...] = client_errors.TRANSPORT_ERRORS


class AgentError(Exception):
    """The step stopped; nothing was lost. ``reason`` is a stable code for scripts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class PushReport:
    sent: int = 0
    acked: int = 0
    replayed: int = 0
    rejected: int = 0
    conflicts: int = 0
    batches: int = 0
    cursor: int | None = None
    cursor_error: str | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acked": self.acked,
            "replayed": self.replayed,
            "rejected": self.rejected,
            "conflicts": self.conflicts,
            "batches": self.batches,
            "cursor": self.cursor,
            "cursor_error": self.cursor_error,
            "reasons": dict(self.reasons),
        }


@dataclass(slots=True)
class PullReport:
    pulled: int = 0
    own: int = 0
    acked_by_pull: int = 0
    last_sequence: int = 0
    head: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "own": self.own,
            "acked_by_pull": self.acked_by_pull,
            "last_sequence": self.last_sequence,
            "head": self.head,
        }


@dataclass(slots=True)
class WindowReport:
    """``sync-agent``: each event of the window and what the server made of it."""

    total: int = 0
    replayed_same: int = 0  # the server still holds it, with the receipt we hold
    resequenced: int = 0  # the server had lost it; sequenced again, under a new number
    newly_acked: int = 0  # never acknowledged before
    rejected: int = 0
    receipt_mismatches: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "replayed_same": self.replayed_same,
            "resequenced": self.resequenced,
            "newly_acked": self.newly_acked,
            "rejected": self.rejected,
            "receipt_mismatches": self.receipt_mismatches,
        }


def parse_conflict(reason: str) -> int | None:
    """The entity's actual version from the reference's ``version_conflict`` reason."""
    match = _CONFLICT.match(reason)
    return int(match.group(2)) if match else None


def describe_fault(exc: BaseException) -> str:
    if isinstance(exc, SequencerError):
        why = f" ({exc.reason})" if exc.reason else ""
        return f"{exc.status} {exc.code}{why}: {exc.message}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]
