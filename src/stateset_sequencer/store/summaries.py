"""Per-stream summaries and the table-name rule, the same for every backend.

An adapter feeds :class:`SummaryBuilder` its counter states and its commitment rows in
stream then ``sequence_start`` order; the digest and the assembly are computed here once,
so a manifest written from one backend compares exactly with a restore read by the other
code path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from ..ves.codec import u64
from .records import CounterState, StreamKey, StreamSummary

# Tables whose rows make a database "in use": restoring over them would destroy data.
OCCUPIED_TABLES = ("ves_events", "api_keys", "agent_signing_keys")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def checked_table(name: str) -> str:
    """``name`` if it is a plain lowercase identifier, else ``ValueError``: table names are
    spliced into SQL, where no bind parameter can stand for an identifier."""
    if _IDENTIFIER.fullmatch(name) is None:
        raise ValueError(f"not a plain table name: {name!r}")
    return name


class SummaryBuilder:
    """Collects commitment rows, then assembles :class:`StreamSummary` per stream."""

    def __init__(self) -> None:
        self._digests: dict[StreamKey, hashlib._Hash] = {}
        self._counts: dict[StreamKey, int] = {}
        self._last: dict[StreamKey, tuple[int, bytes]] = {}

    def add_commitment(self, stream: StreamKey, row: Any) -> None:
        """One row of ``rows.COMMITMENT_DIGEST_SQL`` (``stream``: its key as the adapter
        decodes it); call in ``sequence_start`` order within each stream."""
        start, end = int(row["sequence_start"]), int(row["sequence_end"])
        merkle_root, state_root = bytes(row["merkle_root"]), bytes(row["new_state_root"])
        digest = self._digests.get(stream)
        if digest is None:
            digest = self._digests[stream] = hashlib.sha256()
        digest.update(u64(start) + u64(end) + merkle_root + state_root)
        self._counts[stream] = self._counts.get(stream, 0) + 1
        self._last[stream] = (end, state_root)

    def build(self, states: Iterable[CounterState]) -> list[StreamSummary]:
        """Summaries of every stream with a counter, events or commitments, ordered by
        tenant then store (as text, the order both backends sort UUID text in)."""
        by_stream = {s.stream: s for s in states}
        out = []
        for key in sorted(
            set(by_stream) | set(self._digests), key=lambda k: (str(k.tenant_id), str(k.store_id))
        ):
            state = by_stream.get(key, CounterState(key, None, 0, 0))
            end_root = self._last.get(key)
            digest = self._digests.get(key)
            out.append(
                StreamSummary(
                    stream=key,
                    counter=state.counter,
                    max_sequence=state.max_sequence,
                    event_count=state.event_count,
                    commitment_count=self._counts.get(key, 0),
                    last_committed_sequence=None if end_root is None else end_root[0],
                    last_state_root=None if end_root is None else end_root[1],
                    commitments_sha256=(
                        digest if digest is not None else hashlib.sha256()
                    ).digest(),
                )
            )
        return out
