-- Agent event policies, with the names and meaning of the PostgreSQL table. The rule
-- lists are JSON arrays of strings (SQLite has no array type).
CREATE TABLE agent_event_policies (
    tenant_id            TEXT    NOT NULL,
    agent_id             TEXT    NOT NULL,
    allowed_event_types  TEXT    NOT NULL DEFAULT '[]' CHECK (
        json_valid(allowed_event_types)
        AND json_type(allowed_event_types) = 'array'
        AND json_array_length(allowed_event_types) <= 128
    ),
    allowed_entity_types TEXT    NOT NULL DEFAULT '[]' CHECK (
        json_valid(allowed_entity_types)
        AND json_type(allowed_entity_types) = 'array'
        AND json_array_length(allowed_entity_types) <= 128
    ),
    require_base_version INTEGER NOT NULL DEFAULT 1 CHECK (require_base_version IN (0, 1)),
    max_payload_bytes    INTEGER CHECK (max_payload_bytes IS NULL OR max_payload_bytes > 0),
    enabled              INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
