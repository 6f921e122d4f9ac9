-- Each agent's acknowledged position in a stream; same names and meaning as the
-- PostgreSQL schema (UUIDs as canonical text, updated_at as fixed-width UTC text, so
-- text order is time order).
CREATE TABLE ves_agent_cursors (
    tenant_id             TEXT    NOT NULL,
    store_id              TEXT    NOT NULL,
    agent_id              TEXT    NOT NULL,
    acknowledged_sequence INTEGER NOT NULL DEFAULT 0 CHECK (acknowledged_sequence >= 0),
    updated_at            TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, store_id, agent_id)
);
CREATE INDEX ves_agent_cursors_recent ON ves_agent_cursors (tenant_id, agent_id, updated_at DESC);
