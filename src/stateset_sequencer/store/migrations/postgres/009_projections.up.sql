-- Projections: each entity's current document, folded from its stream's events by the
-- leader-elected projection worker, and how far each stream has been folded. Derived
-- data: `sequencer-cli projections rebuild` recomputes both from the log. A batch of
-- documents and its checkpoint are written in one transaction, so no document is ever
-- ahead of or behind the checkpoint beside it.
CREATE TABLE ves_projection_checkpoints (
    tenant_id               UUID        NOT NULL,
    store_id                UUID        NOT NULL,
    last_projected_sequence BIGINT      NOT NULL DEFAULT 0 CHECK (last_projected_sequence >= 0),
    updated_at              TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE ves_projection_documents (
    tenant_id   UUID         NOT NULL,
    store_id    UUID         NOT NULL,
    entity_type VARCHAR(128) NOT NULL,
    entity_id   VARCHAR(512) NOT NULL,
    version     BIGINT       NOT NULL CHECK (version >= 0),
    -- JSON, not JSONB: a payload may hold U+0000 (storable as the escape, and accepted at
    -- ingest), which JSONB refuses; a document built from one must not stall its stream.
    -- JSON also keeps the text as written, so both backends answer the same bytes.
    document    JSON         NOT NULL,
    updated_at  TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
);
CREATE INDEX ves_projection_documents_recent
    ON ves_projection_documents (tenant_id, store_id, updated_at DESC);
