-- Tenant-first keys, as in the PostgreSQL schema: every tenant table's primary key, unique
-- constraints and foreign keys hold tenant_id, and ves_event_ids keeps event ids
-- unique across tenants. SQLite cannot change a primary key in place, so each table is
-- rebuilt: the old one renamed aside (its foreign keys follow it), the new one created and
-- filled, the old one dropped, child before parent so no cascade fires.
ALTER TABLE ves_sequencer_receipts RENAME TO ves_sequencer_receipts_004;
ALTER TABLE ves_events RENAME TO ves_events_004;
DROP INDEX ves_events_entity;
DROP INDEX ves_events_agent;
DROP INDEX ves_sequencer_receipts_stream;

CREATE TABLE ves_events (
    event_id               TEXT    NOT NULL,
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
    PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT ves_events_stream_sequence UNIQUE (store_id, tenant_id, sequence_number),
    CONSTRAINT ves_events_payload_kind CHECK (
        (payload_kind = 0 AND payload IS NOT NULL AND payload_encrypted IS NULL)
        OR (payload_kind = 1 AND payload IS NULL AND payload_encrypted IS NOT NULL)
    )
);
-- Only the primary key is led by tenant_id, as on PostgreSQL (see its 005 for why).
CREATE INDEX ves_events_entity ON ves_events (store_id, tenant_id, entity_type, entity_id, sequence_number);
CREATE INDEX ves_events_agent ON ves_events (source_agent_id, tenant_id, sequenced_at);

CREATE TABLE ves_sequencer_receipts (
    event_id              TEXT    NOT NULL,
    tenant_id             TEXT    NOT NULL,
    store_id              TEXT    NOT NULL,
    sequencer_id          TEXT    NOT NULL,
    sequence_number       INTEGER NOT NULL,
    sequenced_at          TEXT    NOT NULL,
    receipt_hash          BLOB    NOT NULL CHECK (length(receipt_hash) = 32),
    signature_alg         TEXT    NOT NULL,
    sequencer_signature   BLOB    CHECK (sequencer_signature IS NULL OR length(sequencer_signature) = 64),
    sequencer_key_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT ves_sequencer_receipts_event_fkey FOREIGN KEY (tenant_id, event_id)
        REFERENCES ves_events (tenant_id, event_id) ON DELETE CASCADE
);
CREATE INDEX ves_sequencer_receipts_stream ON ves_sequencer_receipts (tenant_id, store_id, sequence_number);

INSERT INTO ves_events (event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id, entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at, payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash, event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle, sequence_number, base_version)
SELECT event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id, entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at, payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash, event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle, sequence_number, base_version FROM ves_events_004;

INSERT INTO ves_sequencer_receipts (event_id, tenant_id, store_id, sequencer_id, sequence_number, sequenced_at, receipt_hash, signature_alg, sequencer_signature, sequencer_key_version)
SELECT event_id, tenant_id, store_id, sequencer_id, sequence_number, sequenced_at, receipt_hash, signature_alg, sequencer_signature, sequencer_key_version FROM ves_sequencer_receipts_004;

DROP TABLE ves_sequencer_receipts_004;
DROP TABLE ves_events_004;

CREATE TABLE ves_event_ids (
    event_id  TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    store_id  TEXT NOT NULL
);
INSERT INTO ves_event_ids (event_id, tenant_id, store_id)
SELECT event_id, tenant_id, store_id FROM ves_events;

ALTER TABLE ves_commitments RENAME TO ves_commitments_004;
DROP INDEX ves_commitments_pending;
CREATE TABLE ves_commitments (
    batch_id           TEXT    NOT NULL,
    tenant_id          TEXT    NOT NULL,
    store_id           TEXT    NOT NULL,
    ves_version        INTEGER NOT NULL DEFAULT 1,
    tree_depth         INTEGER NOT NULL,
    leaf_count         INTEGER NOT NULL,
    padded_leaf_count  INTEGER NOT NULL,
    merkle_root        BLOB    NOT NULL CHECK (length(merkle_root) = 32),
    prev_state_root    BLOB    NOT NULL CHECK (length(prev_state_root) = 32),
    new_state_root     BLOB    NOT NULL CHECK (length(new_state_root) = 32),
    sequence_start     INTEGER NOT NULL,
    sequence_end       INTEGER NOT NULL,
    committed_at       TEXT    NOT NULL,
    chain_id           INTEGER,
    chain_tx_hash      BLOB    CHECK (chain_tx_hash IS NULL OR length(chain_tx_hash) = 32),
    chain_block_number INTEGER,
    anchored_at        TEXT,
    PRIMARY KEY (tenant_id, batch_id),
    CONSTRAINT ves_commitments_range CHECK (sequence_end >= sequence_start),
    CONSTRAINT ves_commitments_count CHECK (leaf_count = sequence_end - sequence_start + 1),
    CONSTRAINT ves_commitments_stream_start UNIQUE (tenant_id, store_id, sequence_start)
);
CREATE INDEX ves_commitments_pending ON ves_commitments (committed_at) WHERE chain_tx_hash IS NULL;
CREATE INDEX ves_commitments_batch ON ves_commitments (batch_id);
INSERT INTO ves_commitments (batch_id, tenant_id, store_id, ves_version, tree_depth, leaf_count, padded_leaf_count, merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end, committed_at, chain_id, chain_tx_hash, chain_block_number, anchored_at)
SELECT batch_id, tenant_id, store_id, ves_version, tree_depth, leaf_count, padded_leaf_count, merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end, committed_at, chain_id, chain_tx_hash, chain_block_number, anchored_at FROM ves_commitments_004;
DROP TABLE ves_commitments_004;

ALTER TABLE event_schemas RENAME TO event_schemas_004;
CREATE TABLE event_schemas (
    id            TEXT    NOT NULL,
    tenant_id     TEXT    NOT NULL,
    event_type    TEXT    NOT NULL CHECK (length(CAST(event_type AS BLOB)) BETWEEN 1 AND 256),
    version       INTEGER NOT NULL CHECK (version >= 1),
    schema_json   TEXT    NOT NULL CHECK (json_valid(schema_json)),
    status        TEXT    NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'deprecated', 'archived')),
    compatibility TEXT    NOT NULL DEFAULT 'backward'
                  CHECK (compatibility IN ('forward', 'backward', 'full', 'none')),
    description   TEXT,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    created_by    TEXT,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT event_schemas_version_key UNIQUE (tenant_id, event_type, version)
);
CREATE INDEX event_schemas_id ON event_schemas (id);
INSERT INTO event_schemas (id, tenant_id, event_type, version, schema_json, status, compatibility, description, created_at, updated_at, created_by)
SELECT id, tenant_id, event_type, version, schema_json, status, compatibility, description, created_at, updated_at, created_by FROM event_schemas_004;
DROP TABLE event_schemas_004;
