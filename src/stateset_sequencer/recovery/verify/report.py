"""The verification report: every finding counted, the first ones kept, per-stream results.

The JSON form (``Report.to_json``) is what ``verify-events --report`` writes; its keys
are a contract with whoever reads the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .check import Finding, StreamRun

DEFAULT_FINDINGS_CAP = 1000


@dataclass(slots=True)
class StreamResult:
    """One range's outcome: events read and its earliest finding."""

    run: StreamRun
    events: int = 0
    first: Finding | None = None


@dataclass(slots=True)
class Report:
    """Findings of a whole verification. Every finding is counted (``total``,
    ``by_code``); only the first ``cap`` are kept, so that a badly broken stream cannot
    exhaust memory."""

    cap: int = DEFAULT_FINDINGS_CAP
    findings: list[Finding] = field(default_factory=list)
    total: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    streams: list[StreamResult] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.total == 0

    @property
    def events(self) -> int:
        return sum(s.events for s in self.streams)

    @property
    def first(self) -> Finding | None:
        """The earliest finding of the first stream that has one."""
        for result in self.streams:
            if result.first is not None:
                return result.first
        return None

    def add(self, result: StreamResult, found: Sequence[Finding]) -> None:
        for f in found:
            self.total += 1
            self.by_code[f"{f.check}.{f.code}"] += 1
            if len(self.findings) < self.cap:
                self.findings.append(f)
            if result.first is None or _earlier(f, result.first):
                result.first = f

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events,
            "elapsed_seconds": round(self.elapsed, 3),
            "events_per_second": round(self.events / self.elapsed) if self.elapsed > 0 else None,
            "finding_count": self.total,
            "findings_by_code": dict(sorted(self.by_code.items())),
            "findings_capped_at": self.cap,
            "first_finding": None if self.first is None else self.first.to_json(),
            "checks": self.checks,
            "streams": [
                {
                    "tenant_id": str(r.run.stream.tenant_id),
                    "store_id": str(r.run.stream.store_id),
                    "from": r.run.start,
                    "to": r.run.end,
                    "counter": r.run.state.counter,
                    "max_sequence": r.run.state.max_sequence,
                    "events_checked": r.events,
                    "first_bad_sequence": None if r.first is None else r.first.sequence,
                }
                for r in self.streams
            ],
            "findings": [f.to_json() for f in self.findings],
        }


def _earlier(a: Finding, b: Finding) -> bool:
    # A finding about the stream as a whole (no sequence) ranks after numbered ones; of
    # two at one sequence the first reported stays first.
    ka = a.sequence if a.sequence is not None else float("inf")
    kb = b.sequence if b.sequence is not None else float("inf")
    return ka < kb
