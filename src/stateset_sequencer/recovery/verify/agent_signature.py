"""Agent signatures, and the validity of the agent's key when the event was sequenced."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from ...sequencer.keys import KeyVerdict, judge_key
from ...store.ports import KeyRegistry
from ...store.records import AgentKey, StoredEvent
from .check import Check, Chunk, Examined, Finding

KeyIdent = tuple[UUID, UUID, int]


class AgentSignatureCheck(Check):
    """The agent's Ed25519 signature verifies against its registered key, and the key was
    valid at the event's ``sequenced_at`` (``sequencer.keys.judge_key``; the instant ingest
    judged it at, so a key revoked later does not fail the events it signed before).
    Keys are fetched once per (tenant, agent, key id)."""

    name = "agent_signature"

    def __init__(self, registry: KeyRegistry) -> None:
        self._registry = registry
        # Each key with the time it was read: a revoked status proves the revocation
        # happened no later than that (``judge_key``'s ``seen_at``).
        self._keys: dict[KeyIdent, tuple[AgentKey | None, datetime]] = {}

    async def prepare(self, chunk: Chunk) -> None:
        for event, _ in chunk.records:
            ident = _ident(event)
            if ident not in self._keys:
                key = await self._registry.get_agent_key(*ident)
                self._keys[ident] = (key, datetime.now(UTC))

    def ask(self, chunk: Chunk) -> None:
        # Only where the key could sign at sequencing time: an event of a revoked key is
        # reported for the key, and its signature need not cost a verification.
        keys = chunk.work.agent_keys
        for i, (event, _) in enumerate(chunk.records):
            key, seen_at = self._keys[_ident(event)]
            if key is not None and judge_key(key, event.sequenced_at, seen_at=seen_at).ok:
                keys[i] = key.public_key

    def examine(self, chunk: Chunk) -> Examined:
        out = Examined()
        for (event, _), ok in zip(chunk.records, chunk.computed.agent_ok, strict=True):
            key, seen_at = self._keys[_ident(event)]
            verdict = judge_key(key, event.sequenced_at, seen_at=seen_at)
            problem = _explain(verdict, key, event.sequenced_at)
            if problem is not None:
                code = "agent_key_invalid"
            elif ok is False:
                code, problem = "invalid_signature", "agent signature does not verify"
            else:
                continue
            out.findings.append(
                Finding(chunk.run.stream, event.sequence_number, self.name, code, problem)
            )
        return out

    def status(self) -> str:
        return f"checked ({len(self._keys)} distinct agent keys)"


def _ident(event: StoredEvent) -> KeyIdent:
    env = event.envelope
    return env.tenant_id, env.source_agent_id, env.agent_key_id


def _explain(verdict: KeyVerdict, key: AgentKey | None, at: datetime) -> str | None:
    """Why the key could not have signed at sequencing time, with the dates that say so."""
    if verdict is KeyVerdict.VALID:
        return None
    if verdict is KeyVerdict.NOT_FOUND or key is None:
        return "agent key not registered"
    if verdict is KeyVerdict.REVOKED:
        if key.revoked_at is None:
            return "agent key is revoked, with no revocation time recorded"
        if key.revoked_at > at:  # dated by when it was seen revoked, not by revoked_at
            return "agent key was already seen revoked when the event was sequenced"
        return f"agent key was revoked at {key.revoked_at.isoformat()}, before sequencing"
    if verdict is KeyVerdict.EXPIRED and key.valid_to is not None:
        return f"agent key expired at {key.valid_to.isoformat()}, before sequencing"
    if verdict is KeyVerdict.NOT_YET_VALID and key.valid_from is not None:
        return f"agent key was not yet valid (valid from {key.valid_from.isoformat()})"
    return verdict.problem
