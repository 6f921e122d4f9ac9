"""Commitments, inclusion proofs and anchoring (docs/COMMITMENTS.md, docs/ANCHORING.md).
Hashes come back as hex without ``0x``; either form is accepted where one is sent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from .core import ClientCore

VES = "/api/v1/ves"
_ANCHORED = {False: "false", True: "true", None: "any"}


class CommitmentRoutes(ClientCore):
    # --- commitments ----------------------------------------------------------------------

    async def create_commitment(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, sequence_start: int, sequence_end: int
    ) -> dict[str, Any]:
        """Commit ``sequence_start..=sequence_end`` (starting where the stream's last
        commitment ends). Retried as idempotent: the same range again answers the stored
        commitment."""
        body = {
            "tenant_id": str(tenant_id),
            "store_id": str(store_id),
            "sequence_start": sequence_start,
            "sequence_end": sequence_end,
        }
        return await self._object("POST", f"{VES}/commitments", json=body, idempotent=True)

    async def list_commitments(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        *,
        anchored: bool | None = False,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """A stream's commitments in order: not yet anchored (the default, as the
        reference lists them), anchored (``True``) or all (``None``)."""
        params = {
            "tenant_id": tenant_id,
            "store_id": store_id,
            "anchored": _ANCHORED[anchored],
            "limit": limit,
        }
        reply = await self._reply("GET", f"{VES}/commitments", params=params)
        return reply.objects("commitments")

    async def get_commitment(self, batch_id: uuid.UUID) -> dict[str, Any]:
        return await self._object("GET", f"{VES}/commitments/{batch_id}")

    # --- inclusion proofs -----------------------------------------------------------------

    async def get_proof(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        sequence_number: int,
        *,
        batch_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The inclusion proof of one sequence number, in ``batch_id`` or else the
        commitment holding it."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "store_id": store_id}
        if batch_id is not None:
            params["batch_id"] = batch_id
        return await self._object("GET", f"{VES}/proofs/{sequence_number}", params=params)

    async def get_event_proof(self, event_id: uuid.UUID) -> dict[str, Any]:
        return await self._object("GET", f"{VES}/events/{event_id}/proof")

    async def verify_proof(self, proof: Mapping[str, Any]) -> dict[str, Any]:
        """Whether a proof (as :meth:`get_proof` answers it: ``leaf_hash``,
        ``merkle_root``, ``proof_path``, ``leaf_index``, optional ``directions``) leads
        from its leaf to its root: ``valid``."""
        return await self._object("POST", f"{VES}/proofs/verify", json=dict(proof), idempotent=True)

    # --- anchoring ------------------------------------------------------------------------

    async def anchor(self, batch_id: uuid.UUID) -> dict[str, Any]:
        """Send one commitment to the registry and wait for its receipt. Not retried once
        it may have reached the server: it sends a transaction."""
        body = {"batch_id": str(batch_id)}
        return await self._object("POST", f"{VES}/anchor", json=body, idempotent=False)

    async def commit_and_anchor(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        *,
        sequence_start: int | None = None,
        sequence_end: int | None = None,
        max_events: int | None = None,
    ) -> dict[str, Any]:
        """Commit a range (both bounds, or neither: the next ``max_events`` events after
        the last commitment) and anchor it. Not retried once it may have reached the
        server."""
        body: dict[str, Any] = {"tenant_id": str(tenant_id), "store_id": str(store_id)}
        if sequence_start is not None:
            body["sequence_start"] = sequence_start
        if sequence_end is not None:
            body["sequence_end"] = sequence_end
        if max_events is not None:
            body["max_events"] = max_events
        path = f"{VES}/commitments/anchor"
        return await self._object("POST", path, json=body, idempotent=False)

    async def verify_anchor(self, batch_id: uuid.UUID) -> dict[str, Any]:
        """The registry's record of the batch against the stored commitment, field by
        field: ``verified`` only when the chain holds it and every field matches."""
        return await self._object("GET", f"{VES}/anchor/{batch_id}/verify")

    async def verify_anchor_transaction(
        self, batch_id: uuid.UUID, chain_tx_hash: str
    ) -> dict[str, Any]:
        """One transaction's ``BatchCommitted`` log against the stored commitment:
        ``valid``, else its ``reason``."""
        body = {"batch_id": str(batch_id), "chain_tx_hash": chain_tx_hash}
        path = f"{VES}/commitments/verify"
        return await self._object("POST", path, json=body, idempotent=True)
