"""Building signed events for one agent key (PROTOCOL §4)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..ves import envelope as ves_envelope
from ..ves.envelope import DEFAULT_VES_VERSION, VesEventEnvelope
from ..ves.signing import Signer


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent's key on one stream: builds and signs its events.

    ``ves_version`` 2 (the default) also signs ``command_id`` and ``base_version``, so no
    relay can change them; an unknown version is refused when the first event is built.
    """

    signer: Signer
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    agent_id: uuid.UUID
    key_id: int = 1
    ves_version: int = DEFAULT_VES_VERSION

    def event(
        self,
        entity_type: str,
        entity_id: str,
        event_type: str,
        payload: Any,
        *,
        command_id: uuid.UUID | None = None,
        base_version: int | None = None,
        event_id: uuid.UUID | None = None,
        created_at: str | None = None,
        recipients: Sequence[tuple[int, bytes]] | None = None,
    ) -> VesEventEnvelope:
        """A signed event; ``created_at`` defaults to now, in milliseconds with ``Z`` (the
        text is signed as it stands)."""
        return ves_envelope.sign_event(
            signer=self.signer,
            tenant_id=self.tenant_id,
            store_id=self.store_id,
            source_agent_id=self.agent_id,
            agent_key_id=self.key_id,
            entity_type=entity_type,
            entity_id=entity_id,
            event_type=event_type,
            created_at=created_at or now_text(),
            payload=payload,
            event_id=event_id,
            command_id=command_id,
            base_version=base_version,
            recipients=recipients,
            ves_version=self.ves_version,
        )


def now_text() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
