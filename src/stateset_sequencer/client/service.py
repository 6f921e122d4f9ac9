"""The schema registry, and the service's own state: health, readiness, metrics and the
OpenAPI document."""

from __future__ import annotations

import uuid
from typing import Any

from .core import ClientCore, segment
from .errors import UnexpectedResponse

SCHEMAS = "/api/v1/schemas"


class ServiceRoutes(ClientCore):
    # --- schema registry ------------------------------------------------------------------

    async def list_schemas(self, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
        reply = await self._reply("GET", SCHEMAS, params={"tenant_id": tenant_id})
        return reply.objects("schemas")

    async def register_schema(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema: dict[str, Any] | bool,
        *,
        description: str | None = None,
        compatibility: str | None = None,
    ) -> dict[str, Any]:
        """Register the next version of ``event_type``'s JSON Schema (``id``, ``version``).
        Not retried once it may have reached the server: a retry would add a version."""
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "eventType": event_type,
            "schemaJson": schema,
        }
        if description is not None:
            body["description"] = description
        if compatibility is not None:
            body["compatibility"] = compatibility
        return await self._object("POST", SCHEMAS, json=body, idempotent=False)

    async def validate_payload(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        payload: Any,
        *,
        schema_version: int | None = None,
    ) -> dict[str, Any]:
        """Check ``payload`` against the latest (or the given version of the) schema:
        ``valid``, ``schemaId``, ``schemaVersion``, ``errors``."""
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "eventType": event_type,
            "payload": payload,
        }
        if schema_version is not None:
            body["schemaVersion"] = schema_version
        path = f"{SCHEMAS}/validate"
        return await self._object("POST", path, json=body, idempotent=True)

    async def get_latest_schema(self, tenant_id: uuid.UUID, event_type: str) -> dict[str, Any]:
        path = f"{SCHEMAS}/event-type/{segment(event_type)}/latest"
        return await self._object("GET", path, params={"tenant_id": tenant_id})

    async def list_event_type_schemas(
        self, tenant_id: uuid.UUID, event_type: str, *, version: int | None = None
    ) -> list[dict[str, Any]]:
        """Every version of ``event_type``'s schema, or only ``version``."""
        params: dict[str, Any] = {"tenant_id": tenant_id}
        if version is not None:
            params["version"] = version
        path = f"{SCHEMAS}/event-type/{segment(event_type)}"
        return (await self._reply("GET", path, params=params)).objects("schemas")

    async def get_schema(self, schema_id: uuid.UUID) -> dict[str, Any]:
        return await self._object("GET", f"{SCHEMAS}/{schema_id}")

    async def set_schema_status(self, schema_id: uuid.UUID, status: str) -> dict[str, Any]:
        """``active``, ``deprecated`` or ``archived``."""
        path = f"{SCHEMAS}/{schema_id}/status"
        return await self._object("PUT", path, json={"status": status})

    async def delete_schema(self, schema_id: uuid.UUID) -> dict[str, Any]:
        return await self._object("DELETE", f"{SCHEMAS}/{schema_id}")

    # --- health ---------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Liveness (no credential needed)."""
        return await self._object("GET", "/health")

    async def ready(self) -> dict[str, Any]:
        """Readiness: the database answered (``database``, ``pool``). Not ready is a
        :class:`SequencerError` 503, after the retries."""
        return await self._object("GET", "/ready")

    async def health_detailed(self) -> dict[str, Any]:
        """Every component's health (operators only). An unhealthy service answers 503
        with the same report: it is returned, not raised, and not retried."""
        reply = await self._reply("GET", "/health/detailed", accept=frozenset({503}))
        return reply.data

    async def metrics(self) -> str:
        """The Prometheus exposition text (operators only)."""
        text = await self._call("GET", "/metrics")
        if not isinstance(text, str):
            raise UnexpectedResponse("GET /metrics", "expected the exposition text, got JSON")
        return text

    async def openapi(self) -> dict[str, Any]:
        """The service's OpenAPI document."""
        return await self._object("GET", "/openapi.json")
