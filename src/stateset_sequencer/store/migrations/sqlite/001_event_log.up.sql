-- The VES event log, its receipts, the per-stream counters, command de-duplication and
-- entity versions; same names and meaning as the PostgreSQL schema. UUIDs are canonical
-- lowercase text, times RFC 3339 UTC text with microseconds, hashes BLOBs.
CREATE TABLE sequence_counters (
    tenant_id        TEXT    NOT NULL,
    store_id         TEXT    NOT NULL,
    current_sequence INTEGER NOT NULL DEFAULT 0 CHECK (current_sequence >= 0),
    updated_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE ves_events (
    event_id               TEXT    PRIMARY KEY,
    command_id             TEXT,
    ves_version            INTEGER NOT NULL CHECK (ves_version >= 1),
    tenant_id              TEXT    NOT NULL,
    store_id               TEXT    NOT NULL,
    source_agent_id        TEXT    NOT NULL,
    agent_key_id           INTEGER NOT NULL CHECK (agent_key_id BETWEEN 0 AND 4294967295),
    entity_type            TEXT    NOT NULL,
    entity_id              TEXT    NOT NULL,
    event_type             TEXT    NOT NULL,
    created_at             TEXT    NOT NULL,
    created_at_str         TEXT    NOT NULL,
    sequenced_at           TEXT    NOT NULL,
    payload_kind           INTEGER NOT NULL CHECK (payload_kind IN (0, 1)),
    payload                TEXT,
    payload_encrypted      TEXT,
    payload_plain_hash     BLOB    NOT NULL CHECK (length(payload_plain_hash) = 32),
    payload_cipher_hash    BLOB    NOT NULL CHECK (length(payload_cipher_hash) = 32),
    event_signing_hash     BLOB    NOT NULL CHECK (length(event_signing_hash) = 32),
    agent_signature        BLOB    NOT NULL CHECK (length(agent_signature) = 64),
    agent_signature_scheme INTEGER,
    agent_signature_bundle TEXT,
    sequence_number        INTEGER NOT NULL CHECK (sequence_number >= 1),
    base_version           TEXT,
    CONSTRAINT ves_events_stream_sequence UNIQUE (tenant_id, store_id, sequence_number),
    CONSTRAINT ves_events_payload_kind CHECK (
        (payload_kind = 0 AND payload IS NOT NULL AND payload_encrypted IS NULL)
        OR (payload_kind = 1 AND payload IS NULL AND payload_encrypted IS NOT NULL)
    )
);
CREATE INDEX ves_events_entity ON ves_events (tenant_id, store_id, entity_type, entity_id, sequence_number);
CREATE INDEX ves_events_agent ON ves_events (tenant_id, source_agent_id, sequenced_at);

CREATE TABLE ves_sequencer_receipts (
    event_id              TEXT    PRIMARY KEY REFERENCES ves_events (event_id) ON DELETE CASCADE,
    tenant_id             TEXT    NOT NULL,
    store_id              TEXT    NOT NULL,
    sequencer_id          TEXT    NOT NULL,
    sequence_number       INTEGER NOT NULL,
    sequenced_at          TEXT    NOT NULL,
    receipt_hash          BLOB    NOT NULL CHECK (length(receipt_hash) = 32),
    signature_alg         TEXT    NOT NULL,
    sequencer_signature   BLOB    CHECK (sequencer_signature IS NULL OR length(sequencer_signature) = 64),
    sequencer_key_version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ves_sequencer_receipts_stream ON ves_sequencer_receipts (tenant_id, store_id, sequence_number);

CREATE TABLE ves_command_dedupe (
    tenant_id  TEXT NOT NULL,
    store_id   TEXT NOT NULL,
    command_id TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, store_id, command_id)
);

CREATE TABLE entity_versions (
    tenant_id   TEXT    NOT NULL,
    store_id    TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
);
