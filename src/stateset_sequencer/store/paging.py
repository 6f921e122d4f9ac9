"""Pages bounded by bytes as well as by count: the rule both adapters apply.

A page of a hundred 900 KB events is 90 MB in the process, several times over while it is
decoded and answered. So a read first walks the sizes of the rows it would return (two
integers a row, computed by the database) in chunks sized to what is left of the budget
(:meth:`PageCut.next_chunk`), and stops as soon as the next event would take the page
past it; only then does it fetch the rows themselves, at most about one budget's worth.
A page always holds at least one event, so a reader that follows the page's continuation
always makes progress.

An event's size is the UTF-8 length of its stored variable-length text (payload,
encrypted payload, signature bundle, entity type and id, event type) plus
:data:`EVENT_FIXED_BYTES` for its fixed-size fields (ids, hashes, signature, times as
they appear in JSON), so many small events count too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

EVENT_FIXED_BYTES = 512
# The size walk asks for this many rows first; then for as many as the average size so
# far says still fit, plus one (up to MAX_CHUNK), so that it sizes about one row more
# than the page holds, whatever the events weigh.
FIRST_CHUNK = 4
MAX_CHUNK = 512

_SIZED_COLUMNS = (
    ("e.payload", True),
    ("e.payload_encrypted", True),
    ("e.agent_signature_bundle", True),
    ("e.entity_type", False),
    ("e.entity_id", False),
    ("e.event_type", False),
)


def event_bytes_sql(byte_length: Callable[[str], str]) -> str:
    """The SQL expression of an event's size over ``ves_events e``; ``byte_length(column)``
    is the dialect's UTF-8 byte length of a column's text."""
    terms = [
        f"coalesce({byte_length(column)}, 0)" if nullable else byte_length(column)
        for column, nullable in _SIZED_COLUMNS
    ]
    return " + ".join([*terms, str(EVENT_FIXED_BYTES)])


@dataclass(slots=True)
class PageCut:
    """Where a page ends, fed ``(sequence_number, size)`` rows in sequence order."""

    max_bytes: int
    used: int = 0
    count: int = 0
    first: int | None = None
    last: int | None = None
    truncated: bool = False

    def take(self, rows: Iterable[tuple[int, int]]) -> bool:
        """Add rows while they fit; False once the page is full (the rest is left)."""
        for sequence, size in rows:
            if self.count and self.used + size > self.max_bytes:
                self.truncated = True
                return False
            self.used += size
            self.count += 1
            self.last = sequence
            if self.first is None:
                self.first = sequence
        return True

    def next_chunk(self, left: int | None = None) -> int:
        """How many rows' sizes to ask for next, at most ``left`` (None: no count limit);
        0 when the count is exhausted."""
        if self.count == 0:
            step = FIRST_CHUNK
        else:
            average = max(1, self.used // self.count)
            step = max(0, self.max_bytes - self.used) // average + 1
        step = min(step, MAX_CHUNK)
        return step if left is None else min(step, max(left - self.count, 0))
