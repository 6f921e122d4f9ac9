"""Verifying the audit log's hash chain, and checkpoints of it (docs/PROTOCOL.md).

A checkpoint is ``SEQ:HASH`` (decimal chain_seq, 64 lowercase hex digits of that entry's
hash), kept somewhere the database's operators cannot rewrite. The chain alone shows that
no entry was edited, inserted or removed in the middle without re-hashing everything
after it; a checkpoint also catches a log cut short or re-hashed wholesale.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..store.ports import AuditChain
from ..store.records import AuditEntry
from ..ves.audit import AUDIT_HASHED_FIELDS, GENESIS_HASH, HASH_BYTES, audit_entry_hash
from ..ves.errors import NonCanonical

_CHECKPOINT_RE = re.compile(r"([0-9]+):([0-9A-Fa-f]*)")
_BATCH = 1000


class AuditBreak(StrEnum):
    """What is wrong at the first broken entry."""

    MISSING = "missing"  # a chain_seq that should be there is not (a gap, or a cut tail)
    PREVIOUS_HASH = "previous_hash"  # does not name the entry before it
    ENTRY_HASH = "entry_hash"  # does not match the entry's fields: they were edited
    UNREADABLE = "unreadable"  # fields that cannot be encoded (or hash fields missing)
    CHECKPOINT = "checkpoint"  # the checkpointed entry no longer has the checkpoint's hash


class CheckpointError(ValueError):
    """A checkpoint argument that is not ``SEQ:HASH``."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain_seq: int
    entry_hash: bytes

    def __str__(self) -> str:
        return f"{self.chain_seq}:{self.entry_hash.hex()}"

    def as_json(self) -> dict[str, Any]:
        return {"chain_seq": self.chain_seq, "entry_hash": self.entry_hash.hex()}


def parse_checkpoint(text: str) -> Checkpoint:
    """``SEQ:HASH`` as :func:`checkpoint` prints it; refused with a message saying what is
    wrong (checked before any database is opened)."""
    match = _CHECKPOINT_RE.fullmatch(text.strip())
    if match is None:
        raise CheckpointError(
            "a checkpoint is SEQ:HASH, e.g. 42:<64 hex digits> (as `audit checkpoint` prints)"
        )
    seq_text, hash_text = match.groups()
    chain_seq = int(seq_text)
    if chain_seq < 1:
        raise CheckpointError("a checkpoint's sequence starts at 1")
    if len(hash_text) != 2 * HASH_BYTES:
        raise CheckpointError(
            f"a checkpoint's hash is {HASH_BYTES} bytes ({2 * HASH_BYTES} hex digits), "
            f"not {len(hash_text)} hex digits"
        )
    return Checkpoint(chain_seq, bytes.fromhex(hash_text))


@dataclass(frozen=True, slots=True)
class ChainFault:
    chain_seq: int
    reason: AuditBreak
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of a walk: how many entries verified, the head, and the first fault."""

    entries: int
    head: Checkpoint | None
    fault: ChainFault | None
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": None if self.head is None else self.head.as_json(),
            "checkpoint": None if self.checkpoint is None else self.checkpoint.as_json(),
            "broken": None
            if self.fault is None
            else {
                "chain_seq": self.fault.chain_seq,
                "reason": self.fault.reason.value,
                "message": self.fault.message,
            },
        }


def entry_hash_of(entry: AuditEntry) -> bytes:
    """The hash ``entry`` must carry, from its own fields and its ``previous_hash``."""
    if entry.chain_seq is None or entry.previous_hash is None:
        raise ValueError("the entry has no chain fields")
    return audit_entry_hash(
        entry.previous_hash, {name: getattr(entry, name) for name in AUDIT_HASHED_FIELDS}
    )


class ChainWalk:
    """Entries fed in chain_seq order; stops at the first fault. Pure: the stores read."""

    def __init__(self) -> None:
        self.entries = 0
        self.tail_seq = 0
        self.tail_hash = GENESIS_HASH
        self.fault: ChainFault | None = None

    def feed(self, entries: Iterable[AuditEntry]) -> bool:
        """Check the entries; False once a fault is found (later ones are not read)."""
        for entry in entries:
            if self.fault is not None:
                return False
            self.fault = self._check(entry)
            if self.fault is not None:
                return False
            self.entries += 1
            self.tail_seq = self.tail_seq + 1
            self.tail_hash = entry.entry_hash or GENESIS_HASH
        return self.fault is None

    def _check(self, entry: AuditEntry) -> ChainFault | None:
        expected = self.tail_seq + 1
        seq = entry.chain_seq
        if seq is None or seq != expected:
            return ChainFault(
                expected,
                AuditBreak.MISSING,
                f"entry {expected} is missing (the next entry is {seq})",
            )
        if entry.previous_hash is None or entry.entry_hash is None:
            return ChainFault(seq, AuditBreak.UNREADABLE, f"entry {seq} has no hash fields")
        if entry.previous_hash != self.tail_hash:
            before = "the zero hash" if expected == 1 else f"entry {expected - 1}'s hash"
            return ChainFault(
                seq,
                AuditBreak.PREVIOUS_HASH,
                f"entry {seq}'s previous_hash is not {before} (an entry was removed, "
                "inserted or re-hashed)",
            )
        try:
            recomputed = entry_hash_of(entry)
        except (ValueError, NonCanonical) as exc:
            return ChainFault(seq, AuditBreak.UNREADABLE, f"entry {seq} cannot be encoded: {exc}")
        if recomputed != entry.entry_hash:
            return ChainFault(
                seq,
                AuditBreak.ENTRY_HASH,
                f"entry {seq} ({entry.action}, id {entry.id}) does not match its hash: "
                "its fields were changed after it was written",
            )
        return None

    def head(self) -> Checkpoint | None:
        return None if self.tail_seq == 0 else Checkpoint(self.tail_seq, self.tail_hash)


async def verify_chain(chain: AuditChain, checkpoint: Checkpoint | None = None) -> ChainReport:
    """Walk the whole chain from entry 1; with ``checkpoint``, the log must also still
    hold that entry with that hash (later appends are fine; a shorter log is not)."""
    walk = ChainWalk()
    after = 0
    saw: bytes | None = None
    while True:
        batch = await chain.audit_chain(after, _BATCH)
        if checkpoint is not None:
            for entry in batch:
                if entry.chain_seq == checkpoint.chain_seq:
                    saw = entry.entry_hash
        if not walk.feed(batch) or len(batch) < _BATCH:
            break
        after = batch[-1].chain_seq or after
    fault = walk.fault
    if fault is None and checkpoint is not None:
        if walk.tail_seq < checkpoint.chain_seq:
            fault = ChainFault(
                walk.tail_seq + 1,
                AuditBreak.MISSING,
                f"the log ends at entry {walk.tail_seq}, before the checkpoint's entry "
                f"{checkpoint.chain_seq}: entries were removed",
            )
        elif saw != checkpoint.entry_hash:
            fault = ChainFault(
                checkpoint.chain_seq,
                AuditBreak.CHECKPOINT,
                f"entry {checkpoint.chain_seq} no longer has the checkpoint's hash: the log "
                "was rewritten from there (or earlier) and re-hashed",
            )
    return ChainReport(walk.entries, walk.head(), fault, checkpoint)
