-- Each agent's acknowledged position in a stream: the highest sequence it says it has
-- processed. Only ever raised (GREATEST in the upsert), never above the stream's counter
-- (checked in the same transaction that writes it). The REST route and, later, gRPC
-- acknowledgements share this one row per (tenant, store, agent).
CREATE TABLE ves_agent_cursors (
    tenant_id             UUID        NOT NULL,
    store_id              UUID        NOT NULL,
    agent_id              UUID        NOT NULL,
    acknowledged_sequence BIGINT      NOT NULL DEFAULT 0 CHECK (acknowledged_sequence >= 0),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id, agent_id)
);
-- "Which agents of this tenant acknowledged lately": tenant first, so the index lives on
-- the tenant's shard like the table.
CREATE INDEX ves_agent_cursors_recent ON ves_agent_cursors (tenant_id, agent_id, updated_at DESC);
