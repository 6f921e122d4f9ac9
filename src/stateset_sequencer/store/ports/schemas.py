"""The JSON Schema registry."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod

from ..records import (
    AuditEntry,
    SchemaRecord,
)


class SchemaStore(ABC):
    """The JSON Schema registry (``event_schemas``). Reads go to the primary: a schema
    registered or deprecated a moment ago must already govern the next ingest."""

    @abstractmethod
    async def put_schema(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema_json: str,
        *,
        compatibility: str = "backward",
        description: str | None = None,
        created_by: str | None = None,
        audit: AuditEntry | None = None,
    ) -> SchemaRecord:
        """Register an ``active`` schema under the next version of (tenant, event_type),
        1 for the first; concurrent registrations get distinct versions. The new id and
        both timestamps are set by the store. :class:`IntegrityError` if ``event_type`` is
        not 1–256 UTF-8 bytes, ``schema_json`` is not JSON text or ``compatibility`` is
        not one of SCHEMA_COMPATIBILITIES. ``audit`` (completed by ``rows.schema_audit``)
        is appended in the same transaction, as in the two methods below."""

    @abstractmethod
    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None: ...

    @abstractmethod
    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        """A tenant's schemas (of one event type when given), any status, ordered by
        event_type (UTF-8 byte order) then version."""

    @abstractmethod
    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None: ...

    @abstractmethod
    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        """The highest version whose status is ``active`` (deprecated and archived
        versions are skipped, even when newer)."""

    @abstractmethod
    async def set_schema_status(
        self, schema_id: uuid.UUID, status: str, audit: AuditEntry | None = None
    ) -> SchemaRecord | None:
        """Set the status and bump updated_at; returns the updated record, None when no
        such schema. :class:`IntegrityError` if ``status`` is not one of SCHEMA_STATUSES,
        whether or not the schema exists."""

    @abstractmethod
    async def delete_schema(self, schema_id: uuid.UUID, audit: AuditEntry | None = None) -> bool:
        """True when a schema was deleted, False when there was none."""
