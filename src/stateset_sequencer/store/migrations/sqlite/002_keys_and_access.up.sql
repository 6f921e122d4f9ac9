-- Agent signing keys, API keys (hashed), the audit log and small persistent settings.
CREATE TABLE agent_signing_keys (
    tenant_id     TEXT    NOT NULL,
    agent_id      TEXT    NOT NULL,
    key_id        INTEGER NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key    BLOB    NOT NULL CHECK (length(public_key) = 32),
    status        TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'expired')),
    valid_from    TEXT,
    valid_to      TEXT,
    revoked_at    TEXT,
    key_algorithm INTEGER NOT NULL DEFAULT 1,
    metadata      TEXT,
    created_at    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, key_id),
    CONSTRAINT agent_signing_keys_revoked CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    CONSTRAINT agent_signing_keys_window CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_from <= valid_to)
);

CREATE TABLE api_keys (
    key_hash   TEXT    PRIMARY KEY,
    tenant_id  TEXT    NOT NULL,
    store_ids  TEXT    NOT NULL DEFAULT '[]',  -- JSON array of UUID strings
    can_read   INTEGER NOT NULL DEFAULT 1,
    can_write  INTEGER NOT NULL DEFAULT 0,
    can_admin  INTEGER NOT NULL DEFAULT 0,
    agent_id   TEXT,
    active     INTEGER NOT NULL DEFAULT 1,
    rate_limit INTEGER CHECK (rate_limit IS NULL OR rate_limit > 0),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, updated_at DESC);

CREATE TABLE audit_log (
    id            TEXT    PRIMARY KEY,
    timestamp     TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    actor_type    TEXT    NOT NULL,
    tenant_id     TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    request_id    TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    details       TEXT    NOT NULL DEFAULT '{}',
    success       INTEGER NOT NULL,
    error_message TEXT
);
CREATE INDEX audit_log_time ON audit_log (timestamp DESC);

CREATE TABLE sequencer_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
