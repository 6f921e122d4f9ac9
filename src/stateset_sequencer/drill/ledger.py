"""What the agents hold acknowledged against what the database holds: the drill's proof.

The agents' side is read from their outboxes (every ``acked`` event, with the receipt it
was acknowledged with); the database's side from an ``export-events --all-streams`` file
of the recovered database, so the proof goes through the same command an operator would
use. An acknowledged event is *missing* when the database lacks its id, *altered* when the
database holds other content under that id, and *receipt changed* when it holds the same
event under another receipt: a restore must never do that to an event it kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent.config import AgentHome
from ..agent.outbox import Outbox, State
from ..recovery.export import read_export


@dataclass(frozen=True, slots=True)
class Held:
    signing_hash: bytes
    sequence_number: int
    receipt: Mapping[str, Any] | None  # the receipt's wire form
    acked_at: str | None = None  # the outbox's fixed-width UTC text: text order is time order


def acknowledged(homes: Iterable[Path]) -> dict[uuid.UUID, Held]:
    """Every acknowledged event of these agent homes' outboxes."""
    held: dict[uuid.UUID, Held] = {}
    for home in homes:
        place = AgentHome(home)
        with Outbox(place.outbox_path(config=place.load())) as box:
            for event in box.iter_events([State.ACKED]):
                if event.receipt is None:
                    continue
                held[event.event_id] = Held(
                    event.signing_hash,
                    event.receipt.sequence_number,
                    event.receipt.to_wire(),
                    event.acked_at,
                )
    return held


def exported(path: Path) -> dict[uuid.UUID, Held]:
    """Every event of an ``export-events`` file."""
    return {
        event.envelope.event_id: Held(
            event.signing_hash,
            event.sequence_number,
            None if event.receipt is None else event.receipt.to_wire(),
        )
        for event in read_export(path)
    }


@dataclass(slots=True)
class Comparison:
    acknowledged: int
    stored: int
    missing: list[uuid.UUID] = field(default_factory=list)
    altered: list[uuid.UUID] = field(default_factory=list)
    receipt_changed: list[uuid.UUID] = field(default_factory=list)
    renumbered: int = 0

    @property
    def intact(self) -> bool:
        return not (self.missing or self.altered or self.receipt_changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "missing": len(self.missing),
            "altered": len(self.altered),
            "receipt_changed": len(self.receipt_changed),
            "renumbered": self.renumbered,
            "examples": {
                "missing": [str(e) for e in self.missing[:5]],
                "altered": [str(e) for e in self.altered[:5]],
                "receipt_changed": [str(e) for e in self.receipt_changed[:5]],
            },
        }


def compare(held: Mapping[uuid.UUID, Held], stored: Mapping[uuid.UUID, Held]) -> Comparison:
    """``held`` as the agents hold it now against ``stored``. After a re-sync, an event the
    database had lost is in the outbox with the receipt it was sequenced again with, so
    a receipt that differs is a change the database made, never the re-sync."""
    result = Comparison(acknowledged=len(held), stored=len(stored))
    for event_id, ours in held.items():
        theirs = stored.get(event_id)
        if theirs is None:
            result.missing.append(event_id)
        elif theirs.signing_hash != ours.signing_hash:
            result.altered.append(event_id)
        elif theirs.receipt != ours.receipt:
            result.receipt_changed.append(event_id)
    return result


def renumbered(before: Mapping[uuid.UUID, Held], after: Mapping[uuid.UUID, Held]) -> int:
    """Events the agents held under one sequence number before a re-sync and another after
    it: what the agents that keep the old receipts have to be told."""
    return sum(
        1
        for event_id, old in before.items()
        if (new := after.get(event_id)) is not None and new.sequence_number != old.sequence_number
    )
