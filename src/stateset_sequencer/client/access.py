"""Who may do what: agent signing keys, agent policies, API keys (admin and agent
self-service) and public agent registration."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .core import ClientCore, segment
from .shapes import Reply

AGENT_KEYS = "/api/v1/agents/keys"
ADMIN_KEYS = "/api/v1/admin/api-keys"


def _expiry(body: dict[str, Any], expires_at: str | None, ttl_seconds: int | None) -> None:
    if expires_at is not None:
        body["expiresAt"] = expires_at
    if ttl_seconds is not None:
        body["ttlSeconds"] = ttl_seconds


class AccessRoutes(ClientCore):
    # --- agent signing keys ---------------------------------------------------------------

    async def register_agent_key(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        key_id: int,
        public_key: bytes,
        *,
        valid_from: str | None = None,
        valid_to: str | None = None,
        key_algorithm: int | None = None,
    ) -> dict[str, Any]:
        """Register an Ed25519 signing key. Retried as idempotent: the very same key
        registered again is answered as a success ("already registered")."""
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "agentId": str(agent_id),
            "keyId": key_id,
            "publicKey": "0x" + public_key.hex(),
        }
        if valid_from is not None:
            body["validFrom"] = valid_from
        if valid_to is not None:
            body["validTo"] = valid_to
        if key_algorithm is not None:
            body["keyAlgorithm"] = key_algorithm
        return await self._object("POST", AGENT_KEYS, json=body, idempotent=True)

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"tenant_id": tenant_id}
        if agent_id is not None:
            params["agent_id"] = agent_id
        return (await self._reply("GET", AGENT_KEYS, params=params)).objects("keys")

    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> dict[str, Any]:
        return await self._object("DELETE", f"{AGENT_KEYS}/{tenant_id}/{agent_id}/{key_id}")

    # --- agent event policies (docs/AGENT_POLICIES.md) ------------------------------------

    async def get_policy(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> dict[str, Any]:
        params = {"tenant_id": tenant_id}
        return await self._object("GET", f"/api/v1/agents/{agent_id}/policy", params=params)

    async def put_policy(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        *,
        allowed_event_types: Sequence[str] = (),
        allowed_entity_types: Sequence[str] = (),
        require_base_version: bool = True,
        max_payload_bytes: int | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create or replace the agent's policy, every field. A rule is a name, or a
        prefix ending in ``*`` (``*`` alone: any); an empty list allows nothing."""
        body = {
            "tenantId": str(tenant_id),
            "allowedEventTypes": list(allowed_event_types),
            "allowedEntityTypes": list(allowed_entity_types),
            "requireBaseVersion": require_base_version,
            "maxPayloadBytes": max_payload_bytes,
            "enabled": enabled,
        }
        return await self._object("PUT", f"/api/v1/agents/{agent_id}/policy", json=body)

    # --- API keys (admin) -----------------------------------------------------------------

    async def mint_api_key(
        self,
        tenant_id: uuid.UUID,
        *,
        store_ids: Sequence[uuid.UUID] = (),
        write: bool = False,
        admin: bool = False,
        agent_id: uuid.UUID | None = None,
        rate_limit: int | None = None,
        expires_at: str | None = None,
        ttl_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Mint a key; the whole answer (``apiKey``, shown only here, ``keyHashPrefix``
        to revoke it by, ``key``). Never retried once it may have reached the server:
        a retry could mint a second key."""
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "storeIds": [str(s) for s in store_ids],
            "read": True,
            "write": write,
            "admin": admin,
        }
        if agent_id is not None:
            body["agentId"] = str(agent_id)
        if rate_limit is not None:
            body["rateLimit"] = rate_limit
        _expiry(body, expires_at, ttl_seconds)
        return await self._object("POST", ADMIN_KEYS, json=body, idempotent=False)

    async def create_api_key(
        self,
        tenant_id: uuid.UUID,
        *,
        store_ids: Sequence[uuid.UUID] = (),
        write: bool = False,
        admin: bool = False,
        agent_id: uuid.UUID | None = None,
        rate_limit: int | None = None,
        expires_at: str | None = None,
        ttl_seconds: int | None = None,
    ) -> str:
        """As :meth:`mint_api_key`, the key alone."""
        minted = await self.mint_api_key(
            tenant_id,
            store_ids=store_ids,
            write=write,
            admin=admin,
            agent_id=agent_id,
            rate_limit=rate_limit,
            expires_at=expires_at,
            ttl_seconds=ttl_seconds,
        )
        return Reply(f"POST {ADMIN_KEYS}", minted).text("apiKey")

    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """One tenant's keys (the caller's own when not named; every tenant's for the
        bootstrap admin)."""
        params = {} if tenant_id is None else {"tenant_id": tenant_id}
        return (await self._reply("GET", ADMIN_KEYS, params=params)).objects("keys")

    async def revoke_api_key(self, key_hash_prefix: str) -> dict[str, Any]:
        """Revoke a key, and the keys minted from it, by a prefix of its hash."""
        return await self._object("DELETE", f"{ADMIN_KEYS}/{segment(key_hash_prefix)}")

    # --- agents and their own keys --------------------------------------------------------

    async def get_agent(self, agent_id: uuid.UUID) -> dict[str, Any]:
        return await self._object("GET", f"/api/v1/agents/{agent_id}")

    async def create_agent_api_key(
        self,
        agent_id: uuid.UUID,
        *,
        store_ids: Sequence[uuid.UUID] | None = None,
        read_only: bool = False,
        admin: bool = False,
        rate_limit: int | None = None,
        expires_at: str | None = None,
        ttl_seconds: int | None = None,
    ) -> dict[str, Any]:
        """A key for the agent, never wider than the caller's (omitted ``store_ids`` and
        ``rate_limit``: the caller's). Not retried once it may have reached the server."""
        body: dict[str, Any] = {"readOnly": read_only, "admin": admin}
        if store_ids is not None:
            body["storeIds"] = [str(s) for s in store_ids]
        if rate_limit is not None:
            body["rateLimit"] = rate_limit
        _expiry(body, expires_at, ttl_seconds)
        path = f"/api/v1/agents/{agent_id}/api-keys"
        return await self._object("POST", path, json=body, idempotent=False)

    async def list_agent_api_keys(self, agent_id: uuid.UUID) -> list[dict[str, Any]]:
        reply = await self._reply("GET", f"/api/v1/agents/{agent_id}/api-keys")
        return reply.objects("keys")

    async def revoke_agent_api_key(self, agent_id: uuid.UUID, key_prefix: str) -> dict[str, Any]:
        path = f"/api/v1/agents/{agent_id}/api-keys/{segment(key_prefix)}"
        return await self._object("DELETE", path)

    async def register_agent(
        self,
        name: str,
        *,
        description: str | None = None,
        store_ids: Sequence[uuid.UUID] | None = None,
        read_only: bool = False,
        rate_limit: int | None = None,
    ) -> dict[str, Any]:
        """Public self-registration (no credential needed; off unless the server enables
        it): a new tenant, agent id and API key. Not retried once it may have reached the
        server: each registration makes a new tenant."""
        body: dict[str, Any] = {"name": name, "readOnly": read_only}
        if description is not None:
            body["description"] = description
        if store_ids is not None:
            body["storeIds"] = [str(s) for s in store_ids]
        if rate_limit is not None:
            body["rateLimit"] = rate_limit
        return await self._object("POST", "/api/v1/agents/register", json=body, idempotent=False)
