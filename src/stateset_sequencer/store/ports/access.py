"""API keys and the audit log: appends chained by the store, and the chain read back."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod

from ..records import (
    ApiKeyRecord,
    AuditEntry,
)


class AccessStore(ABC):
    """API keys (only their SHA-256 is stored) and the audit log."""

    @abstractmethod
    async def put_api_key(
        self, record: ApiKeyRecord, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        """Insert, or replace a row with the same hash (used for the bootstrap key);
        returns the record as stored (``created_at`` set when None). ``audit`` is
        appended in the same transaction."""

    @abstractmethod
    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    @abstractmethod
    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        """Every key (of one tenant when given), oldest first."""

    @abstractmethod
    async def deactivate_api_keys(
        self, key_hash_prefix: str, audit: AuditEntry | None = None
    ) -> int:
        """Deactivate active keys whose hash starts with the literal prefix; returns how
        many changed. An empty prefix is refused with ``ValueError``. ``audit`` is
        appended in the same transaction when a key changed."""

    @abstractmethod
    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append one entry on its own (``timestamp`` set by the store when None), chained
        after the tail; returns it as stored. A privileged change passes its entry to the
        mutation instead, so that both commit together."""

    @abstractmethod
    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """Newest first (a later insert first among equal timestamps)."""


class AuditChain(ABC):
    """The audit log read in chain order, for verification (``ves.audit``). Appends are
    chained by the store: ``append_audit`` and every mutation given an ``audit`` entry."""

    @abstractmethod
    async def audit_chain(self, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """Up to ``limit`` entries with ``chain_seq > after_seq``, in chain order."""

    @abstractmethod
    async def audit_head(self) -> AuditEntry | None:
        """The entry with the highest ``chain_seq``; None when the log is empty."""

    @abstractmethod
    async def audit_entry(self, chain_seq: int) -> AuditEntry | None:
        """The entry at ``chain_seq``, if any."""
