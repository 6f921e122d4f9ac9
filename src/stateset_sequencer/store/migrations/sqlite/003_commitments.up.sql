-- VES batch commitments (rows only; the commitment engine fills them later).
CREATE TABLE ves_commitments (
    batch_id           TEXT    PRIMARY KEY,
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
    CONSTRAINT ves_commitments_range CHECK (sequence_end >= sequence_start),
    CONSTRAINT ves_commitments_count CHECK (leaf_count = sequence_end - sequence_start + 1),
    CONSTRAINT ves_commitments_stream_start UNIQUE (tenant_id, store_id, sequence_start)
);
CREATE INDEX ves_commitments_pending ON ves_commitments (committed_at) WHERE chain_tx_hash IS NULL;
