"""Sequence continuity and the counter."""

from __future__ import annotations

from .check import Check, Chunk, Examined, Finding, StreamRun


class SequenceCheck(Check):
    """Numbers run from the range's start to its end without a gap, and (for a whole
    stream) the counter is not below the highest stored sequence. A counter above it shows
    as missing numbers at the tail, since the range runs to the stream's top."""

    name = "sequence"

    def __init__(self) -> None:
        self._expected = 1

    async def begin(self, run: StreamRun) -> list[Finding]:
        self._expected = run.start
        return []

    def absorb(self, chunk: Chunk, examined: Examined) -> list[Finding]:
        found = []
        for event, _ in chunk.records:
            seq = event.sequence_number
            if seq > self._expected:
                found.append(self._missing(chunk.run, self._expected, seq - 1, tail=False))
            self._expected = seq + 1
        return found

    def _missing(self, run: StreamRun, first: int, last: int, *, tail: bool) -> Finding:
        span = str(first) if first == last else f"{first}..{last}"
        text = f"sequence number{'s' if first != last else ''} {span} missing"
        if tail:
            text += (
                f": the counter is at {run.state.counter} but the highest stored event "
                f"is {run.state.max_sequence}"
            )
        return Finding(run.stream, first, self.name, "gap", text)

    async def end(self, run: StreamRun) -> list[Finding]:
        found = []
        if self._expected <= run.end:
            found.append(self._missing(run, self._expected, run.end, tail=True))
        state = run.state
        if run.whole and state.event_count > 0:
            if state.counter is None:
                found.append(
                    Finding(
                        run.stream, 1, self.name, "counter_missing", "events but no counter row"
                    )
                )
            elif state.counter < state.max_sequence:
                found.append(
                    Finding(
                        run.stream,
                        state.counter + 1,
                        self.name,
                        "counter_behind",
                        f"counter {state.counter} is below stored event {state.max_sequence}: "
                        "the next append would collide (repair-counters fixes it)",
                    )
                )
        return found
