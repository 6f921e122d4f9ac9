-- The VES event log, its receipts, the per-stream counters, command de-duplication and
-- entity versions. Names follow the Rust reference; the counters table is named
-- sequence_counters so the disaster-recovery guide's SQL runs verbatim.
CREATE TABLE sequence_counters (
    tenant_id        UUID        NOT NULL,
    store_id         UUID        NOT NULL,
    current_sequence BIGINT      NOT NULL DEFAULT 0 CHECK (current_sequence >= 0),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE ves_events (
    event_id               UUID        PRIMARY KEY,
    command_id             UUID,
    ves_version            INTEGER     NOT NULL CHECK (ves_version >= 1),
    tenant_id              UUID        NOT NULL,
    store_id               UUID        NOT NULL,
    source_agent_id        UUID        NOT NULL,
    agent_key_id           BIGINT      NOT NULL CHECK (agent_key_id BETWEEN 0 AND 4294967295),
    entity_type            VARCHAR(128) NOT NULL,
    entity_id              VARCHAR(512) NOT NULL,
    event_type             VARCHAR(256) NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    created_at_str         TEXT        NOT NULL,
    sequenced_at           TIMESTAMPTZ NOT NULL,
    payload_kind           INTEGER     NOT NULL CHECK (payload_kind IN (0, 1)),
    -- json, not jsonb: the text is kept as sent (big integers, \u0000 and key order intact)
    payload                JSON,
    payload_encrypted      JSON,
    payload_plain_hash     BYTEA       NOT NULL CHECK (length(payload_plain_hash) = 32),
    payload_cipher_hash    BYTEA       NOT NULL CHECK (length(payload_cipher_hash) = 32),
    event_signing_hash     BYTEA       NOT NULL CHECK (length(event_signing_hash) = 32),
    agent_signature        BYTEA       NOT NULL CHECK (length(agent_signature) = 64),
    agent_signature_scheme INTEGER,
    agent_signature_bundle JSON,
    sequence_number        BIGINT      NOT NULL CHECK (sequence_number >= 1),
    base_version           NUMERIC(20, 0),
    CONSTRAINT ves_events_stream_sequence UNIQUE (tenant_id, store_id, sequence_number),
    CONSTRAINT ves_events_payload_kind CHECK (
        (payload_kind = 0 AND payload IS NOT NULL AND payload_encrypted IS NULL)
        OR (payload_kind = 1 AND payload IS NULL AND payload_encrypted IS NOT NULL)
    )
);
CREATE INDEX ves_events_entity ON ves_events (tenant_id, store_id, entity_type, entity_id, sequence_number);
CREATE INDEX ves_events_agent ON ves_events (tenant_id, source_agent_id, sequenced_at);

CREATE TABLE ves_sequencer_receipts (
    event_id              UUID        PRIMARY KEY REFERENCES ves_events (event_id) ON DELETE CASCADE,
    tenant_id             UUID        NOT NULL,
    store_id              UUID        NOT NULL,
    sequencer_id          UUID        NOT NULL,
    sequence_number       BIGINT      NOT NULL,
    sequenced_at          TIMESTAMPTZ NOT NULL,
    receipt_hash          BYTEA       NOT NULL CHECK (length(receipt_hash) = 32),
    signature_alg         VARCHAR(32) NOT NULL,
    sequencer_signature   BYTEA       CHECK (sequencer_signature IS NULL OR length(sequencer_signature) = 64),
    sequencer_key_version INTEGER     NOT NULL DEFAULT 0
);
CREATE INDEX ves_sequencer_receipts_stream ON ves_sequencer_receipts (tenant_id, store_id, sequence_number);

CREATE TABLE ves_command_dedupe (
    tenant_id  UUID        NOT NULL,
    store_id   UUID        NOT NULL,
    command_id UUID        NOT NULL,
    event_id   UUID        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id, command_id)
);

CREATE TABLE entity_versions (
    tenant_id   UUID         NOT NULL,
    store_id    UUID         NOT NULL,
    entity_type VARCHAR(128) NOT NULL,
    entity_id   VARCHAR(512) NOT NULL,
    version     BIGINT       NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
);
