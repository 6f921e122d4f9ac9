"""``check-gaps`` and ``repair-counters``: find holes in the log and fix counters.

What repairing a counter may and may not do
-------------------------------------------
A stream's counter (``sequence_counters.current_sequence``) is the last sequence number
handed out; the next append takes counter + 1. Two kinds of drift exist:

* **counter below the highest stored event** (or no counter row while events exist):
  the next append would take a number that is already stored and fail on the unique
  key, so the stream is wedged. Raising the counter to max(sequence_number) is always
  safe: it never lets a number be used twice, and it is what a repair does.
* **counter above the highest stored event**: numbers max+1..counter were handed out, and
  their receipts may be in agents' hands, but the events are not stored (lost or
  deleted). Lowering the counter would hand those numbers out *again*, to different
  events, so two signed receipts would exist for one sequence number. That is refused
  unless ``allow_lower`` is given; the right fix is to restore the missing events
  (backup, or re-ingest from agent outboxes), after which the counter is correct again.

In every case the counter is only ever set to the highest stored sequence — never below a
stored event — and the store does it under the counter's lock after re-checking that the
stream is still in the state the operator was shown (otherwise nothing is written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..store.ports import Maintenance
from ..store.records import AuditEntry, CounterState, SequenceGap, StreamKey

AUDIT_ACTION = "repair_counter"


@dataclass(frozen=True, slots=True)
class CounterPlan:
    state: CounterState
    refused: str | None  # why it will not be applied; None when it may be

    @property
    def target(self) -> int:
        return self.state.max_sequence

    def describe(self) -> str:
        s = self.state
        counter = "no counter row" if s.counter is None else f"counter {s.counter}"
        line = (
            f"{s.stream.tenant_id}/{s.stream.store_id}: {counter}, highest stored event "
            f"{s.max_sequence} ({s.event_count} events) -> set counter to {self.target}"
        )
        return line if self.refused is None else f"{line}: REFUSED, {self.refused}"


def mismatched(states: list[CounterState]) -> list[CounterState]:
    """Streams whose counter is not the highest stored sequence."""
    return [
        s
        for s in states
        if (s.counter is None and s.event_count > 0)
        or (s.counter is not None and s.counter != s.max_sequence)
    ]


def plan(states: list[CounterState], *, allow_lower: bool) -> list[CounterPlan]:
    plans = []
    for s in mismatched(states):
        refused = None
        if s.counter is not None and s.counter > s.max_sequence and not allow_lower:
            refused = (
                f"lowering would re-issue sequence numbers {s.max_sequence + 1}..{s.counter}, "
                "which may have receipts already; restore those events instead "
                "(or pass --allow-lower if they were never acknowledged)"
            )
        plans.append(CounterPlan(s, refused))
    return plans


async def apply(store: Maintenance, item: CounterPlan, *, actor: str) -> CounterState:
    """Set one counter in one transaction with its audit row (see the module docstring)."""
    if item.refused is not None:
        raise ValueError(item.refused)
    s = item.state
    audit = AuditEntry(
        action=AUDIT_ACTION,
        actor=actor,
        actor_type="cli",
        tenant_id=s.stream.tenant_id,
        resource_type="sequence_counter",
        resource_id=f"{s.stream.tenant_id}/{s.stream.store_id}",
        details={
            "store_id": str(s.stream.store_id),
            "old_counter": s.counter,
            "new_counter": s.max_sequence,
            "max_sequence": s.max_sequence,
            "event_count": s.event_count,
        },
    )
    return await store.set_counter_to_max(s.stream, s, audit)


def format_ranges(gaps: list[SequenceGap]) -> str:
    return ", ".join(
        str(g.first_missing)
        if g.first_missing == g.last_missing
        else f"{g.first_missing}-{g.last_missing}"
        for g in gaps
    )


def group_gaps(gaps: list[SequenceGap]) -> dict[StreamKey, list[SequenceGap]]:
    grouped: dict[StreamKey, list[SequenceGap]] = {}
    for g in gaps:
        grouped.setdefault(g.stream, []).append(g)
    return grouped


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream's counter and holes, as ``check-gaps`` reports them."""

    state: CounterState
    missing: list[SequenceGap]
    counter_mismatch: bool

    @property
    def ok(self) -> bool:
        return not self.missing and not self.counter_mismatch

    def to_json(self) -> dict[str, object]:
        s = self.state
        return {
            "tenant_id": str(s.stream.tenant_id),
            "store_id": str(s.stream.store_id),
            "counter": s.counter,
            "max_sequence": s.max_sequence,
            "event_count": s.event_count,
            "missing": [[g.first_missing, g.last_missing] for g in self.missing],
            "counter_mismatch": self.counter_mismatch,
        }

    def describe(self) -> str:
        s = self.state
        problems = []
        if self.missing:
            problems.append(f"missing {format_ranges(self.missing)}")
        if self.counter_mismatch:
            problems.append(f"counter {s.counter} != highest stored event {s.max_sequence}")
        return (
            f"{'ok' if self.ok else 'GAPS'}: {s.stream.tenant_id}/{s.stream.store_id}: "
            f"{s.event_count} events, counter {s.counter}"
            + (f"; {'; '.join(problems)}" if problems else "")
        )


def stream_health(states: list[CounterState], gaps: list[SequenceGap]) -> list[StreamHealth]:
    grouped = group_gaps(gaps)
    bad = {s.stream for s in mismatched(states)}
    return [StreamHealth(s, grouped.get(s.stream, []), s.stream in bad) for s in states]


Applied = Callable[[CounterPlan, CounterState | None], None]
"""``on_step(plan, after)``: a plan was considered; ``after`` is the state it left (None
for a dry run or a refused plan)."""


async def repair_counters(
    store: Maintenance,
    plans: list[CounterPlan],
    *,
    apply_changes: bool,
    actor: str,
    on_step: Applied,
) -> int:
    """Apply (or only report) each plan in turn; returns how many were refused. A plan whose
    stream changed since it was read raises ``ConcurrentWriteError`` and stops the run."""
    refused = 0
    for item in plans:
        if item.refused is not None:
            refused += 1
            on_step(item, None)
            continue
        on_step(item, await apply(store, item, actor=actor) if apply_changes else None)
    return refused
