-- Projections: each entity's current document, folded from its stream's events by the
-- leader-elected projection worker, and how far each stream has been folded. Derived
-- data: `sequencer-cli projections rebuild` recomputes both from the log. A batch of
-- documents and its checkpoint are written in one transaction, so no document is ever
-- ahead of or behind the checkpoint beside it.
CREATE TABLE ves_projection_checkpoints (
    tenant_id               TEXT    NOT NULL,
    store_id                TEXT    NOT NULL,
    last_projected_sequence INTEGER NOT NULL DEFAULT 0 CHECK (last_projected_sequence >= 0),
    updated_at              TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE ves_projection_documents (
    tenant_id   TEXT    NOT NULL,
    store_id    TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    document    TEXT    NOT NULL CHECK (json_valid(document)),
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
);
CREATE INDEX ves_projection_documents_recent
    ON ves_projection_documents (tenant_id, store_id, updated_at DESC);
