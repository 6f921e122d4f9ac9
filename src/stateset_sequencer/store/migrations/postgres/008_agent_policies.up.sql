-- Agent event policies: what one agent of a tenant may write, enforced at ingest after
-- the signature check (docs/AGENT_POLICIES.md). No row, or a row with enabled = FALSE,
-- means no restriction. No partial index on enabled rows (the reference has one): every
-- read names the whole primary key, which finds the row.
CREATE TABLE agent_event_policies (
    tenant_id            UUID        NOT NULL,
    agent_id             UUID        NOT NULL,
    -- Rules are exact names, "*", or a prefix ending in "*"; an empty list matches nothing.
    allowed_event_types  TEXT[]      NOT NULL DEFAULT '{}',
    allowed_entity_types TEXT[]      NOT NULL DEFAULT '{}',
    require_base_version BOOLEAN     NOT NULL DEFAULT TRUE,
    max_payload_bytes    INTEGER     CHECK (max_payload_bytes IS NULL OR max_payload_bytes > 0),
    enabled              BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, agent_id),
    -- A NULL element would match nothing yet read as a rule; the service never writes one.
    CONSTRAINT agent_event_policies_event_types CHECK (
        cardinality(allowed_event_types) <= 128
        AND array_position(allowed_event_types, NULL) IS NULL
    ),
    CONSTRAINT agent_event_policies_entity_types CHECK (
        cardinality(allowed_entity_types) <= 128
        AND array_position(allowed_entity_types, NULL) IS NULL
    )
);
